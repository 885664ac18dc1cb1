"""What /metrics exposes, as prometheus_client metric families built from one scrape's figures.

A custom collector rather than prometheus_client's Counter and Histogram objects: the figures
are plain integers the addon keeps anyway (process.py) and the shared ones come from
Redis, read once per scrape. prometheus_client only formats them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from counting_addon.code_class import CodeClass
from counting_addon.process import PROCESS, Histogram, ProcessStats
from counting_addon.store.shared import Shared

PREFIX = "counting_addon_"


def by_class(name: str, documentation: str, counts: dict[CodeClass, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["code_class"])
    for code_class in CodeClass:
        family.add_metric([code_class.value], counts.get(code_class, 0))
    return family


def histogram(name: str, documentation: str, observed: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=observed.cumulative(), sum_value=observed.sum
    )


class CountingCollector(Collector):
    """One scrape: this process's figures, and the shared ones when Redis could be read.

    `shared` None means Redis could not be read: the shared families are left out rather than
    shown stale or as 0, and redis_up is 0.
    """

    def __init__(
        self,
        stats: ProcessStats,
        pending: int,
        shared: Shared | None,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.stats = stats
        self.pending = pending
        self.shared = shared
        # The series' label names, as Prometheus takes them (header_x_client_id).
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        if self.shared is not None:
            yield CounterMetricFamily(
                PREFIX + "shared_requests",
                "Requests counted in Redis by every proxy sharing the key (the same number as "
                "/status's counter). Every instance reports it: take the max, never the sum.",
                value=self.shared.requests,
            )
            yield by_class(
                PREFIX + "shared_responses",
                "Responses by status class counted in Redis by every proxy sharing the key. "
                "Every instance reports them: take the max, never the sum.",
                self.shared.responses,
            )
            yield CounterMetricFamily(
                PREFIX + "shared_request_bytes",
                "Request body bytes received from clients, counted in Redis by every proxy "
                "sharing the key. Take the max across instances, never the sum.",
                value=self.shared.request_bytes,
            )
            yield CounterMetricFamily(
                PREFIX + "shared_response_bytes",
                "Response body bytes sent to clients, counted in Redis by every proxy sharing "
                "the key. Take the max across instances, never the sum.",
                value=self.shared.response_bytes,
            )
            if self.shared.series is not None:
                by = CounterMetricFamily(
                    PREFIX + "shared_requests_by",
                    "Requests counted in Redis by every proxy sharing the key, by the labels of "
                    "counter_by; they sum to shared_requests. Take the max across instances.",
                    labels=list(self.labels),
                )
                for values, count in self.shared.series.items():
                    by.add_metric(list(values), count)
                yield by
        stats = self.stats
        yield CounterMetricFamily(
            PREFIX + "requests", "Requests this process proxied.", value=stats.requests
        )
        yield by_class(
            PREFIX + "responses",
            "Responses this process passed to clients, by status class.",
            stats.responses,
        )
        yield CounterMetricFamily(
            PREFIX + "request_bytes",
            "Request body bytes this process received from clients (WebSocket messages "
            "included), as they travelled: no chunked or frame overhead, compressed if sent so.",
            value=stats.request_bytes,
        )
        yield CounterMetricFamily(
            PREFIX + "response_bytes",
            "Response body bytes this process sent to clients (WebSocket messages included), "
            "as they travelled: no chunked or frame overhead, compressed if sent so.",
            value=stats.response_bytes,
        )
        yield histogram(
            PREFIX + "request_duration_seconds",
            "Time from a request's headers to the end of its response, in this process.",
            stats.request_duration,
        )
        yield GaugeMetricFamily(
            PREFIX + "pending_counts",
            "Counts of this process not yet acknowledged by Redis.",
            value=self.pending,
        )
        yield GaugeMetricFamily(
            PREFIX + "redis_up",
            "1 if this scrape read the shared counts from Redis, else 0.",
            value=int(self.shared is not None),
        )
        yield CounterMetricFamily(
            PREFIX + "redis_writes",
            "Batches of counts this process wrote to Redis.",
            value=stats.redis_writes,
        )
        yield histogram(
            PREFIX + "redis_write_duration_seconds",
            "Time each batch write to Redis took, from this process.",
            stats.redis_write_duration,
        )


def registry(
    stats: ProcessStats, pending: int, shared: Shared | None, labels: tuple[str, ...] = ()
) -> CollectorRegistry:
    """A registry for one scrape, with this process's CPU, memory and descriptors: built anew
    each time (a few objects), so nothing carries over between scrapes or script reloads."""
    scrape = CollectorRegistry()
    scrape.register(PROCESS.metrics)
    scrape.register(CountingCollector(stats, pending, shared, labels))
    return scrape
