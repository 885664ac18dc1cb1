"""The /status endpoint: the shared counts and this process's uptime, as JSON; to a browser, the
live page that shows them (live_page.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from mitmproxy import http

from counting_addon.code_class import CodeClass
from counting_addon.endpoints.answers import READ_TIMEOUT, json_response, read_shared
from counting_addon.endpoints.live_page import page_response
from counting_addon.endpoints.negotiation import prefers_html
from counting_addon.process import PROCESS
from counting_addon.store.ledger import Values
from counting_addon.store.shared import Shared, largest_first

if TYPE_CHECKING:
    from counting_addon.traffic.counting import CountRequests


def accepts_stale(cache_control: str) -> bool:
    """Whether a request's Cache-Control has `max-stale` (RFC 9111 5.2.1.2: the client takes
    an answer that is not the freshest): /status then answers with the counts in Redis now,
    without waiting for this process's own to be written (counter.py)."""
    directives = (d.split("=", 1)[0].strip().lower() for d in cache_control.split(","))
    return "max-stale" in directives


def by_series(labels: tuple[str, ...], series: dict[Values, int]) -> list[dict[str, object]]:
    """/status's "by": one object per series, its labels then its count, the largest first
    (then by labels)."""
    return [
        {**dict(zip(labels, values, strict=True)), "count": n}
        for values, n in largest_first(series)
    ]


class StatusEndpoint:
    """Answers GET on the status path (counter_status_path, rules.py) with the shared count
    and this process's uptime, then the shared requests of the last minute, hour and day and
    the body bytes both ways, the responses by class, and the series when counted by labels;
    503 with the reason while Redis can't say. A client that prefers HTML (a browser) gets
    the live page instead, which reads Redis by polling the JSON, not here."""

    name = "status"

    def __init__(self, counting: CountRequests, read_timeout: float = READ_TIMEOUT) -> None:
        self.counting = counting
        self.read_timeout = read_timeout
        self.path = "/status"

    async def answer(self, flow: http.HTTPFlow) -> http.Response:
        # Several Accept lines are one list (RFC 9110, 5.3): mitmproxy's Headers joins them.
        if prefers_html(flow.request.headers.get("accept")):
            return page_response()
        response = await self.json_answer(flow)
        response.headers["Vary"] = "Accept"
        return response

    async def json_answer(self, flow: http.HTTPFlow) -> http.Response:
        counter = self.counting.counter
        assert counter, "configure() runs before any flow"
        own_counts = not accepts_stale(flow.request.headers.get("Cache-Control", ""))
        shared = await read_shared(counter, self.read_timeout, True, own_counts)
        if isinstance(shared, Shared):
            body: dict[str, object] = {"counter": shared.requests, "uptime": PROCESS.uptime()}
            if shared.windows is not None:
                body.update(asdict(shared.windows))
            body["request_bytes"] = shared.request_bytes
            body["response_bytes"] = shared.response_bytes
            body["responses"] = {c.value: shared.responses.get(c, 0) for c in CodeClass}
            if shared.series is not None:
                body["by"] = by_series(counter.series.labels, shared.series)
            return json_response(200, body)
        return json_response(
            503, {"error": str(shared), "uptime": PROCESS.uptime(), "pending": counter.unwritten}
        )
