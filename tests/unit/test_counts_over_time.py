"""Requests over the last minute, hour and day, and body bytes, in a real Redis: written in the
same batch as the total, credited to the time requests arrived whenever the batch lands, read
in one round trip, emptied by a reset. The clock is the counter's parameter: nothing here
waits out real time."""

from __future__ import annotations

import redis

from counting_addon.store.counter import RedisCounter
from counting_addon.store.failures import FailureKind
from counting_addon.store.shared import Windows
from counting_addon.store.url import parse
from tests.support.in_process import BACKOFF_CAP
from tests.support.processes import stays_pending
from tests.support.redis_admin import script_calls

# 2026-12-06 12:00:00 UTC.
NOON = 1_796_558_400


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counter(redis_url: str, clock: Clock) -> RedisCounter:
    return RedisCounter(parse(redis_url), "counter", clock=clock)


def add(c: RedisCounter, *seconds: int) -> None:
    for second in seconds:
        c.add(second=second)


async def windows(c: RedisCounter) -> Windows | None:
    return (await c.read_shared(windows=True)).windows


async def test_the_windows_count_requests_by_when_they_arrived(redis_url: str) -> None:
    clock = Clock(NOON + 0.5)
    c = counter(redis_url, clock)
    add(c, NOON - 7200, NOON - 600, NOON - 600, NOON - 30, NOON)
    assert await windows(c) == Windows(last_minute=2, last_hour=4, last_day=5)
    clock.now = NOON + 30.5  # NOON - 30 leaves the minute
    assert await windows(c) == Windows(last_minute=1, last_hour=4, last_day=5)
    clock.now = NOON + 3000.5  # NOON - 600 leaves the hour
    assert await windows(c) == Windows(last_minute=0, last_hour=2, last_day=5)
    clock.now = NOON + 3600 * 22 + 0.5  # NOON - 7200 leaves the day
    assert await windows(c) == Windows(last_minute=0, last_hour=0, last_day=4)
    await c.close(1.0)


async def test_the_windows_are_shared_by_every_proxy(redis_url: str) -> None:
    clock = Clock(NOON + 0.5)
    one, two = counter(redis_url, clock), counter(redis_url, clock)
    add(one, NOON, NOON)
    add(two, NOON - 1, NOON - 3601)
    await one.read()
    assert await windows(two) == Windows(2 + 1, 2 + 1, 2 + 2)
    assert await windows(one) == await windows(two)
    await one.close(1.0)
    await two.close(1.0)


async def test_counts_written_late_land_in_the_time_they_arrived(redis_url: str) -> None:
    """Counts that waited 90 s (an outage): in the last hour, not in the last minute."""
    clock = Clock(NOON + 0.5)
    c = counter(redis_url, clock)
    add(c, NOON)
    clock.now = NOON + 90.5  # written only now
    assert await windows(c) == Windows(0, 1, 1)
    await c.close(1.0)


async def test_no_bucket_outlives_its_window(redis_url: str, redis_client: redis.Redis) -> None:
    clock = Clock(NOON + 0.25)
    c = counter(redis_url, clock)
    add(c, NOON)
    await c.read()
    lifetimes = {
        key.decode().split(":")[1]: redis_client.pttl(key)
        for key in redis_client.scan_iter("{counter}:[smh]:*")
    }
    # Each key's lifetime counts from the writer's clock: what is left of its window.
    assert 59_000 < lifetimes["s"] <= 59_750
    assert 3_599_000 < lifetimes["m"] <= 3_599_750
    assert 86_399_000 < lifetimes["h"] <= 86_399_750
    await c.close(1.0)


async def test_reading_the_windows_is_one_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    clock = Clock(NOON + 0.5)
    c = counter(redis_url, clock)
    add(c, NOON)
    await c.read()  # the script loaded, nothing pending
    before = script_calls(redis_client)
    assert await windows(c) == Windows(1, 1, 1)  # the read script
    add(c, NOON)
    assert await windows(c) == Windows(2, 2, 2)  # the write, its reply carrying them
    assert script_calls(redis_client) - before == 2
    await c.close(1.0)


async def test_a_reset_empties_the_windows_and_the_bytes(
    redis_url: str, redis_client: redis.Redis
) -> None:
    clock = Clock(NOON + 0.5)
    c = counter(redis_url, clock)
    add(c, NOON, NOON - 100, NOON - 4000)
    c.add_bytes(10, 20)
    await c.read()
    c.reset()
    shared = await c.read_shared(windows=True)
    assert (shared.windows, shared.request_bytes, shared.response_bytes) == (Windows(0, 0, 0), 0, 0)
    assert list(redis_client.scan_iter("{counter}:[smh]:*")) == []
    await c.close(1.0)


async def test_body_bytes_are_shared_and_exact(redis_url: str, redis_client: redis.Redis) -> None:
    clock = Clock(NOON)
    one, two = counter(redis_url, clock), counter(redis_url, clock)
    one.add_bytes(5, 2**40)
    two.add_bytes(7, 0)
    await one.read()
    shared = await two.read_shared()
    assert (shared.request_bytes, shared.response_bytes) == (12, 2**40)
    assert redis_client.hgetall("{counter}:bytes") == {
        b"request": b"12",
        b"response": b"1099511627776",
    }
    await one.close(1.0)
    await two.close(1.0)


async def test_a_bucket_that_is_not_an_integer_fails_the_batch_before_any_write(
    redis_url: str, redis_client: redis.Redis
) -> None:
    clock = Clock(NOON + 0.5)
    c = RedisCounter(parse(redis_url), "counter", clock=clock, backoff_cap=BACKOFF_CAP)
    redis_client.set(f"{{counter}}:s:{NOON}", "abc")
    add(c, NOON)
    c.add_bytes(1, 1)
    await stays_pending(c.read(), lambda: c.problem is not None, "a failed write")
    assert c.problem is not None and c.problem.kind is FailureKind.NOT_AN_INTEGER
    assert (redis_client.get("counter"), redis_client.exists("{counter}:bytes")) == (None, 0)
    redis_client.delete(f"{{counter}}:s:{NOON}")
    assert await c.read() == 1
    assert await windows(c) == Windows(1, 1, 1)
    await c.close(1.0)
