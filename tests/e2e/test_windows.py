"""End to end: /status's last_minute, last_hour and last_day through real mitmdumps and a real
redis-server, by the wall clock (the hour and day windows' own boundaries are tested in process,
tests/unit/test_windows.py).

Exact on fresh counts, the same on two proxies sharing a key, and, in one test that waits out
the only real minute of the file, through a Redis outage straddling a minute boundary: counts
held while Redis was away land in the minute they arrived in, and leave the last minute exactly
60 s after the second they arrived in, while the hour and the day keep them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.keys import window_key
from tests.support.http_client import send
from tests.support.processes import Proxy, ProxyFactory, wait_for
from tests.support.redis_admin import admin_of
from tests.support.time_and_bytes import (
    HOUR,
    MINUTE,
    SECOND,
    Counts,
    all_buckets,
    bucket,
    buckets_sum,
    counts_of,
    poll_counts,
)

FRESH = 25
# Two proxies on one key: requests through each.
THROUGH_A, THROUGH_B = 12, 7
# Every wait on the proxies or on Redis: generous for a busy 2-core machine.
SETTLE = 30.0
# The writer retries a failed write within 5 s (its backoff's cap); then /status answers.
RECOVERY = 15.0
# The held requests go out between these seconds of a minute: late enough that, once Redis is
# back in the next minute, their write and a /status read come before they leave the last
# minute (60 s after they arrived: restart, the writer's backoff of at most 5 s, a read: 15 s
# leaves twice that); early enough that they arrive before the minute ends, however slowly.
EARLIEST, LATEST = 15, 50
HELD, NEWER = 20, 6
# From the held requests' arrival to their leaving the last minute, plus a busy machine.
MINUTE_PASSES = 60.0 + 20.0
# One bucket's lifetime at most, in milliseconds: no key outlives the window it is in.
LIFETIMES = {SECOND: 60 * 1000, MINUTE: 3600 * 1000, HOUR: 24 * 3600 * 1000}


def test_fresh_requests_count_in_every_window_exactly_like_the_counter(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    """FRESH requests: each window says FRESH, as the counter does; in Redis, the buckets of
    each length sum to FRESH, and each expires within its window's length."""
    send(proxy.url, "/fresh", FRESH)
    counts = counts_of(proxy.url)
    assert (counts.counter, *counts.windows) == (FRESH,) * 4, counts
    for tag, lifetime in LIFETIMES.items():
        found = all_buckets(redis_client, tag)
        assert sum(found.values()) == FRESH, (tag, found)
        for number in found:
            ttl = redis_client.pttl(window_key("counter", tag, number))
            assert 0 < ttl <= lifetime, (tag, number, ttl)


def test_two_proxies_on_one_key_answer_the_same_windows_summing_both(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    a = start_proxy(upstream, redis_url)
    b = start_proxy(upstream, redis_url)
    send(a.url, "/through-a", THROUGH_A)
    send(b.url, "/through-b", THROUGH_B)
    total = THROUGH_A + THROUGH_B
    # Each proxy writes its own counts before it reads; the other's follow within its write
    # interval.
    answers = [
        poll_counts(p.url, lambda c: c.counter == total, SETTLE, f"{p.url}/status at {total}")
        for p in (a, b)
    ]
    assert answers[0].windows == answers[1].windows == (total,) * 3, answers


@dataclass(frozen=True)
class Answer:
    """A /status answer and when it was asked and answered (Unix seconds, the proxy's clock)."""

    asked: float
    answered: float
    counts: Counts


def wait_for_second_between(earliest: int, latest: int) -> int:
    """Until the wall clock is between those seconds of a minute (this one's or the next's);
    that minute's number since the epoch."""
    now = time.time()
    if not earliest <= now % 60 < latest:
        start = math.floor(now / 60) * 60 + earliest
        if start < now:
            start += 60
        wait_for(lambda: time.time() >= start, 60 + 5, f"second {earliest} of a minute")
    return math.floor(time.time() / 60)


def test_counts_held_over_a_minute_boundary_land_in_their_minute_and_leave_last_minute_on_time(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    """Redis stops; HELD requests arrive in minute M; Redis comes back only once minute M+1
    has begun, so they are written in M+1: they count in M's bucket, not M+1's, and in every
    window (still in the last minute). NEWER requests follow in M+1. Then /status is watched
    until the held ones leave the last minute: every answer in between keeps both in the hour
    and the day, and the last minute drops exactly when 60 s have passed since the held
    requests' seconds (an answer before then has them all, one asked after has none)."""
    p = start_proxy(upstream, own_redis.url)
    own_redis.stop()
    minute = wait_for_second_between(EARLIEST, LATEST)
    sent_from = time.time()
    send(p.url, "/held", HELD)
    sent_to = time.time()
    # The proxy stamped each request between these two readings of the same clock.
    first, last = math.floor(sent_from), math.floor(sent_to)
    assert last // 60 == minute, f"the held requests ran into the next minute ({sent_to % 60:.1f})"

    next_minute = (minute + 1) * 60
    wait_for(lambda: time.time() >= next_minute, 60 + 5, "the next minute")
    own_redis.start()  # same port, same data
    written = poll_counts(p.url, lambda c: c.counter == HELD, RECOVERY, f"counter == {HELD}")
    read_at = time.time()
    assert read_at < first + 60, f"written too late to see them in the last minute ({read_at})"
    assert written.windows == (HELD,) * 3, written
    with admin_of(own_redis) as client:
        assert bucket(client, MINUTE, minute) == HELD
        assert bucket(client, MINUTE, minute + 1) is None
        assert buckets_sum(client, SECOND, range(first, last + 1)) == HELD
        assert bucket(client, HOUR, minute // 60) == HELD
        # Lifetimes from the writer's clock: the minute's until an hour after its start.
        assert (
            0
            < client.pttl(window_key("counter", MINUTE, minute))
            <= ((minute + 60) * 60 - next_minute) * 1000
        )

    send(p.url, "/newer", NEWER)
    total = HELD + NEWER
    answers: list[Answer] = []

    def held_left_the_last_minute() -> bool:
        asked = time.time()
        counts = counts_of(p.url)
        answers.append(Answer(asked, time.time(), counts))
        return counts.last_minute == NEWER

    wait_for(held_left_the_last_minute, MINUTE_PASSES, "the held requests to leave last_minute")
    for answer in answers:
        assert (answer.counts.counter, *answer.counts.windows[1:]) == (total,) * 3, answer
        assert NEWER <= answer.counts.last_minute <= total, answer
        if answer.answered < first + 60:
            assert answer.counts.last_minute == total, answer
        if answer.asked >= last + 60:
            assert answer.counts.last_minute == NEWER, answer
    minutes = [a.counts.last_minute for a in answers]
    assert minutes == sorted(minutes, reverse=True), minutes
    dropped = answers[-1]
    print(
        f"\n  held at {sent_from % 60:.2f}..{sent_to % 60:.2f} s of minute {minute}, written "
        f"{read_at - next_minute:.2f} s into the next; last_minute {NEWER} from "
        f"{dropped.asked - first:.2f} s after their first second ({len(answers)} answers)"
    )
    assert dropped.answered >= first + 60, dropped
    with admin_of(own_redis) as client:
        assert bucket(client, MINUTE, minute) == HELD
        assert bucket(client, MINUTE, minute + 1) == NEWER
        # The held seconds' buckets expired with their window.
        wait_for(
            lambda: buckets_sum(client, SECOND, range(first, last + 1)) == 0,
            5,
            "the held seconds' buckets to expire",
        )
