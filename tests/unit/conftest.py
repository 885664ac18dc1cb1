"""Fixtures of the in-process tier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.counter import RedisCounter
from counting_addon.store.url import parse
from tests.support.processes import start_redis


@pytest.fixture
async def counts_pending(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRedis, RedisCounter]]:
    """A counter that wrote 1 count to a redis-server of its own, which then stopped, and has
    4 more waiting; `start()` brings that Redis back on the same port with the same data."""
    server = start_redis(tmp_path)
    counter = RedisCounter(parse(server.url), "counter")
    counter.add()
    async with asyncio.timeout(10):
        assert await counter.read() == 1
    server.stop()
    for _ in range(4):
        counter.add()
    yield server, counter
    server.stop()
