"""counter.get, counter.reset and counter.flush, as mitmproxy's command manager calls them,
against a real redis-server."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from counting_addon import CountingProxy
from counting_addon.code_class import CodeClass
from counting_addon.commands import UNKNOWN
from counting_addon.store.counter import RedisCounter
from counting_addon.store.shared import Shared
from tests.support.processes import free_port, wait_for


def counter_of(proxy: CountingProxy) -> RedisCounter:
    counter = proxy.counting.counter
    assert counter is not None
    return counter


async def until(check: object, what: str) -> None:
    """Poll `check` from a thread: the writer needs this event loop."""
    await asyncio.to_thread(wait_for, check, 10, what)  # type: ignore[arg-type]


async def test_the_commands_are_declared_with_help() -> None:
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        commands = tctx.master.commands.commands
        assert {"counter.get", "counter.reset", "counter.flush"} <= set(commands)
        assert commands["counter.get"].return_type is int
        assert "never waits on Redis" in commands["counter.get"].help
        assert commands["counter.reset"].help.startswith("DESTRUCTIVE")


async def test_get_answers_the_latest_value_a_write_brought_back(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("counter", 41)
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy.counting, counter_redis_url=redis_url)
        call = tctx.master.commands.call
        assert call("counter.get") == UNKNOWN  # nothing written or read yet
        counter_of(proxy).add()
        await until(lambda: call("counter.get") == 42, "counter.get == 42")
        redis_client.incrby("counter", 8)  # another proxy's counts: seen with the next write
        assert call("counter.get") == 42
        counter_of(proxy).add()
        await until(lambda: call("counter.get") == 51, "counter.get == 51")
        await proxy.counting.done()


async def test_get_never_waits_on_an_unreachable_redis() -> None:
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy.counting, counter_redis_url=f"redis://127.0.0.1:{free_port()}/0")
        counter_of(proxy).add()
        assert tctx.master.commands.call("counter.get") == UNKNOWN
        await counter_of(proxy).close(0.2)


async def test_reset_zeroes_requests_and_classes_and_counting_goes_on(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.set("counter", 100)
    redis_client.hset("{counter}:responses", mapping={"2xx": 90, "5xx": 10})
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy.counting, counter_redis_url=redis_url)
        counter = counter_of(proxy)
        counter.add()  # pending at the reset: dropped with the rest
        caplog.set_level(logging.INFO)
        assert tctx.master.commands.call("counter.reset") is None
        assert await counter.read_shared() == Shared(0)
        resets = [r.getMessage() for r in caplog.records if "reset" in r.getMessage()]
        assert resets == [f"the counts under key 'counter' at {redis_url} are reset to 0"]
        assert redis_client.get("counter") == b"0"
        assert redis_client.exists("{counter}:responses") == 0
        assert tctx.master.commands.call("counter.get") == 0
        counter.add()
        counter.add_response(CodeClass.C2XX)
        shared = await counter.read_shared()
        assert (shared.requests, shared.responses[CodeClass.C2XX]) == (1, 1)
        await proxy.counting.done()


async def test_flush_writes_the_pending_counts_now(
    redis_url: str, redis_client: redis.Redis
) -> None:
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy.counting, counter_redis_url=redis_url)
        counter = counter_of(proxy)
        counter.add()
        assert await counter.read() == 1  # just written: the next write would wait ~100 ms
        counter.add()
        counter.add_response(CodeClass.C3XX)
        assert tctx.master.commands.call("counter.flush") is None
        assert counter.unwritten == 1  # the command returned without waiting
        await until(
            lambda: redis_client.hget("{counter}:responses", "3xx") == b"1", "the flushed counts"
        )
        assert redis_client.get("counter") == b"2"
        await proxy.counting.done()
