"""Requests over the last minute, hour and day: the buckets, their lifetimes, what a reader sums
and how pending stamps compact, with the clock a parameter."""

from __future__ import annotations

import pytest

from counting_addon.store.windows import (
    HORIZON,
    WINDOWS,
    BucketWrite,
    bucket_writes,
    compacted,
    read_keys,
)

MINUTE, HOUR, DAY = WINDOWS
# 2026-12-06 12:00:00 UTC: a whole hour, a whole minute.
NOON = 1_796_558_400
assert NOON % 3600 == 0


def key(tag: str, bucket: int) -> str:
    """A bucket's key beside counter `counter`."""
    return f"{{counter}}:{tag}:{bucket}"


@pytest.mark.parametrize(
    ("window", "second", "bucket"),
    [
        (MINUTE, NOON, NOON),
        (MINUTE, NOON + 59, NOON + 59),
        (HOUR, NOON + 59, NOON // 60),
        (HOUR, NOON + 60, NOON // 60 + 1),
        (DAY, NOON + 3599, NOON // 3600),
        (DAY, NOON + 3600, NOON // 3600 + 1),
    ],
)
def test_a_request_counts_in_the_bucket_of_its_second_minute_and_hour(
    window: object, second: int, bucket: int
) -> None:
    assert isinstance(window, type(MINUTE))
    assert window.bucket(second) == bucket


@pytest.mark.parametrize(
    ("now", "covered"),
    [
        # The current, partial second and the 59 before it.
        (NOON + 0.5, range(NOON - 59, NOON + 1)),
        (NOON + 59.999, range(NOON, NOON + 60)),
    ],
)
def test_the_last_minute_is_the_current_second_and_the_59_before(
    now: float, covered: range
) -> None:
    assert MINUTE.covered(now) == covered
    assert len(MINUTE.covered(now)) == 60


def test_the_last_hour_and_day_include_the_current_minute_and_hour() -> None:
    now = NOON + 3600 + 61.5  # 13:01:01.5
    assert HOUR.covered(now)[-1] == (NOON + 3600 + 60) // 60
    assert len(HOUR.covered(now)) == 60
    assert DAY.covered(now)[-1] == NOON // 3600 + 1
    assert DAY.covered(now)[0] == NOON // 3600 + 1 - 23


@pytest.mark.parametrize(
    ("window", "bucket", "now", "lifetime_ms"),
    [
        # A second is in the last minute until 60 s after it began.
        (MINUTE, NOON, NOON + 0.25, 59_750),
        (MINUTE, NOON, NOON + 59.999, 1),
        (MINUTE, NOON, NOON + 60, 0),
        (MINUTE, NOON, NOON + 3600, -3_540_000),
        # A minute is in the last hour until 60 minutes after it began.
        (HOUR, NOON // 60, NOON + 30, 3_570_000),
        # An hour is in the last day until 24 hours after it began.
        (DAY, NOON // 3600, NOON + 1, 86_399_000),
    ],
)
def test_a_bucket_lives_exactly_until_its_window_leaves_it(
    window: object, bucket: int, now: float, lifetime_ms: int
) -> None:
    assert isinstance(window, type(MINUTE))
    assert window.lifetime_ms(bucket, now) == lifetime_ms


def test_every_bucket_a_reader_sums_is_alive_and_no_other() -> None:
    """The windows' two rules agree: the buckets read at `now` are those still living."""
    for window in WINDOWS:
        for now in (NOON + 0.0, NOON + 0.5, NOON + 59.999, NOON + 3599.5):
            covered = window.covered(now)
            for bucket in range(covered.start - 3, covered.stop + 1):
                if bucket < covered.stop:  # not in the future
                    alive = window.lifetime_ms(bucket, now) > 0
                    assert alive == (bucket in covered), (window.name, now, bucket)


def test_writes_merge_a_batchs_seconds_into_one_write_per_bucket() -> None:
    writes = bucket_writes("counter", [(NOON + 1, 2), (NOON + 2, 3)], now=NOON + 2.5)
    assert writes == [
        BucketWrite(key("s", NOON + 1), 2, 58_500),
        BucketWrite(key("s", NOON + 2), 3, 59_500),
        BucketWrite(key("m", NOON // 60), 5, 3_597_500),
        BucketWrite(key("h", NOON // 3600), 5, 86_397_500),
    ]


def test_late_counts_land_in_their_own_time_or_nowhere() -> None:
    """Written 2 hours after they arrived (an outage): no second or minute of the last minute
    or hour covers them any more; their hour, in the last day, does."""
    writes = bucket_writes("counter", [(NOON + 5, 4)], now=NOON + 7200 + 5)
    assert writes == [BucketWrite(key("h", NOON // 3600), 4, 79_195_000)]
    assert bucket_writes("counter", [(NOON, 1)], now=NOON + 86_400) == []


def test_the_buckets_share_the_counters_cluster_slot() -> None:
    writes = bucket_writes("app{tag}", [(NOON, 1)], now=NOON)
    assert {w.key.split(":")[0] for w in writes} == {"app{tag}"}
    groups = read_keys("counter", NOON + 0.5)
    assert [len(g) for g in groups] == [60, 60, 24]
    assert groups[0][-1] == key("s", NOON)
    assert groups[2][0] == key("h", NOON // 3600 - 23)


@pytest.mark.parametrize(
    ("stamps", "newest", "expected"),
    [
        # Within the last minute: kept to the second.
        ({NOON + 10: 1, NOON + 69: 2}, NOON + 69, {NOON + 10: 1, NOON + 69: 2}),
        # A minute or more old: to its minute's start, merged with its neighbours.
        (
            {NOON + 1: 1, NOON + 2: 2, NOON + 100: 3},
            NOON + 100,
            {NOON: 3, NOON + 100: 3},
        ),
        # An hour or more old: to its hour's start.
        ({NOON + 61: 1, NOON + 3700: 1}, NOON + 3700, {NOON: 1, NOON + 3700: 1}),
        # A day or more old: gone, no window will ever cover it.
        ({NOON: 5, NOON + HORIZON: 1}, NOON + HORIZON, {NOON + HORIZON: 1}),
    ],
)
def test_compacting_keeps_every_bucket_a_later_write_can_reach(
    stamps: dict[int, int], newest: int, expected: dict[int, int]
) -> None:
    assert compacted(stamps, newest) == expected


def test_compacting_changes_no_write_made_after_it() -> None:
    stamps = {NOON + i * 37: i + 1 for i in range(3000)}  # 31 hours of stamps
    newest = max(stamps)
    small = compacted(stamps, newest)
    assert len(small) < 200
    for later in (newest, newest + 0.5, newest + 59, newest + 3000):
        assert bucket_writes("c", small.items(), later) == bucket_writes("c", stamps.items(), later)
