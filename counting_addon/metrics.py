"""The /metrics endpoint: the shared counts and this process's figures for Prometheus."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from prometheus_client.exposition import choose_encoder

from counting_addon import collector
from counting_addon.endpoints import READ_TIMEOUT, check_path
from counting_addon.option_errors import reported_cleanly
from counting_addon.process_stats import STATS
from counting_addon.redis_counter import CounterUnavailable
from counting_addon.response_classes import Shared

if TYPE_CHECKING:
    from counting_addon.counting import CountRequests
    from counting_addon.redis_counter import RedisCounter


def parse_metrics_path(value: str) -> str | None:
    """The metrics path; None (the endpoint off) for an empty value."""
    if value == "":
        return None
    check_path(value)
    return value


async def shared_counts(counter: RedisCounter) -> Shared | None:
    """The shared counts, or None if Redis can't give them within READ_TIMEOUT.

    A scrape must never hang or fail because Redis does: while the writer already knows Redis
    is failing, don't wait at all.
    """
    if counter.problem is not None:
        return None
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await counter.read_shared()
    except (CounterUnavailable, TimeoutError):
        return None


class MetricsEndpoint:
    """Answers GET on the metrics path in Prometheus's text format, or OpenMetrics when the
    scraper asks for it; the rules every endpoint follows are in endpoints.py."""

    name = "metrics"

    def __init__(self, counting: CountRequests) -> None:
        self.counting = counting
        self.path: str | None = "/metrics"

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_metrics_path",
            str,
            "/metrics",
            "Path answered by the proxy itself, in reverse mode only, with Prometheus metrics: "
            "the shared counts in Redis and this process's own. The query string is ignored. "
            "Empty: no metrics endpoint, the path is proxied.",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        if not {"counter_metrics_path", "counter_status_path"} & updated:
            return
        name = (
            "counter_metrics_path" if "counter_metrics_path" in updated else "counter_status_path"
        )
        try:
            path = parse_metrics_path(ctx.options.counter_metrics_path)
        except ValueError as e:
            raise exceptions.OptionsError(f"counter_metrics_path: {e}") from None
        if path is not None and path == ctx.options.counter_status_path:
            raise exceptions.OptionsError(
                f"{name}: counter_metrics_path and counter_status_path are both {path!r}; "
                "they must differ"
            )
        self.path = path

    async def answer(self, flow: http.HTTPFlow) -> http.Response:
        counter = self.counting.counter
        assert counter, "configure() runs before any flow"
        # Read first: it writes this process's counts, which the pending gauge then reflects.
        shared = await shared_counts(counter)
        scrape = collector.registry(STATS, counter.unwritten, shared)
        encode, content_type = choose_encoder(flow.request.headers.get("accept", ""))
        return http.Response.make(
            200, encode(scrape), {"Content-Type": content_type, "Cache-Control": "no-store"}
        )
