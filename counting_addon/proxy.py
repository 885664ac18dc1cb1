"""CountingProxy: the one addon mitmproxy sees, handing each hook to its parts."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from mitmproxy import connection, http, tls
from mitmproxy.addonmanager import Loader

from counting_addon.commands import CounterCommands
from counting_addon.endpoints.rules import Endpoints, is_endpoint_flow
from counting_addon.traffic.body_length import request_head
from counting_addon.traffic.chunking import FrameUnknownLengthBodies
from counting_addon.traffic.counting import CountRequests, Shutdown
from counting_addon.traffic.streaming import StreamBodies
from counting_addon.traffic.websocket_history import BoundWebSocketHistory


class CountingProxy(CounterCommands):
    """The whole addon: the proxy's own endpoints (/status, /metrics, and who may ask them),
    the request and response counter, body streaming, the framing of HTTP/2 bodies of unknown
    length and the bound on each WebSocket's history of messages, each a part by name; and the
    counter's commands (counter.get, .reset, .flush), inherited, so that mitmproxy has no child
    addon to walk on every hook it calls.

    mitmproxy sees this one addon (its methods as the script's own names, script_names below),
    which hands each hook to the parts that have it, in order.
    mitmproxy charges every addon that has a hook about 15,000 instructions per call (it looks
    the hook up along its whole addon chain and rebuilds the hook's arguments for each), so
    the parts as addons of their own would cost twice as much per request as their own work;
    called from here, a part's hook costs a plain method call (benchmarks/instructions.sh).

    Which flows each part sees is decided here, once: the endpoints' flows go to the endpoints
    alone, the proxied ones to the other parts.
    """

    def __init__(self) -> None:
        self.counting = CountRequests()
        self.endpoints = Endpoints(self.counting)
        self.status = self.endpoints.status
        self.metrics = self.endpoints.metrics
        self.access = self.endpoints.access
        self.streaming = StreamBodies()
        self.framing = FrameUnknownLengthBodies()
        self.websocket_history = BoundWebSocketHistory()

    def load(self, loader: Loader) -> None:
        for part in (self.endpoints, self.counting, self.streaming, self.websocket_history):
            part.load(loader)

    def configure(self, updated: set[str]) -> None:
        self.endpoints.configure(updated)
        self.counting.configure(updated)
        self.streaming.configure(updated)
        self.websocket_history.configure(updated)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.error is not None:
            # Refused by mitmproxy before this hook: never proxied, and no part's business
            # but the counter's, which must count its error hook in no class.
            self.counting.refused(flow)
        elif not self.endpoints.claim(flow):
            self.counting.requestheaders(flow)
            # What the head says of the body, read once for the two parts that ask.
            head = request_head(flow.request)
            self.streaming.requestheaders(flow, head)
            self.framing.requestheaders(flow, head)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if is_endpoint_flow(flow):
            # The endpoint's answer, for mitmproxy to await.
            return self.endpoints.request(flow)
        self.framing.request(flow)
        return None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if not is_endpoint_flow(flow):
            self.streaming.responseheaders(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        if not is_endpoint_flow(flow):
            self.counting.response(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if not is_endpoint_flow(flow):
            self.counting.error(flow)
            self.framing.error(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if not is_endpoint_flow(flow):
            self.counting.websocket_message(flow)
            # After the counting, which reads the newest message: the history may drop it
            # (once every addon has seen it, websocket_history.py).
            self.websocket_history.websocket_message(flow)

    def tls_established_server(self, data: tls.TlsData) -> None:
        self.framing.tls_established_server(data)

    def client_disconnected(self, client: connection.Client) -> None:
        self.framing.client_disconnected(client)

    def done(self) -> Shutdown:
        return self.counting.done()


def script_names(proxy: CountingProxy) -> dict[str, Callable[..., object]]:
    """The proxy's hooks and commands (its public methods, bound), for the script (addon.py)
    to make its own names.

    On every hook call it makes, mitmproxy looks for the hook on a script's module, then walks
    down to each addon in the module's `addons` list (addonmanager.traverse): the 8 hook calls
    of every request (4 hooks, each followed by `update`) each go one level less deep when the
    hooks are the module's own: about 0.4% of bare mitmdump's instructions per request
    (docs/benchmarks/instructions.md, 2026-12-07).
    """
    return {
        name: getattr(proxy, name)
        for name, _ in inspect.getmembers(type(proxy), inspect.isfunction)
        if not name.startswith("_")
    }
