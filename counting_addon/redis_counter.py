"""The shared counter in Redis: batched, idempotent writes driven by a background task."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
import uuid

from counting_addon.eviction import eviction_warning
from counting_addon.failures import Failure, classify, not_an_integer
from counting_addon.keys import responses_key, writer_key
from counting_addon.ledger import Batch, Ledger
from counting_addon.process_stats import STATS
from counting_addon.redis_client import CONNECT_TIMEOUT, RedisClient
from counting_addon.redis_url import parse, redact
from counting_addon.response_classes import CodeClass, Shared

logger = logging.getLogger(__name__)

# Applies a batch only if its sequence number is new for this writer, so resending a batch
# whose reply was lost cannot count it twice. KEYS: the counter, the writer's key, the hash of
# responses by class. ARGV: the sequence number, requests, the writer key's lifetime, the five
# classes' amounts (1xx first), and 1 for a reset (the counter set to 0, the hash emptied).
# Whatever can fail is tried before the first write: a script failing halfway keeps what it
# wrote, which the batch's resend would then write again. The writer's key expires: dead
# processes leave nothing behind. Returns the counter's value and the five classes' (nil for
# none), which saves readers a round trip: as strings, since a Lua number is a double and
# INCRBY's reply would lose digits past 2^53. A batch already applied only refreshes the
# writer's key: WAIT counts the replicas that have a connection's latest write.
APPLY_BATCH = """
local classes = {'1xx', '2xx', '3xx', '4xx', '5xx'}
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  if ARGV[9] == '1' then
    redis.call('SET', KEYS[1], '0')
    redis.call('DEL', KEYS[3])
  end
  local held = redis.call('HMGET', KEYS[3], unpack(classes))
  for i = 1, 5 do
    if ARGV[3 + i] ~= '0' and held[i] and not string.match(held[i], '^%-?%d+$') then
      return redis.error_reply('ERR hash value is not an integer (' .. classes[i] .. ')')
    end
  end
  if ARGV[2] ~= '0' then
    redis.call('INCRBY', KEYS[1], ARGV[2])
  end
  for i = 1, 5 do
    if ARGV[3 + i] ~= '0' then
      redis.call('HINCRBY', KEYS[3], classes[i], ARGV[3 + i])
    end
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
else
  -- A resent batch writes too, so that a WAIT after it covers its first application.
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local values = redis.call('HMGET', KEYS[3], unpack(classes))
table.insert(values, 1, redis.call('GET', KEYS[1]))
return values
"""
WRITER_KEY_TTL = 7 * 24 * 3600
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 5.0
# While shutting down, a failed write is retried this soon, until the shutdown's bound passes.
SHUTDOWN_RETRY = 0.1
# Under load, counts gather this long between writes, so that Redis sees about ten writes a
# second whatever the request rate. An idle proxy writes at once; /status never waits for it.
WRITE_INTERVAL = 0.1


def _integer(raw: bytes | str | None) -> int | None:
    """A value Redis holds as an integer; 0 for none; None for one that is not an integer."""
    try:
        return int(raw or 0)
    except ValueError:
        return None


def parse_shared(values: list[bytes | None]) -> Shared | None:
    """The script's reply, or GET + HMGET's: the counter, then the five classes (1xx first);
    None if one of them is not an integer."""
    numbers = [n for n in map(_integer, values) if n is not None]
    if len(numbers) != len(values):
        return None
    requests, *responses = numbers
    return Shared(requests, dict(zip(CodeClass, responses, strict=True)))


class CounterUnavailable(Exception):
    """The counter can't be read right now; `failure` says why."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


# Every counter whose writer task runs, retired ones included: shutdown writes what each has
# left. Module-level, as a script reload makes new addons but not a new module.
_running: set[RedisCounter] = set()


