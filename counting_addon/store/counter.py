"""The shared counter in Redis: batched, idempotent writes driven by a background task.

The state is in I/O-free classes, each tested directly: what is counted, sent and acknowledged
(ledger.py), the phase and deadline (lifecycle.py), what is known of Redis's health
(health.py). This module is the thin async loop around them that talks to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable

from counting_addon.code_class import CodeClass
from counting_addon.process import PROCESS
from counting_addon.store.batch import APPLY_BATCH, READ_COUNTS, BatchKeys, ScriptCall
from counting_addon.store.client import CONNECT_TIMEOUT, WAIT_TIMEOUT, RedisClient
from counting_addon.store.eviction import eviction_warning
from counting_addon.store.failures import Failure, classify, not_an_integer
from counting_addon.store.health import Health
from counting_addon.store.ledger import Ledger, Values
from counting_addon.store.lifecycle import BACKOFF_CAP, Lifecycle, Phase
from counting_addon.store.shared import NO_SERIES, TOTALS, Reads, SeriesSpec, Shared, parse_shared
from counting_addon.store.url import RedisTarget

logger = logging.getLogger(__name__)

# Under load, counts gather this long between writes, so that Redis sees about ten writes a
# second whatever the request rate. An idle proxy writes at once; /status never waits for it.
WRITE_INTERVAL = 0.1


class CounterUnavailable(Exception):
    """The counter can't be read right now; `failure` says why."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


async def close_all(bound: float) -> None:
    """Shutdown: every running counter writes what it has left, all within `bound` seconds."""
    counters = list(PROCESS.counters)
    for counter in counters:  # all at once, before any retirement is announced
        counter.shut_down(bound)
    await asyncio.gather(*(counter.close(bound) for counter in counters))


