"""The shared counter in Redis: batched, idempotent writes driven by a background task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from counting_addon.ledger import Batch, Ledger

logger = logging.getLogger(__name__)

# Applies a batch only if its sequence number is new for this writer, so resending a batch
# whose reply was lost cannot count it twice. The writer's key expires: dead processes
# leave nothing behind. Returns the counter's value, which saves /status a round trip.
APPLY_BATCH = """
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('GET', KEYS[2]) or '0') then
  return tonumber(redis.call('GET', KEYS[1]))
end
local value = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return value
"""
WRITER_KEY_TTL = 7 * 24 * 3600
# Files a rediss:// URL may name; a missing one would only show as a failed connection.
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
CONNECT_TIMEOUT = 1.0
# Long enough to ride out a Redis that stalls writes for a second, short enough to notice a hang.
COMMAND_TIMEOUT = 2.5
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 5.0
# Under load, counts gather this long between writes, so that Redis sees about ten writes a
# second whatever the request rate. An idle proxy writes at once; /status never waits for it.
WRITE_INTERVAL = 0.1


class CounterUnavailable(Exception):
    """The counter can't be read right now; the message says why."""


def _split_password(url: str) -> tuple[str, str, str] | None:
    """(what precedes the password, the password as typed, what follows it), if there is one.

    Read off the raw text: a password may hold '/', '?' or '#' unencoded, which ends the host
    part for urlsplit and would leave the password in plain sight.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return None
    return f"{scheme}{sep}{user}:", password, f"@{host}"


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = _split_password(url)
    return url if parts is None else f"{parts[0]}***{parts[2]}"


def scrub(text: str, url: str) -> str:
    """`text` (an error about `url`) with the URL's password, as typed or decoded, replaced."""
    parts = _split_password(url)
    if parts is not None:
        for form in sorted({parts[1], unquote(parts[1])}, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


def client_options(retry: type[redis.retry.Retry | redis.asyncio.retry.Retry]) -> dict[str, Any]:
    # No client-side retries: redis-py would re-send a command whose reply was lost.
    return {
        "retry": retry(NoBackoff(), 0),
        "retry_on_error": [],
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
    }


def check_url(url: str) -> None:
    """Raise ValueError, naming no password, if redis-py can't use `url`."""
    secret = _split_password(url)
    if secret is not None and any(c in secret[1] for c in "/?#"):
        # Or the URL parser ends the host there and quotes bits of the password in its errors.
        raise ValueError(
            f"{redact(url)} is not a Redis URL: percent-encode '/', '?' and '#' in the password "
            "(%2F, %3F, %23)"
        )
    try:
        options = redis.connection.parse_url(url)
        parts = urlsplit(url)
        # redis-py silently ignores a database that is not a number.
        if parts.scheme != "unix" and not parts.path.strip("/").isdigit() and parts.path.strip("/"):
            raise ValueError(f"database {parts.path.strip('/')!r} is not a number")
        # A misspelt query argument only fails when a connection is made: make one, unconnected.
        for client in (redis.Redis, redis.asyncio.Redis):
            client.from_url(url).connection_pool.make_connection()
        for name in TLS_FILES:
            if options.get(name) and not os.path.exists(options[name]):
                raise ValueError(f"{name}: no such file {options[name]!r}")
    except (ValueError, TypeError, redis.RedisError) as e:
        raise ValueError(f"{redact(url)} is not a Redis URL: {scrub(str(e), url)}") from None


def _problem(e: BaseException, key: str, tls: bool) -> str:
    """What went wrong, in one line that names no secret."""
    if getattr(e, "status_code", None) == "NOAUTH":
        # redis-py's words are about the HELLO it sent, not about what is wrong.
        return "Redis refused us: NOAUTH, it requires a password and the URL has none"
    if isinstance(e, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return f"Redis refused us: {e}"
    if isinstance(e, redis.ConnectionError | redis.TimeoutError | OSError):
        # A TLS mismatch shows only as a timeout or a reset: say what may be behind it.
        hint = ""
        if tls and isinstance(e, redis.TimeoutError | TimeoutError):
            hint = " (the URL is rediss://: does this server speak TLS?)"
        elif not tls and "reset by peer" in str(e):
            hint = " (a server expecting TLS does this to plain connections: rediss://?)"
        return f"Redis unreachable: {e or type(e).__name__}{hint}"
    if "not an integer" in str(e):
        return f"Redis error: the value under key {key!r} is not an integer"
    return f"Redis error: {e}"


class RedisCounter:
    """Counts in memory and writes them to one Redis key in the background.

    `add` never waits. One task writes what accumulated, one batch at a time and at most one
    per WRITE_INTERVAL, and retries the same batch with backoff until Redis acknowledges it.
    """

    # The Lua script that applies a batch (a class attribute so that a test can show what
    # happens without the sequence check).
    apply_batch = APPLY_BATCH

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.ledger = Ledger()
        self._writer_key = f"{key}:writer:{uuid.uuid4().hex}"
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url, **client_options(redis.asyncio.retry.Retry)
        )
        self._apply = self._client.register_script(self.apply_batch)
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._progress = asyncio.Event()
        self._writing = asyncio.Lock()
        self._last_write = -WRITE_INTERVAL
        self._written_value: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.problem: str | None = None
        self._closed = False

    def add(self) -> None:
        self.ledger.add()
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._write_forever())
        self._wake.set()

    async def read(self) -> int:
        """The shared count once this process's counts are written; CounterUnavailable if not.

        Waits as long as Redis is away: callers bound it with a timeout.
        """
        mark = self.ledger.counted
        if not self.ledger.written_through(mark):
            while not self.ledger.written_through(mark):
                if self.problem is None and not self._writing.locked():
                    # Writing here rather than waking the writer saves /status two trips
                    # through a busy event loop. Should it fail, the writer takes over.
                    with contextlib.suppress(Exception):
                        await self._write_batch()
                else:
                    self._hurry.set()
                    await self._progress.wait()
            # The write that took our counts brought back the value: no GET needed.
            if self._written_value is not None:
                return self._written_value
        try:
            raw = await self._client.get(self.key)
        except Exception as e:  # whatever it is, /status answers 503 rather than fail
            raise CounterUnavailable(self._problem(e)) from None
        try:
            return int(raw or 0)
        except ValueError:
            raise CounterUnavailable(
                f"the value under key {self.key!r} is not an integer"
            ) from None

    def _args(self, batch: Batch) -> tuple[list[str], list[int]]:
        return [self.key, self._writer_key], [batch.seq, batch.amount, WRITER_KEY_TTL]

    async def _write_forever(self) -> None:
        failures = 0
        while True:
            if self.ledger.in_flight is None and not self.ledger.pending:
                self._wake.clear()
                await self._wake.wait()
            await self._gather_counts()
            try:
                await self._write_batch()
            except Exception:  # whatever it is, the counts must not stop being written
                failures += 1
                # Jitter: processes sharing one Redis don't reconnect in lockstep.
                cap = min(BACKOFF_CAP, BACKOFF_FIRST * 2**failures)
                await asyncio.sleep(random.uniform(cap / 2, cap))
                continue
            failures = 0

    async def _write_batch(self) -> None:
        """Write the batch due, if any; one writer at a time, the background task or a reader."""
        async with self._writing:
            batch = self.ledger.next_batch()
            if batch is None:  # a reader wrote it while the writer waited
                return
            self._last_write = time.monotonic()
            keys, args = self._args(batch)
            try:
                value = await self._apply(keys, args)
            except Exception as e:
                self._failed(e)
                raise
            self.ledger.ack(batch)
            self._written_value = value
            self._recovered()
            self._progress.set()
            self._progress = asyncio.Event()

    async def _gather_counts(self) -> None:
        """Wait out the rest of WRITE_INTERVAL since the last write, unless a reader hurries."""
        delay = self._last_write + WRITE_INTERVAL - time.monotonic()
        if delay > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._hurry.wait()
        self._hurry.clear()

    def _problem(self, e: BaseException) -> str:
        return _problem(e, self.key, tls=self.url.startswith("rediss://"))

    def _failed(self, e: BaseException) -> None:
        problem = self._problem(e)
        if self.problem is None or problem.split(":")[0] != self.problem.split(":")[0]:
            logger.warning(
                f"{problem} ({redact(self.url)}); proxying goes on, "
                f"counts wait in memory ({self.ledger.unwritten} so far)"
            )
        self.problem = problem

    def _recovered(self) -> None:
        if self.problem is not None:
            logger.info(f"Redis is back to accepting counts ({redact(self.url)})")
            self.problem = None

    def close(self, timeout: float) -> int:
        """Stop writing in the background, write what is left within `timeout` seconds.

        Synchronous, as mitmproxy calls `done` synchronously on script reload. Returns the
        number of counts that could not be written.
        """
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        deadline = time.monotonic() + timeout
        if self.ledger.unwritten:
            self._flush_blocking(deadline)
        try:
            asyncio.get_running_loop().create_task(self._client.aclose())
        except RuntimeError:  # no loop: nothing was ever connected from one
            pass
        return self.ledger.unwritten

    def _flush_blocking(self, deadline: float) -> None:
        # The cancelled task may have sent its batch already: resending it is safe, the script
        # applies each sequence number once.
        with redis.Redis.from_url(self.url, **client_options(redis.retry.Retry)) as client:
            apply = client.register_script(self.apply_batch)
            while (batch := self.ledger.next_batch()) is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                client.connection_pool.connection_kwargs["socket_timeout"] = left
                client.connection_pool.connection_kwargs["socket_connect_timeout"] = min(
                    left, CONNECT_TIMEOUT
                )
                keys, args = self._args(batch)
                try:
                    apply(keys, args)
                except Exception as e:  # shutdown must get to reporting what is lost
                    self._failed(e)
                    client.connection_pool.disconnect()
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                    continue
                self.ledger.ack(batch)
