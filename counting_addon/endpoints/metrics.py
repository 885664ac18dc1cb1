"""The /metrics endpoint: the shared counts and this process's figures for Prometheus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http
from prometheus_client.exposition import choose_encoder

from counting_addon.endpoints import scrape
from counting_addon.endpoints.answers import READ_TIMEOUT, read_shared
from counting_addon.process import PROCESS
from counting_addon.series.labels import metric_label
from counting_addon.store.shared import Shared

if TYPE_CHECKING:
    from counting_addon.traffic.counting import CountRequests


class MetricsEndpoint:
    """Answers GET on the metrics path (counter_metrics_path, rules.py) in Prometheus's text
    format, or OpenMetrics when the scraper asks for it."""

    name = "metrics"

    def __init__(self, counting: CountRequests, read_timeout: float = READ_TIMEOUT) -> None:
        self.counting = counting
        self.read_timeout = read_timeout
        self.path: str | None = "/metrics"

    async def answer(self, flow: http.HTTPFlow) -> http.Response:
        counter = self.counting.counter
        assert counter, "configure() runs before any flow"
        # A scrape must never hang or fail because Redis does: while the writer already knows
        # Redis is failing, don't wait at all; else read first, which writes this process's
        # counts, which the pending gauge then reflects.
        shared = None
        if counter.problem is None:
            read = await read_shared(counter, self.read_timeout)
            shared = read if isinstance(read, Shared) else None
        labels = tuple(map(metric_label, counter.series.labels))
        figures = scrape.registry(PROCESS.stats, counter.unwritten, shared, labels)
        encode, content_type = choose_encoder(flow.request.headers.get("accept", ""))
        return http.Response.make(
            200, encode(figures), {"Content-Type": content_type, "Cache-Control": "no-store"}
        )
