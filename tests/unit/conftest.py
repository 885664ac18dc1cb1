"""Fixtures of the in-process tier."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from counting_addon import CountingProxy
from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.counter import RedisCounter
from counting_addon.store.url import parse
from tests.support.in_process import (
    BACKOFF_CAP,
    CLOSE_TIMEOUT,
    DRAIN_TIMEOUT,
    InProcessProxy,
    MakeProxy,
)
from tests.support.processes import start_redis


@pytest.fixture
def counting_proxy(redis_url: str) -> Iterator[MakeProxy]:
    """Makes CountingProxy instances under taddons, each configured as a script load does
    (every option, at its default but for those given; counter_redis_url: the shared test
    Redis unless given), its shutdown's bounds short
    (tests/support/in_process.py). In an async test the proxy runs on the test's event loop;
    in a plain one, on a loop taddons makes, closed after the test."""
    with contextlib.ExitStack() as contexts:

        def make(**options: object) -> InProcessProxy:
            proxy = CountingProxy()
            proxy.counting.drain_timeout = DRAIN_TIMEOUT
            proxy.counting.close_timeout = CLOSE_TIMEOUT
            tctx = contexts.enter_context(taddons.context(Proxyserver(), proxy))
            running = InProcessProxy(proxy, tctx)
            running.configure(**{"counter_redis_url": redis_url, **options})
            proxy.configure(set(tctx.options.keys()))  # as a script load does, after
            return running

        yield make


@pytest.fixture
async def counts_pending(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRedis, RedisCounter]]:
    """A counter that wrote 1 count to a redis-server of its own, which then stopped, and has
    4 more waiting; `start()` brings that Redis back on the same port with the same data."""
    server = start_redis(tmp_path)
    counter = RedisCounter(parse(server.url), "counter", backoff_cap=BACKOFF_CAP)
    counter.add()
    async with asyncio.timeout(10):
        assert await counter.read() == 1
    server.stop()
    for _ in range(4):
        counter.add()
    yield server, counter
    server.stop()
