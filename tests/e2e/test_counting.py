"""End to end: every proxied request is counted exactly once in Redis, under load too."""

from __future__ import annotations

import asyncio
import contextlib
import os

import httpx
import redis

from tests.support.http_client import counter_of
from tests.support.processes import ProxyFactory, free_port
from tests.support.redis_admin import script_calls

GETS = 1000
POSTS = 200
BURST = GETS + POSTS
# 100 concurrent connections in all.
CLIENTS = 20
CONNECTIONS_PER_CLIENT = 5
# Whole bursts must finish well within the file's time budget.
BURST_TIMEOUT = 90.0


async def _send(client: httpx.AsyncClient, base: str, i: int, post: bool) -> int:
    if post:
        r = await client.post(f"{base}/burst/post/{i}", content=b"p" * (i % 50 + 1))
    else:
        r = await client.get(f"{base}/burst/get/{i}?n={i}")
    return r.status_code


async def _burst(bases: list[str], gets: int, posts: int) -> list[int]:
    """`gets` GETs and `posts` POSTs, all started at once over 100 connections, spread over
    `bases` in turn; their status codes.

    The 100 connections come from 20 clients of 5: one httpx pool of 100 spends most of the
    CPU of a small machine scanning its connections for every request, which makes the burst
    several times slower without adding any concurrency.
    """
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT), timeout=60
                )
            )
            for _ in range(CLIENTS)
        ]
        jobs = [
            _send(clients[i % CLIENTS], bases[i % len(bases)], i, post=i >= gets)
            for i in range(gets + posts)
        ]
        async with asyncio.timeout(BURST_TIMEOUT):
            return await asyncio.gather(*jobs)


def burst(bases: list[str], gets: int = GETS, posts: int = POSTS) -> list[int]:
    return asyncio.run(_burst(bases, gets, posts))


def test_exact_count_after_concurrent_burst(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url)
    codes = burst([p.url])
    assert len(codes) == BURST
    assert codes == [200] * BURST, {c: codes.count(c) for c in set(codes)}
    assert counter_of(p.url) == BURST
    assert redis_client.get("counter") == str(BURST).encode()
    # Asking again changes nothing: /status requests are not counted.
    assert counter_of(p.url) == BURST


def test_burst_writes_in_batches(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url)
    before = script_calls(redis_client)
    codes = burst([p.url])
    assert codes == [200] * BURST, {c: codes.count(c) for c in set(codes)}
    assert counter_of(p.url) == BURST
    writes = script_calls(redis_client) - before
    print(f"\nburst of {BURST} requests: {writes} EVAL/EVALSHA writes to Redis")
    assert 1 <= writes < BURST, f"{writes} writes for {BURST} requests"
    assert redis_client.get("counter") == str(BURST).encode()


def test_two_proxies_share_one_counter(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    a = start_proxy(upstream, redis_url)
    b = start_proxy(upstream, redis_url)
    gets, posts = 500, 100
    total = gets + posts
    codes = burst([a.url, b.url], gets, posts)
    assert codes == [200] * total, {c: codes.count(c) for c in set(codes)}
    sent_to_a = len(range(0, total, 2))

    # /status writes that proxy's own pending counts before reading.
    first_a = counter_of(a.url)
    assert sent_to_a <= first_a <= total
    # Both have written everything now: every later read is the exact total.
    assert counter_of(b.url) == total
    assert counter_of(a.url) == total
    assert counter_of(b.url) == total
    assert redis_client.get("counter") == str(total).encode()

    # And the shared count keeps going from either side.
    assert httpx.get(f"{a.url}/one-more", timeout=30).status_code == 200
    assert counter_of(b.url) == total + 1
    assert httpx.get(f"{b.url}/and-another", timeout=30).status_code == 200
    assert counter_of(a.url) == total + 2


def test_counter_key_option(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url, "--set", "counter_key=other")
    redis_client.set("counter", 1000)
    with httpx.Client(base_url=p.url, timeout=30) as client:
        for i in range(7):
            assert client.get(f"/k/{i}").status_code == 200
    assert counter_of(p.url) == 7
    assert redis_client.get("other") == b"7"
    assert redis_client.get("counter") == b"1000"


def test_counter_key_with_existing_value(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """The counter adds to what is in Redis already."""
    redis_client.set("other", 41)
    p = start_proxy(upstream, redis_url, "--set", "counter_key=other")
    assert counter_of(p.url) == 41
    assert httpx.get(f"{p.url}/x", timeout=30).status_code == 200
    assert counter_of(p.url) == 42
    assert redis_client.get("other") == b"42"


def test_counts_near_the_largest_integer_are_exact(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """/status shows Redis's integer exactly, past 2^53 and up to 2^63 - 1 (a double would
    round it, and near 2^63 turn it negative)."""
    start = 2**63 - 10
    redis_client.set("counter", start)
    p = start_proxy(upstream, redis_url)
    with httpx.Client(base_url=p.url, timeout=30) as client:
        for i in range(6):
            assert client.get(f"/big/{i}").status_code == 200
            assert counter_of(p.url) == start + i + 1
        for i in range(3):
            assert client.get(f"/bigger/{i}").status_code == 200
    assert counter_of(p.url) == 2**63 - 1
    assert redis_client.get("counter") == str(2**63 - 1).encode()


def test_redis_url_from_environment(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, None, env={**os.environ, "REDIS_URL": redis_url})
    with httpx.Client(base_url=p.url, timeout=30) as client:
        for i in range(5):
            assert client.get(f"/env/{i}").status_code == 200
    assert counter_of(p.url) == 5
    assert redis_client.get("counter") == b"5"


def test_option_wins_over_environment(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    p = start_proxy(upstream, redis_url, env={**os.environ, "REDIS_URL": dead})
    for i in range(3):
        assert httpx.get(f"{p.url}/opt/{i}", timeout=30).status_code == 200
    assert counter_of(p.url) == 3
    assert redis_client.get("counter") == b"3"
