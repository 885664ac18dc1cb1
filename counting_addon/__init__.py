"""A mitmproxy addon that counts proxied requests in Redis and answers /status and /metrics."""

from __future__ import annotations

from collections.abc import Awaitable

from mitmproxy import connection, http, tls
from mitmproxy.addonmanager import Loader

from counting_addon.access import AccessControl
from counting_addon.body_framing import FrameUnknownLengthBodies
from counting_addon.commands import CounterCommands
from counting_addon.counting import CountRequests, Shutdown
from counting_addon.endpoints import Endpoints
from counting_addon.metrics import MetricsEndpoint
from counting_addon.status import StatusEndpoint
from counting_addon.streaming import StreamBodies

__all__ = [
    "AccessControl",
    "CountRequests",
    "CounterCommands",
    "CountingProxy",
    "Endpoints",
    "FrameUnknownLengthBodies",
    "MetricsEndpoint",
    "StatusEndpoint",
    "StreamBodies",
]


class CountingProxy(CounterCommands):
    """The whole addon: the proxy's own endpoints (/status, /metrics) and who may ask them, the
    request and response counter, body streaming and the framing of HTTP/2 bodies of unknown
    length, each a part by name; and the counter's commands (counter.get, .reset, .flush),
    inherited, so that mitmproxy has no child addon to walk on every hook it calls.

    mitmproxy sees this one addon, which hands each hook to the parts that have it, in order.
    mitmproxy charges every addon that has a hook about 15,000 instructions per call (it looks
    the hook up along its whole addon chain and rebuilds the hook's arguments for each), so
    seven parts as seven addons cost twice as much per request as the parts' own work; called
    from here, a part's hook costs a plain method call (benchmarks/instructions.sh).
    """

    def __init__(self) -> None:
        self.counting = CountRequests()
        self.status = StatusEndpoint(self.counting)
        self.metrics = MetricsEndpoint(self.counting)
        self.access = AccessControl()
        self.endpoints = Endpoints([self.status, self.metrics], self.access)
        self.streaming = StreamBodies()
        self.framing = FrameUnknownLengthBodies()

    def load(self, loader: Loader) -> None:
        for part in (self.status, self.metrics, self.access, self.counting, self.streaming):
            part.load(loader)

    def configure(self, updated: set[str]) -> None:
        # The status path is configured before the metrics endpoint checks that the two differ.
        self.status.configure(updated)
        self.metrics.configure(updated)
        self.access.configure(updated)
        self.endpoints.configure(updated)
        self.counting.configure(updated)
        self.streaming.configure(updated)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # The endpoints mark their flows first: the other parts skip them.
        self.endpoints.requestheaders(flow)
        self.counting.requestheaders(flow)
        self.streaming.requestheaders(flow)
        self.framing.requestheaders(flow)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        self.framing.request(flow)
        # An endpoint's answer, for mitmproxy to await; None for every other request.
        return self.endpoints.request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.streaming.responseheaders(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.counting.response(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.counting.error(flow)
        self.framing.error(flow)

    def tls_established_server(self, data: tls.TlsData) -> None:
        self.framing.tls_established_server(data)

    def client_disconnected(self, client: connection.Client) -> None:
        self.framing.client_disconnected(client)

    def done(self) -> Shutdown:
        return self.counting.done()
