"""counter.get, counter.reset and counter.flush, as mitmproxy's command manager calls them,
against a real redis-server."""

from __future__ import annotations

import logging

import pytest
import redis
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from counting_addon import CountingProxy
from counting_addon.code_class import CodeClass
from counting_addon.commands import UNKNOWN
from counting_addon.store.shared import Shared
from tests.support.in_process import MakeProxy
from tests.support.processes import poll, unreachable_redis_url


async def test_the_commands_are_declared_with_help() -> None:
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        commands = tctx.master.commands.commands
        assert {"counter.get", "counter.reset", "counter.flush", "counter.top"} <= set(commands)
        assert commands["counter.get"].return_type is int
        assert "never waits on Redis" in commands["counter.get"].help
        assert commands["counter.reset"].help.startswith("DESTRUCTIVE")


async def test_get_answers_the_latest_value_a_write_brought_back(
    counting_proxy: MakeProxy, redis_client: redis.Redis
) -> None:
    redis_client.set("counter", 41)
    running = counting_proxy()
    call = running.tctx.master.commands.call
    assert call("counter.get") == UNKNOWN  # nothing written or read yet
    running.counter.add()
    await poll(lambda: call("counter.get") == 42, 10, "counter.get == 42")
    redis_client.incrby("counter", 8)  # another proxy's counts: seen with the next write
    assert call("counter.get") == 42
    running.counter.add()
    await poll(lambda: call("counter.get") == 51, 10, "counter.get == 51")
    await running.proxy.counting.done()


async def test_get_never_waits_on_an_unreachable_redis(counting_proxy: MakeProxy) -> None:
    running = counting_proxy(counter_redis_url=unreachable_redis_url())
    running.counter.add()
    assert running.tctx.master.commands.call("counter.get") == UNKNOWN
    await running.counter.close(0.2)


async def test_reset_zeroes_requests_and_classes_and_counting_goes_on(
    counting_proxy: MakeProxy,
    redis_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_client.set("counter", 100)
    redis_client.hset("{counter}:responses", mapping={"2xx": 90, "5xx": 10})
    running = counting_proxy()
    call = running.tctx.master.commands.call
    counter = running.counter
    counter.add()  # pending at the reset: dropped with the rest
    caplog.set_level(logging.INFO)
    assert call("counter.reset") is None
    assert await counter.read_shared() == Shared(0)
    resets = [r.getMessage() for r in caplog.records if "reset" in r.getMessage()]
    assert resets == [f"the counts under key 'counter' at {redis_url} are reset to 0"]
    assert redis_client.get("counter") == b"0"
    assert redis_client.exists("{counter}:responses") == 0
    assert call("counter.get") == 0
    counter.add()
    counter.add_response(CodeClass.C2XX)
    shared = await counter.read_shared()
    assert (shared.requests, shared.responses[CodeClass.C2XX]) == (1, 1)
    await running.proxy.counting.done()


async def test_flush_writes_the_pending_counts_now(
    counting_proxy: MakeProxy, redis_client: redis.Redis
) -> None:
    running = counting_proxy()
    counter = running.counter
    counter.add()
    assert await counter.read() == 1  # just written: the next write would wait ~100 ms
    counter.add()
    counter.add_response(CodeClass.C3XX)
    assert running.tctx.master.commands.call("counter.flush") is None
    assert counter.unwritten == 1  # the command returned without waiting
    await poll(
        lambda: redis_client.hget("{counter}:responses", "3xx") == b"1", 10, "the flushed counts"
    )
    assert redis_client.get("counter") == b"2"
    await running.proxy.counting.done()


async def test_top_lists_the_largest_series_a_flush_brought_back(
    counting_proxy: MakeProxy,
) -> None:
    running = counting_proxy(counter_by="method,header:X-Client-Id")
    call = running.tctx.master.commands.call
    assert call("counter.top", 5) == []  # nothing read yet: and never a wait on Redis
    for values in [("GET", "acme")] * 3 + [("POST", "(none)")] + [("GET", "beta")] * 2:
        running.counter.add(values)
    call("counter.flush")
    await poll(lambda: len(call("counter.top", 5)) == 3, 10, "the series back from a flush")
    assert call("counter.top", 2) == [
        "3  method=GET  header:X-Client-Id=acme",
        "2  method=GET  header:X-Client-Id=beta",
    ]
    assert call("counter.top", 0) == []
    await running.proxy.counting.done()


def test_top_without_counter_by_lists_nothing(counting_proxy: MakeProxy) -> None:
    running = counting_proxy()
    assert running.tctx.master.commands.call("counter.top", 3) == []