async def close_all(bound: float) -> None:
    """Shutdown: every running counter writes what it has left, all within `bound` seconds."""
    counters = list(_running)
    for counter in counters:  # all at once, before any retirement is announced
        counter.shut_down(bound)
    await asyncio.gather(*(counter.close(bound) for counter in counters))


class Phase(enum.Enum):
    COUNTING = "counting"
    # Replaced after an option change or a script reload: writes what it has left, in the
    # background, within the retirement's bound.
    RETIRED = "retired"
    # The proxy is exiting: writes what it has left at once, within the shutdown's bound.
    SHUTTING_DOWN = "shutting down"


class RedisCounter:
    """Counts in memory and writes them to one Redis key in the background.

    `add` never waits. One task writes what accumulated, one batch at a time and at most one
    per WRITE_INTERVAL, and retries the same batch with backoff until Redis acknowledges it.
    Once retired (replaced after an option change or a script reload), the task goes on until
    every count is written or the retirement's bound passes, then lets go of Redis.

    It counts requests (`add`) and responses by class (`add_response`), which go to Redis in
    the same batches, and keeps the shared values the latest write or read brought back
    (`latest`). `redis_up`: Redis answered this counter's latest contact (a write, or a
    read) and no write has failed since; False before any contact.
    """

    # The Lua script that applies a batch (a class attribute so that a test can show what
    # happens without the sequence check).
    apply_batch = APPLY_BATCH

    def __init__(self, url: str, key: str, replicas: int = 0) -> None:
        self.url = url
        self.key = key
        # A batch is acknowledged once this many replicas have it (WAIT); 0: once the primary
        # has it. Changed in place by an option change.
        self.replicas = replicas
        self.ledger = Ledger()
        self.problem: Failure | None = None
        self.phase = Phase.COUNTING
        self._writer_key = writer_key(key, uuid.uuid4().hex)
        self._responses_key = responses_key(key)
        # The shared values the latest write (or read_shared) brought back; None before any.
        self.latest: Shared | None = None
        self._contacted = False
        self._read_failed = False
        self._redis = RedisClient(parse(url))
        self._client = self._redis.client
        self._apply = self._client.register_script(self.apply_batch)
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        # Set on shutting down: cuts short a backoff.
        self._closing = asyncio.Event()
        self._progress = asyncio.Event()
        self._writing = asyncio.Lock()
        self._last_write = -WRITE_INTERVAL
        self._task: asyncio.Task[None] | None = None
        # When the writer gives up (event loop time); None until the counter is retired.
        self._deadline: float | None = None
        self._lifetime: asyncio.Timeout | None = None
        self._left_at_retirement = 0
        self._eviction_checked = False

    @property
    def unwritten(self) -> int:
        """Counts not yet acknowledged by Redis."""
        return self.ledger.unwritten

    @property
    def redis_up(self) -> bool:
        return self._contacted and self.problem is None and not self._read_failed

    def add(self) -> None:
        self.ledger.add()
        self._start()
        self._wake.set()

    def add_response(self, code_class: CodeClass) -> None:
        self.ledger.add_response(code_class)
        if self._task is None:  # a flow counted by the counter this one replaced
            self._start()
        self._wake.set()

    def flush(self) -> None:
        """Have the writer write what is pending now, without waiting out WRITE_INTERVAL."""
        self._hurry.set()
        self._start()
        self._wake.set()

    def reset(self) -> None:
        """Set the shared counts back to 0, in order with this counter's batches.

        Counts not yet in a batch are dropped (they are among what the reset zeroes); a batch
        already sent is applied before the reset, and counts made from now on after it.
        """
        self.ledger.request_reset()
        self.flush()

    def retire(self, bound: float) -> None:
        """Take no more counts; write those left in the background for up to `bound` seconds.

        Synchronous and free of I/O: called from configure() and, on a script reload, from
        done(), both on the event loop.
        """
        if self.phase is not Phase.COUNTING:
            return
        self.phase = Phase.RETIRED
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing was ever counted or connected from one
            return
        self._set_deadline(loop.time() + bound)
        self._start()
        self._wake.set()
        # On the loop's next turn: on shutdown, mitmproxy calls done(), and so this, just
        # before close(), which leaves no retirement to announce.
        loop.call_soon(self._announce_retirement, bound)

    def _announce_retirement(self, bound: float) -> None:
        if self.unwritten and self.phase is Phase.RETIRED:
            self._left_at_retirement = self.unwritten
            logger.info(
                f"{self._left_at_retirement} counts for key {self.key!r} at {redact(self.url)} "
                f"are not written yet: writing them in the background for up to {bound:.0f} s"
            )

    def shut_down(self, bound: float) -> None:
        """Write what is left at once, retrying failures quickly, for at most `bound` seconds."""
        self.phase = Phase.SHUTTING_DOWN
        deadline = asyncio.get_running_loop().time() + bound
        if self._deadline is None or deadline < self._deadline:
            self._set_deadline(deadline)
        self._closing.set()
        self._hurry.set()
        self._wake.set()
        self._start()

    async def close(self, bound: float) -> int:
        """Shut down, and wait until the counter has let go of Redis.

        Returns the number of counts that could not be written.
        """
        self.shut_down(bound)
        assert self._task is not None
        await asyncio.wait({self._task})  # a task cancelled by loop teardown raises nothing
        return self.unwritten

    async def read(self) -> int:
        """The shared count once this process's counts are written; CounterUnavailable if not.

        Waits as long as Redis is away: callers bound it with a timeout.
        """
        # The write that took our counts brought back the value: no GET needed.
        if await self._write_through() and self.latest is not None:
            return self.latest.requests
        try:
            raw = await self._client.get(self.key)
        except Exception as e:  # whatever it is, /status answers 503 rather than fail
            raise self._unavailable(self._classify(e)) from None
        value = _integer(raw)
        if value is None:
            raise self._unavailable(not_an_integer(self.key))
        self._answered()
        return value

    async def read_shared(self) -> Shared:
        """Requests and responses by class in Redis once this process's counts (and resets)
        are written; CounterUnavailable if they can't be read.

        One round trip when the write that took our counts brought the values back, else
        one pipelined GET + HMGET. Waits as long as Redis is away: callers bound it.
        """
        if await self._write_through() and self.latest is not None:
            return self.latest
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self.key)
                pipe.hmget(self._responses_key, [c.value for c in CodeClass])
                raw, classes = await pipe.execute()
        except Exception as e:
            raise self._unavailable(self._classify(e)) from None
        shared = parse_shared([raw, *classes])
        if shared is None:
            raise self._unavailable(not_an_integer(self.key))
        self._answered()
        self.latest = shared
        return shared

    async def _write_through(self) -> bool:
        """Wait until every count and reset made so far is written; whether a write was needed."""
        mark = self.ledger.mark()
        if self.ledger.written_through(mark):
            return False
        while not self.ledger.written_through(mark):
            if self.problem is None and not self._writing.locked():
                # Writing here rather than waking the writer saves /status two trips
                # through a busy event loop. Should it fail, the writer takes over.
                with contextlib.suppress(Exception):
                    await self._write_batch()
            else:
                self._hurry.set()
                await self._progress.wait()
        return True

    def _unavailable(self, failure: Failure) -> CounterUnavailable:
        self._read_failed = True
        return CounterUnavailable(failure)

    def _answered(self) -> None:
        self._contacted = True
        self._read_failed = False

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            _running.add(self)
            # Not at the end of _run: a task cancelled before its first step never runs it.
            self._task.add_done_callback(lambda _: _running.discard(self))

    def _set_deadline(self, when: float) -> None:
        self._deadline = when
        if self._lifetime is not None and not self._lifetime.expired():
            self._lifetime.reschedule(when)

    async def _run(self) -> None:
        try:
            async with asyncio.timeout_at(self._deadline) as self._lifetime:
                await self._write_until_retired()
        except TimeoutError:
            pass
        finally:
            self._lifetime = None
            await self._let_go()

    async def _write_until_retired(self) -> None:
        failures = 0
        while self.phase is Phase.COUNTING or not self.ledger.idle:
            if self.ledger.idle:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather_counts()
            try:
                await self._write_batch()
            except Exception:  # whatever it is, the counts must not stop being written
                failures += 1
                await self._back_off(failures)
                continue
            failures = 0
            if not self._eviction_checked:
                await self._check_eviction()

    async def _let_go(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._redis.aclose()
        if not self.ledger.idle:
            logger.warning(
                f"{self.unwritten} counts could not be written to Redis at {redact(self.url)} "
                f"and are lost, with {self.ledger.responses_unwritten} responses by class: "
                f"{self.problem or 'timed out'}"
            )
        elif self._left_at_retirement:
            logger.info(
                f"the {self._left_at_retirement} counts left for key {self.key!r} at "
                f"{redact(self.url)} are written"
            )

    def _args(self, batch: Batch) -> tuple[list[str], list[int]]:
        keys = [self.key, self._writer_key, self._responses_key]
        args = [batch.seq, batch.requests, WRITER_KEY_TTL, *batch.responses, int(batch.reset)]
        return keys, args

    async def _write_batch(self) -> None:
        """Write the batch due, if any; one writer at a time, the background task or a reader."""
        async with self._writing:
            batch = self.ledger.next_batch()
            if batch is None:  # a reader wrote it while the writer waited
                return
            self._last_write = time.monotonic()
            keys, args = self._args(batch)
            try:
                values = await self._redis.run_script(self._apply, keys, args, self.replicas)
            except Exception as e:
                self._failed(e)
                raise
            # Successful writes only: a failed one shows as redis_up 0, and a write timing
            # out would put its 2.5 s in the histogram however fast Redis is.
            STATS.redis_writes += 1
            STATS.redis_write_duration.observe(time.monotonic() - self._last_write)
            self.ledger.ack(batch)
            if batch.reset:
                logger.info(
                    f"the counts under key {self.key!r} at {redact(self.url)} are reset to 0"
                )
            # A value that is not an integer leaves readers to report it.
            self.latest = parse_shared(values)
            self._answered()
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
        if self.phase is not Phase.SHUTTING_DOWN:
            self._hurry.clear()

    async def _back_off(self, failures: int) -> None:
        """Wait before retrying a failed write; a shutdown cuts the wait to SHUTDOWN_RETRY."""
        cap = min(BACKOFF_CAP, BACKOFF_FIRST * 2**failures)
        # Jitter: processes sharing one Redis don't reconnect in lockstep.
        delay = random.uniform(cap / 2, cap)
        if self.phase is Phase.SHUTTING_DOWN:
            await asyncio.sleep(min(delay, SHUTDOWN_RETRY))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    async def _check_eviction(self) -> None:
        """Warn once if Redis may evict the keys that keep the count exact (eviction.py)."""
        try:
            policy = await self._redis.eviction_policy(self.key)
        except Exception:  # Redis gone again: the next write's success tries again
            return
        self._eviction_checked = True
        warning = None if policy is None else eviction_warning(policy, self.key)
        if warning is not None:
            logger.warning(f"{warning} ({redact(self.url)})")

    def _classify(self, e: BaseException) -> Failure:
        return classify(e, self.key, tls=self._redis.target.tls)

    def _failed(self, e: BaseException) -> None:
        failure = self._classify(e)
        if self.problem is None or failure.kind is not self.problem.kind:
            logger.warning(
                f"{failure} ({redact(self.url)}); proxying goes on, "
                f"counts wait in memory ({self.unwritten} so far)"
            )
        self.problem = failure

    def _recovered(self) -> None:
        if self.problem is not None:
            logger.info(f"Redis is back to accepting counts ({redact(self.url)})")
            self.problem = None
