"""The warning about Redis eviction policies that could make a count wrong: the pure judgement,
then once per counter against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from counting_addon.store.counter import RedisCounter
from counting_addon.store.eviction import eviction_warning
from counting_addon.store.url import parse
from tests.support.processes import logged, poll, start_redis
from tests.support.redis_admin import admin_of

POLICY_IS = "maxmemory-policy is"


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ("noeviction", None),
        ("volatile-lru", "may evict the keys that make a resent batch count once"),
        ("volatile-ttl", "may evict the keys that make a resent batch count once"),
        ("allkeys-lru", "may evict the counter itself ('api'), losing the count"),
        ("allkeys-random", "may evict the counter itself ('api'), losing the count"),
    ],
)
def test_only_noeviction_is_safe(policy: str, says: str | None) -> None:
    warning = eviction_warning(policy, "api")
    if says is None:
        assert warning is None
    else:
        assert warning is not None and says in warning and "noeviction" in warning


async def count_once(url: str) -> RedisCounter:
    counter = RedisCounter(parse(url), "counter")
    counter.add()
    async with asyncio.timeout(10):
        assert await counter.read() == 1
    # The writer checks after its first write, which read() may have made itself.
    counter.add()
    await poll(lambda: counter.health.eviction_checked, 10, "the eviction check")
    return counter


@pytest.mark.parametrize(("policy", "warnings"), [("volatile-lru", 1), ("noeviction", 0)])
async def test_warned_once_per_counter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str, warnings: int
) -> None:
    caplog.set_level(logging.INFO)
    server = start_redis(tmp_path, "--maxmemory-policy", policy)
    try:
        counter = await count_once(server.url)
        for _ in range(3):
            counter.add()
            async with asyncio.timeout(10):
                await counter.read()
        assert await counter.close(1.0) == 0
        lines = logged(caplog, POLICY_IS)
        assert len(lines) == warnings, caplog.text
        if warnings:
            assert f"{POLICY_IS} {policy}" in lines[0] and server.url in lines[0]
    finally:
        server.stop()


async def test_silent_where_config_is_not_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user whose ACL leaves out CONFIG, on a Redis with an unsafe policy: nothing to say
    (the policy can't be known), and counting goes on."""
    caplog.set_level(logging.INFO)
    server = start_redis(tmp_path, "--maxmemory-policy", "allkeys-lru")
    try:
        with admin_of(server) as admin:
            admin.acl_setuser(
                "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
            )
        url = server.url.replace("redis://", "redis://app:pw@")
        counter = await count_once(url)
        assert await counter.close(1.0) == 0
        assert not logged(caplog, POLICY_IS), caplog.text
        assert counter.problem is None
    finally:
        server.stop()
