"""Process-wide state: what one proxy process keeps from start to exit, across script reloads.

mitmproxy re-runs addon.py on a script reload, making new addons, but does not import this
package's modules again: what lives here is the process's, not an addon instance's.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.process_collector import ProcessCollector

from counting_addon.code_class import CodeClass, no_responses

# prometheus_client's default buckets, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# A Redis write takes well under a millisecond on a LAN; seconds mean trouble.
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Observations counted per bucket (not cumulative; the last bucket is +Inf) and summed."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le, "<=").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of observations <= le) per bucket, as Prometheus exposes them."""
        buckets, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


@dataclass(slots=True)
class ProcessStats:
    """This process's own figures for /metrics: plain integers bumped per request, turned into
    Prometheus metric families only when scraped (prometheus_client's metric objects take a
    lock on every update, which would cost more per request than the rest of the addon)."""

    requests: int = 0
    responses: dict[CodeClass, int] = field(default_factory=no_responses)
    # Body bytes as they travelled (traffic/body_bytes.py), WebSocket messages' included.
    request_bytes: int = 0
    response_bytes: int = 0
    request_duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    redis_writes: int = 0
    redis_write_duration: Histogram = field(default_factory=lambda: Histogram(WRITE_BUCKETS))


class RunningCounter(Protocol):
    """A counter whose writer task runs (store/counter.py's RedisCounter)."""

    def shut_down(self, bound: float) -> None: ...

    async def close(self, bound: float) -> int: ...


@dataclass(slots=True, eq=False)
class Process:
    """The state of this proxy process."""

    # When the package was first imported, at proxy start-up (monotonic clock).
    started: float
    stats: ProcessStats
    # Every counter whose writer task runs, retired ones included: shutdown writes what each
    # has left, whichever addon instance made it.
    counters: set[RunningCounter]
    # CPU, memory, descriptors and start time of this process for /metrics (from /proc: Linux
    # only). Not in prometheus_client's global registry, where a reload would register it twice.
    metrics: ProcessCollector

    def uptime(self, now: float | None = None) -> int:
        """Whole seconds since start-up."""
        return int((time.monotonic() if now is None else now) - self.started)


PROCESS = Process(time.monotonic(), ProcessStats(), set(), ProcessCollector(registry=None))
