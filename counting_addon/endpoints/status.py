"""The /status endpoint: the shared count and this process's uptime, as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from counting_addon.endpoints.answers import READ_TIMEOUT, json_response, read_shared
from counting_addon.process import PROCESS
from counting_addon.store.shared import Shared

if TYPE_CHECKING:
    from counting_addon.traffic.counting import CountRequests


class StatusEndpoint:
    """Answers GET on the status path (counter_status_path, rules.py) with the shared count
    and this process's uptime; 503 with the reason while Redis can't say."""

    name = "status"

    def __init__(self, counting: CountRequests, read_timeout: float = READ_TIMEOUT) -> None:
        self.counting = counting
        self.read_timeout = read_timeout
        self.path = "/status"

    async def answer(self, flow: http.HTTPFlow) -> http.Response:
        counter = self.counting.counter
        assert counter, "configure() runs before any flow"
        shared = await read_shared(counter, self.read_timeout)
        if isinstance(shared, Shared):
            return json_response(200, {"counter": shared.requests, "uptime": PROCESS.uptime()})
        return json_response(
            503, {"error": str(shared), "uptime": PROCESS.uptime(), "pending": counter.unwritten}
        )
