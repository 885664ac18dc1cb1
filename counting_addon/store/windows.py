"""Requests over the last minute, hour and day: which Redis keys hold them, how long each lives,
and which a reader sums. Pure: every clock is a parameter.

A request is stamped with the whole Unix second its headers arrived in (by its proxy's clock)
and counts in three buckets: its second, its minute and its hour, each a key of its own beside
the counter (its Cluster slot), written by the batch script with the request's count. A bucket
lives exactly as long as some window still covers it, by the writer's clock, then Redis drops
it: no key outlives its window. A reader sums the buckets of each window ending with the
current, partial one: 60 seconds, 60 minutes, 24 hours, 144 keys in one MGET-like read, never
86,400 fields. Counts written late (after an outage, a lost reply) land in the buckets of the
time they arrived, or nowhere once no window covers that time any more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from counting_addon.store.keys import window_key


@dataclass(frozen=True, slots=True)
class Window:
    """A window of `buckets` buckets of `seconds` each, the current (partial) one included,
    shown as `name`; its buckets' keys end in `:<tag>:<bucket number>`."""

    name: str
    tag: str
    seconds: int
    buckets: int

    def bucket(self, second: int) -> int:
        """The bucket a request stamped `second` counts in: whole `seconds` since the epoch."""
        return second // self.seconds

    def lifetime_ms(self, bucket: int, now: float) -> int:
        """How long, from `now`, bucket `bucket` is still in the window (the window's first
        bucket until the one `buckets` later begins); 0 or less: never again."""
        return math.ceil(((bucket + self.buckets) * self.seconds - now) * 1000)

    def covered(self, now: float) -> range:
        """The buckets a reader at `now` sums: the current one and the `buckets - 1` before."""
        current = math.floor(now) // self.seconds
        return range(current - self.buckets + 1, current + 1)


WINDOWS = (
    Window("last_minute", "s", 1, 60),
    Window("last_hour", "m", 60, 60),
    Window("last_day", "h", 3600, 24),
)
# The longest a request's stamp matters: once it is older than this, no window covers it.
HORIZON = max(w.seconds * w.buckets for w in WINDOWS)


@dataclass(frozen=True, slots=True)
class BucketWrite:
    """Add `amount` to the bucket at `key`; if that makes the key, it expires in
    `lifetime_ms`."""

    key: str
    amount: int
    lifetime_ms: int


def bucket_writes(key: str, seconds: Iterable[tuple[int, int]], now: float) -> list[BucketWrite]:
    """The buckets to add requests stamped (second, count) to, written at `now` beside counter
    `key`: one write per bucket, those no window covers any more left out."""
    writes: list[BucketWrite] = []
    for window in WINDOWS:
        amounts: dict[int, int] = {}
        for second, count in seconds:
            bucket = window.bucket(second)
            amounts[bucket] = amounts.get(bucket, 0) + count
        for bucket, amount in sorted(amounts.items()):
            lifetime = window.lifetime_ms(bucket, now)
            if lifetime > 0 and amount:
                writes.append(BucketWrite(window_key(key, window.tag, bucket), amount, lifetime))
    return writes


def read_keys(key: str, now: float) -> list[list[str]]:
    """For each window (WINDOWS' order), the keys a reader at `now` sums."""
    return [[window_key(key, w.tag, b) for b in w.covered(now)] for w in WINDOWS]


def compacted(seconds: Mapping[int, int], newest: int) -> dict[int, int]:
    """`seconds` (stamp: count) with the stamps no second-window can cover any more, as seen
    from `newest`, moved to the start of their minute, those no minute-window can cover to the
    start of their hour, and those past every window dropped: the same counts in every bucket
    a later write can still reach, in at most a few hundred stamps however long Redis is
    away."""
    out: dict[int, int] = {}
    for second, count in seconds.items():
        age = newest - second
        if age >= HORIZON:
            continue
        for window in WINDOWS:
            if age < window.seconds * window.buckets:
                stamp = window.bucket(second) * window.seconds
                out[stamp] = out.get(stamp, 0) + count
                break
    return out
