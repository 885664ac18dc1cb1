"""Counters replaced at runtime (an option change, a script reload) and shut down, in-process
against a real redis-server: a retired counter goes on writing in the background, shutdown
writes what every counter has left within its bound, and nothing here waits on Redis."""

from __future__ import annotations

import gc
import inspect
import logging
import time
import warnings
from pathlib import Path

import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.process import PROCESS
from counting_addon.store.counter import RedisCounter, close_all
from counting_addon.store.lifecycle import Phase
from counting_addon.store.url import parse
from counting_addon.traffic.counting import CLOSE_TIMEOUT, RETIRE_BOUND
from tests.support.in_process import MakeProxy
from tests.support.processes import free_port, logged, poll, start_redis, unreachable_redis_url

LOST = "could not be written"
WRITTEN = "are written"


async def test_a_retired_counter_writes_its_counts_once_redis_is_back(
    counts_pending: tuple[EmbeddedRedis, RedisCounter], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server, counter = counts_pending
    counter.retire(RETIRE_BOUND)
    assert counter in PROCESS.counters
    server.start()  # same port, same data directory
    with redis.Redis.from_url(server.url) as client:
        await poll(lambda: client.get("counter") == b"5", 20, "the retired counts in Redis")
    await poll(lambda: counter not in PROCESS.counters, 5, "the writer to finish")
    assert counter.unwritten == 0
    assert logged(caplog, "4 counts for key 'counter'"), caplog.text
    assert len(logged(caplog, WRITTEN)) == 1, caplog.text
    assert not logged(caplog, LOST), caplog.text


async def test_a_retired_counter_gives_up_after_its_bound_saying_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = RedisCounter(parse(unreachable_redis_url()), "counter")
    for _ in range(3):
        counter.add()
    counter.retire(0.5)
    await poll(lambda: counter not in PROCESS.counters, 10, "the writer to give up")
    assert counter.unwritten == 3
    lost = logged(caplog, LOST)
    assert len(lost) == 1 and lost[0].startswith("3 counts"), caplog.text
    assert "Redis unreachable" in lost[0]


async def test_a_retired_counter_with_nothing_left_lets_go_of_redis(
    redis_url: str, redis_client: redis.Redis
) -> None:
    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    assert await counter.read() == 1
    name = f"retired-{free_port()}"
    await counter.redis.client.client_setname(name)

    def connected() -> bool:
        return any(c["name"] == name for c in redis_client.client_list())

    assert connected()
    counter.retire(RETIRE_BOUND)
    await poll(lambda: not connected(), 5, "the retired counter's connection to close")
    assert counter not in PROCESS.counters


async def test_shutdown_cuts_every_retirement_short_and_reports_what_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Counters retired with a bound of minutes, Redis down: shutdown ends within its own
    bound, and each counter reports its lost counts once."""
    url = unreachable_redis_url()
    counters = [RedisCounter(parse(url), key) for key in ("a", "b", "c")]
    for n, counter in enumerate(counters, start=1):
        for _ in range(n):
            counter.add()
    counters[0].retire(RETIRE_BOUND)
    counters[1].retire(RETIRE_BOUND)
    started = time.monotonic()
    await close_all(0.5)
    took = time.monotonic() - started
    assert took < 0.5 + 2.0, f"shutdown took {took:.2f}s"  # the bound, and closing the clients
    assert not PROCESS.counters
    assert sorted(line.split()[0] for line in logged(caplog, LOST)) == ["1", "2", "3"]


async def test_shutdown_writes_what_retired_counters_have_left(
    redis_url: str, redis_client: redis.Redis
) -> None:
    old, new = RedisCounter(parse(redis_url), "old"), RedisCounter(parse(redis_url), "new")
    old.add()
    old.retire(RETIRE_BOUND)
    new.add()
    new.add()
    await close_all(CLOSE_TIMEOUT)
    assert redis_client.mget("old", "new") == [b"1", b"2"]


async def test_done_on_reload_returns_at_once_and_the_counts_still_land(
    counting_proxy: MakeProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A script reload calls done() synchronously and drops what it returns: that must not
    wait on Redis nor warn of a coroutine never awaited, and the old instance's counts must
    reach Redis once it is back."""
    server = start_redis(tmp_path)
    old = counting_proxy(counter_redis_url=server.url)
    counter = old.counter
    server.stop()
    for _ in range(3):
        counter.add()
    gc.collect()  # what earlier tests left (an unclosed connection warns when collected)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = old.proxy.counting.done()
        assert inspect.isawaitable(result) and not inspect.iscoroutine(result)
        del result
        gc.collect()
    assert not caught, [str(w.message) for w in caught]
    assert counter.phase is Phase.RETIRED and counter in PROCESS.counters
    server.start()
    with redis.Redis.from_url(server.url) as client:
        await poll(lambda: client.get("counter") == b"3", 20, "the old instance's counts")
    assert not logged(caplog, LOST), caplog.text
    server.stop()


async def test_an_option_change_with_redis_down_keeps_both_counts(
    counting_proxy: MakeProxy, tmp_path: Path
) -> None:
    """counter_key changed while Redis is down: configure() does no I/O, the old key's counts
    wait in the retired counter, the new key's in the new one; both land once Redis is back."""
    server = start_redis(tmp_path)
    running = counting_proxy(counter_redis_url=server.url)
    server.stop()
    first = running.counter
    first.add()
    running.configure(counter_key="other")
    second = running.counter
    assert second is not first and first.phase is Phase.RETIRED
    second.add()
    second.add()
    server.start()
    with redis.Redis.from_url(server.url) as client:
        await poll(lambda: client.mget("counter", "other") == [b"1", b"2"], 20, "both keys' counts")
    await running.proxy.counting.done()
    assert not PROCESS.counters
    server.stop()


async def test_shutdown_announces_no_retirement(
    counting_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """done() retires the counter, then mitmproxy awaits the shutdown at once: the log says
    what was lost, not that counts go on being written in the background."""
    caplog.set_level(logging.INFO)
    running = counting_proxy(counter_redis_url=unreachable_redis_url())
    running.proxy.counting.close_timeout = 0.2  # waited out: the counts can't be written
    running.counter.add()
    running.counter.add()
    await running.proxy.counting.done()
    assert not logged(caplog, "not written yet"), caplog.text
    lost = logged(caplog, LOST)
    assert len(lost) == 1 and lost[0].startswith("2 counts"), caplog.text