class RedisCounter:
    """Counts in memory and writes them to one Redis key in the background.

    `add` never waits. One task writes what accumulated, one batch at a time and at most one
    per WRITE_INTERVAL, and retries the same batch with backoff until Redis acknowledges it.
    Once retired (replaced after an option change or a script reload), the task goes on until
    every count is written or the retirement's bound passes, then lets go of Redis.

    It counts requests (`add`) and responses by class (`add_response`), which go to Redis in
    the same batches, and keeps the shared values the latest write or read brought back
    (`latest`). With a `series` spec, requests also count by their label values, in the same
    batches (the series sum to the requests counted since a reset). Each request is stamped
    with the second it arrived in, which its batch credits to the buckets of the last minute,
    hour and day (windows.py); body bytes (`add_bytes`) go in the same batches too.
    `backoff_cap` and `wait_timeout` bound the waits after a failed write and for replicas
    (tests shorten them). `clock` gives the time the buckets' lifetimes and the windows read
    count from (Unix seconds; tests move it).
    """

    def __init__(
        self,
        target: RedisTarget,
        key: str,
        replicas: int = 0,
        series: SeriesSpec = NO_SERIES,
        *,
        backoff_cap: float = BACKOFF_CAP,
        wait_timeout: float = WAIT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.key = key
        # A batch is acknowledged once this many replicas have it (WAIT); 0: once the primary
        # has it. Changed in place by an option change.
        self.replicas = replicas
        self.series = series
        self.clock = clock
        self.ledger = Ledger()
        self.lifecycle = Lifecycle(backoff_cap)
        self.health = Health()
        self.keys = BatchKeys.of(key, uuid.uuid4().hex, series)
        # The shared values the latest write (or read) brought back; None before any.
        self.latest: Shared | None = None
        # What the latest write brought back; None before any (or a value not an integer).
        self._written: Shared | None = None
        # The series the latest read (or flush) brought back, which the background writes,
        # ten a second, don't ask for; None before any.
        self.latest_series: dict[Values, int] | None = None
        # What a flush asked to have back with its write.
        self._asked = TOTALS
        self.redis = RedisClient(target, wait_timeout)
        self._apply = self.redis.client.register_script(APPLY_BATCH)
        self._read = self.redis.client.register_script(READ_COUNTS)
        # Set when there is something to write, or the phase changed.
        self._wake = asyncio.Event()
        # Set when a write must not wait out WRITE_INTERVAL (a reader, a flush, shutdown).
        self._hurry = asyncio.Event()
        # Set on shutting down: cuts short a backoff.
        self._closing = asyncio.Event()
        # Replaced after each successful write: readers wait on it while the writer writes.
        self._progress = asyncio.Event()
        self._writing = asyncio.Lock()
        self._last_write = -WRITE_INTERVAL
        self._task: asyncio.Task[None] | None = None
        # Successful writes so far, and the read in flight: the write count when it was sent
        # and what it reads.
        self._writes = 0
        self._reading: asyncio.Task[Shared] | None = None
        self._reading_after = (0, TOTALS)
        self._lifetime: asyncio.Timeout | None = None

    @property
    def phase(self) -> Phase:
        return self.lifecycle.phase

    @property
    def problem(self) -> Failure | None:
        return self.health.problem

    @property
    def redis_up(self) -> bool:
        return self.health.redis_up

    @property
    def unwritten(self) -> int:
        """Counts not yet acknowledged by Redis."""
        return self.ledger.unwritten

    def add(self, values: Values | None = None, second: int | None = None) -> None:
        """One request, in the series of its label `values` when counted by labels, whose
        headers arrived in the whole Unix `second` (None: in no window)."""
        self.ledger.add(1, values, second)
        self._wake_writer()

    def add_bytes(self, request: int, response: int) -> None:
        """Body bytes: `request` received from a client, `response` sent to one."""
        self.ledger.add_bytes(request, response)
        self._wake_writer()

    def add_response(
        self, code_class: CodeClass, request_bytes: int = 0, response_bytes: int = 0
    ) -> None:
        """A response in `code_class`, and its exchange's body bytes (as `add_bytes`)."""
        self.ledger.add_response(code_class)
        if request_bytes or response_bytes:
            self.ledger.add_bytes(request_bytes, response_bytes)
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Something new to write: the writer, started if need be (a response or bytes may
        come from a flow counted by the counter this one replaced), writes it."""
        if self._task is None:
            self._start()
        self._wake.set()

    def flush(self) -> None:
        """Have the writer write what is pending now, without waiting out WRITE_INTERVAL, and
        bring the series back (`latest_series`)."""
        self._asked = self._asked | Reads(series=bool(self.series.labels))
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
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop: nothing was ever counted or connected from one, and no writer will run
            # to meet a deadline.
            self.lifecycle.retire(None, bound)
            return
        if not self.lifecycle.retire(loop.time(), bound):
            return
        self._follow_deadline()
        self._start()
        self._wake.set()
        # On the loop's next turn: on shutdown, mitmproxy calls done(), and so this, just
        # before close(), which leaves no retirement to announce.
        loop.call_soon(self._announce_retirement, bound)

    def _announce_retirement(self, bound: float) -> None:
        if self.lifecycle.announce_retirement(self.unwritten):
            logger.info(
                f"{self.lifecycle.left_at_retirement} counts for key {self.key!r} at "
                f"{self.target.redacted} are not written yet: writing them in the background "
                f"for up to {bound:.0f} s"
            )

    def shut_down(self, bound: float) -> None:
        """Write what is left at once, retrying failures quickly, for at most `bound` seconds."""
        self.lifecycle.shut_down(asyncio.get_running_loop().time(), bound)
        self._follow_deadline()
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
        """The shared request count; as `read_shared`."""
        return (await self.read_shared()).requests

    async def read_shared(self, windows: bool = False, own_counts: bool = True) -> Shared:
        """The shared counts in Redis once this process's counts (and resets) are written,
        with the series when counted by labels and, if asked, the `windows`;
        CounterUnavailable if they can't be read. Without `own_counts`, the counts in Redis
        now, without waiting for this process's to be written: for a poll that can take
        figures a moment old, one round trip however busy the writer is.

        The one read path (/status, /metrics, and `latest` for counter.get): one round trip,
        the write that took our counts bringing the values back, or the read script. Waits as
        long as Redis is away: callers bound it with a timeout.
        """
        reads = Reads(bool(self.series.labels), windows)
        written = await self._write_through(reads) if own_counts else None
        if written is not None and reads.covered_by(written):
            return written
        while True:
            reading = self._reading
            if reading is None or reading.done():
                # A task of its own: a reader timing out leaves the read to those waiting.
                reading = asyncio.get_running_loop().create_task(self._read_script(reads))
                # Its failure is retrieved even when every reader has given up waiting.
                reading.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._reading = reading
                self._reading_after = (self._writes, reads)
                break
            started_after, read_for = self._reading_after
            # A read sent after every write acknowledged so far sees this process's counts
            # (written through, above): join it if it reads enough.
            fresh = started_after == self._writes or not own_counts
            if fresh and reads | read_for == read_for:
                break
            # One read at a time: a burst of /status opens no more connections to Redis.
            await asyncio.wait({reading})
        return await asyncio.shield(reading)

    async def _read_script(self, reads: Reads) -> Shared:
        """One read of the shared values (`reads`); CounterUnavailable if it fails."""
        call = ScriptCall.read(self.keys, reads, now=self.clock())
        writes = self._writes
        try:
            values = await self._read(call.keys, call.args)
        except Exception as e:  # whatever it is, the endpoints answer rather than fail
            raise self._unavailable(self._classify(e)) from None
        shared = parse_shared(values, reads)
        if shared is None:
            raise self._unavailable(not_an_integer(self.key))
        self.health.answered()
        if self._writes == writes:  # else a write since holds newer values
            self._keep(shared)
        return shared

    async def _write_through(self, reads: Reads) -> Shared | None:
        """Wait until every count and reset made so far is written; then what the latest
        write brought back, which holds them, asked to bring back `reads` too (None: no write
        was needed, or a value is not an integer)."""
        mark = self.ledger.mark()
        if self.ledger.written_through(mark):
            return None
        while not self.ledger.written_through(mark):
            if self.problem is None and not self._writing.locked():
                # Writing here rather than waking the writer saves /status two trips
                # through a busy event loop. Should it fail, the writer takes over.
                with contextlib.suppress(Exception):
                    await self._write_batch(reads)
            else:
                # The writer's next batch brings `reads` back too: no read after it.
                self._asked = self._asked | reads
                self._hurry.set()
                await self._progress.wait()
        return self._written

    def _unavailable(self, failure: Failure) -> CounterUnavailable:
        self.health.read_failure()
        return CounterUnavailable(failure)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            PROCESS.counters.add(self)
            # Not at the end of _run: a task cancelled before its first step never runs it.
            self._task.add_done_callback(lambda _: PROCESS.counters.discard(self))

    def _follow_deadline(self) -> None:
        """Move the running writer's timeout to the lifecycle's deadline."""
        if self._lifetime is not None and not self._lifetime.expired():
            self._lifetime.reschedule(self.lifecycle.deadline)

    async def _run(self) -> None:
        try:
            async with asyncio.timeout_at(self.lifecycle.deadline) as self._lifetime:
                await self._write_until_retired()
        except TimeoutError:
            pass
        finally:
            self._lifetime = None
            await self._let_go()

    async def _write_until_retired(self) -> None:
        failures = 0
        while self.lifecycle.keeps_writing(self.ledger.idle):
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
            if not self.health.eviction_checked:
                await self._check_eviction()

    async def _let_go(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.redis.aclose()
        if not self.ledger.idle:
            logger.warning(
                f"{self.unwritten} counts could not be written to Redis at "
                f"{self.target.redacted} and are lost, with {self.ledger.responses_unwritten} "
                f"responses by class: {self.problem or 'timed out'}"
            )
        elif self.lifecycle.left_at_retirement:
            logger.info(
                f"the {self.lifecycle.left_at_retirement} counts left for key {self.key!r} at "
                f"{self.target.redacted} are written"
            )

    async def _write_batch(self, reads: Reads = TOTALS) -> None:
        """Write the batch due, if any; one writer at a time, the background task or a reader
        (who may ask for more back, `reads`). It brings back what readers and flushes asked
        for meanwhile as well."""
        async with self._writing:
            batch = self.ledger.next_batch()
            if batch is None:  # a reader wrote it while the writer waited
                return
            reads = reads | self._asked
            self._last_write = time.monotonic()
            call = ScriptCall.of(self.keys, batch, self.series, reads, now=self.clock())
            try:
                values = await self.redis.run_script(
                    self._apply, call.keys, call.args, self.replicas
                )
            except Exception as e:
                self._failed(e)
                raise
            # Successful writes only: a failed one shows as redis_up 0, and a write timing
            # out would put its 2.5 s in the histogram however fast Redis is.
            stats = PROCESS.stats
            stats.redis_writes += 1
            stats.redis_write_duration.observe(time.monotonic() - self._last_write)
            self.ledger.ack(batch)
            self._writes += 1
            if batch.reset:
                logger.info(
                    f"the counts under key {self.key!r} at {self.target.redacted} are reset to 0"
                )
            # A value that is not an integer leaves readers to report it.
            self._written = parse_shared(values, call.reads)
            self._keep(self._written)
            if reads | self._asked == reads:  # nothing more was asked for while it was sent
                self._asked = TOTALS
            if self.health.wrote():
                logger.info(f"Redis is back to accepting counts ({self.target.redacted})")
            self._progress.set()
            self._progress = asyncio.Event()

    def _keep(self, shared: Shared | None) -> None:
        """The values a write or a read brought back (None: one is not an integer, which
        readers report)."""
        self.latest = shared
        if shared is not None and shared.series is not None:
            self.latest_series = shared.series

    async def _gather_counts(self) -> None:
        """Wait out the rest of WRITE_INTERVAL since the last write, unless a reader hurries."""
        delay = self._last_write + WRITE_INTERVAL - time.monotonic()
        if delay > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._hurry.wait()
        if not self.lifecycle.shutting_down:
            self._hurry.clear()

    async def _back_off(self, failures: int) -> None:
        """Wait before retrying a failed write; shutting down cuts the wait short."""
        delay = self.lifecycle.retry_delay(failures, random.random())
        if self.lifecycle.shutting_down:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()

    async def _check_eviction(self) -> None:
        """Warn once if Redis may evict the keys that keep the count exact (eviction.py)."""
        try:
            policy = await self.redis.eviction_policy(self.key)
        except Exception:  # Redis gone again: the next write's success tries again
            return
        self.health.eviction_checked = True
        warning = None if policy is None else eviction_warning(policy, self.key)
        if warning is not None:
            logger.warning(f"{warning} ({self.target.redacted})")

    def _classify(self, e: BaseException) -> Failure:
        return classify(e, self.key, tls=self.target.tls)

    def _failed(self, e: BaseException) -> None:
        failure = self._classify(e)
        if self.health.write_failed(failure):
            logger.warning(
                f"{failure} ({self.target.redacted}); proxying goes on, "
                f"counts wait in memory ({self.unwritten} so far)"
            )
