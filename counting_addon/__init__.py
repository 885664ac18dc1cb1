"""A mitmproxy addon that counts proxied requests in Redis and answers /status and /metrics."""

from __future__ import annotations

from counting_addon.access import AccessControl
from counting_addon.body_framing import FrameUnknownLengthBodies
from counting_addon.counting import CountRequests
from counting_addon.endpoints import Endpoints
from counting_addon.metrics import MetricsEndpoint
from counting_addon.status import StatusEndpoint
from counting_addon.streaming import StreamBodies

__all__ = [
    "AccessControl",
    "CountRequests",
    "CountingProxy",
    "Endpoints",
    "FrameUnknownLengthBodies",
    "MetricsEndpoint",
    "StatusEndpoint",
    "StreamBodies",
]


class CountingProxy:
    """The whole addon: the proxy's own endpoints (/status, /metrics) and who may ask them,
    the request counter, body streaming and the framing of HTTP/2 bodies of unknown length,
    each by name."""

    def __init__(self) -> None:
        self.counting = CountRequests()
        self.status = StatusEndpoint(self.counting)
        self.metrics = MetricsEndpoint(self.counting)
        self.access = AccessControl()
        self.endpoints = Endpoints([self.status, self.metrics], self.access)
        self.streaming = StreamBodies()
        self.framing = FrameUnknownLengthBodies()
        # Order matters: the endpoints mark their flows before the others skip them; the
        # status path is configured before the metrics endpoint checks the two differ.
        self.addons = [
            self.status,
            self.metrics,
            self.access,
            self.endpoints,
            self.counting,
            self.streaming,
            self.framing,
        ]
