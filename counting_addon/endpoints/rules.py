"""The proxy's own endpoints (/status, /metrics): the rules they share, applied in one place.

In reverse mode only, a request whose path is an endpoint's is answered by the proxy: GET and
HEAD by the endpoint, other methods 405, clients outside `counter_allow_from` 403 whatever the
method. It is never forwarded, counted or streamed, and is marked in mitmweb. A body larger than
the proxy would buffer, or of unknown length, is refused unread, from any client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.net.http.http1 import expected_http_body_size
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode
from mitmproxy.utils import human

from counting_addon.endpoints.access import AccessControl
from counting_addon.endpoints.answers import json_response, respond
from counting_addon.endpoints.metrics import MetricsEndpoint
from counting_addon.endpoints.status import StatusEndpoint
from counting_addon.options import blaming, parsed, reported_cleanly
from counting_addon.traffic.body_length import unknown_length

if TYPE_CHECKING:
    from counting_addon.traffic.counting import CountRequests

logger = logging.getLogger(__name__)

# Endpoint requests are answered after their body is read; a larger or unknown body is refused
# by closing the connection rather than buffering it.
MAX_ENDPOINT_BODY = 64 * 1024
ALLOWED = ("GET", "HEAD")
# Marks the flows the proxy answers itself, with the endpoint's name: the other addons neither
# count nor stream them.
ENDPOINT_FLOW = "counting_addon.endpoint"


class Endpoint(Protocol):
    """What an endpoint addon offers: its name, its path (None: off) and its answer to a GET."""

    name: str

    @property
    def path(self) -> str | None: ...

    def answer(self, flow: http.HTTPFlow) -> Awaitable[http.Response]: ...


def is_endpoint_flow(flow: http.HTTPFlow) -> bool:
    return ENDPOINT_FLOW in flow.metadata


def check_path(path: str) -> None:
    """An endpoint path: absolute, printable, without query, fragment or spaces."""
    if not path.startswith("/") or any(c in path for c in "?# ") or not path.isprintable():
        raise ValueError(
            f"{path!r} must be a path starting with '/', without query, fragment or spaces"
        )


def parse_status_path(value: str) -> str:
    check_path(value)
    return value


def parse_metrics_path(value: str) -> str | None:
    """The metrics path; None (the endpoint off) for an empty value."""
    if value == "":
        return None
    check_path(value)
    return value


def check_paths_differ(status: str, metrics: str | None) -> None:
    """Each path answers one endpoint."""
    if metrics == status:
        raise ValueError(
            f"counter_metrics_path and counter_status_path are both {status!r}; they must differ"
        )


def path_of(request_path: str) -> str:
    """What an endpoint's path is compared with: the request's path without its query string."""
    return request_path.partition("?")[0]


def matches(request_path: str, endpoint_path: str | None) -> bool:
    """The request's path equals the endpoint's exactly, its query string ignored."""
    return path_of(request_path) == endpoint_path


def is_reverse(mode: str) -> bool:
    return isinstance(ProxyMode.parse(mode), ReverseMode)


class Endpoints:
    """The proxy's own endpoints: their paths (the counter_status_path and
    counter_metrics_path options, and the rule that they differ), who may ask them
    (`access`), and the requests for their paths, claimed and answered by the shared rules."""

    def __init__(self, counting: CountRequests) -> None:
        self.status = StatusEndpoint(counting)
        self.metrics = MetricsEndpoint(counting)
        self.access = AccessControl()
        self.endpoints: dict[str, Endpoint] = {e.name: e for e in (self.status, self.metrics)}

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_status_path",
            str,
            "/status",
            'Path answered by the proxy itself, in reverse mode only, with JSON {"counter": '
            '<requests counted in Redis>, "uptime": <seconds since start>, ...}, or to a '
            "browser a live page of the same figures. The query string is ignored; other "
            "paths, /status/ included, are proxied.",
        )
        loader.add_option(
            "counter_metrics_path",
            str,
            "/metrics",
            "Path answered by the proxy itself, in reverse mode only, with Prometheus metrics: "
            "the shared counts in Redis and this process's own. The query string is ignored. "
            "Empty: no metrics endpoint, the path is proxied.",
        )
        self.access.load(loader)

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        if {"counter_status_path", "counter_metrics_path"} & updated:
            status = parsed("counter_status_path", parse_status_path)
            metrics = parsed("counter_metrics_path", parse_metrics_path)
            # Named after the option just set: the one to blame.
            option = next(
                o for o in ("counter_metrics_path", "counter_status_path") if o in updated
            )
            with blaming(option):
                check_paths_differ(status, metrics)
            self.status.path, self.metrics.path = status, metrics
        self.access.configure(updated)
        if {"mode", "connection_strategy"} & updated and self._eager_reverse():
            # Eager mode connects upstream before reading the request and drops the client if
            # that fails: the endpoints would be unreachable exactly when the upstream is down.
            logger.info("counting_addon: connection_strategy set to lazy so /status always answers")
            ctx.options.update(connection_strategy="lazy")

    @staticmethod
    def _eager_reverse() -> bool:
        return ctx.options.connection_strategy == "eager" and any(
            is_reverse(m) for m in ctx.options.mode
        )

    def claim(self, flow: http.HTTPFlow) -> bool:
        """Whether the request is for an endpoint: then it is marked as the endpoint's, and
        refused unread if its body can't be read first."""
        if not isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return False
        # On every proxied request: the two paths compared inline (matches() is the rule).
        path = path_of(flow.request.path)
        endpoint: Endpoint
        if path == self.status.path:
            endpoint = self.status
        elif path == self.metrics.path:
            endpoint = self.metrics
        else:
            return False
        flow.metadata[ENDPOINT_FLOW] = endpoint.name
        flow.marked = ":bar_chart:"
        flow.comment = "answered by counting_addon"
        if unknown_length(flow.request):
            # HTTP/2 or 3 without Content-Length: a body may follow, which mitmproxy would read
            # whole before the answer. Only GET and HEAD are answered: they carry none in
            # practice, and an addon can't tell before the body comes. The rest is refused
            # unread, as a request of unknown length is over HTTP/1.1.
            if flow.request.method not in ALLOWED:
                flow.kill()
            return True
        try:
            size = expected_http_body_size(flow.request)
        except ValueError:
            size = None
        # mitmproxy can't answer a request it streams, and stream_large_bodies makes it
        # stream bodies over that size, even while it reads them.
        stream_limit = human.parse_size(ctx.options.stream_large_bodies)
        limit = MAX_ENDPOINT_BODY if stream_limit is None else min(MAX_ENDPOINT_BODY, stream_limit)
        if size is None or size > limit:
            flow.kill()
        return True

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """The answer to a claimed flow, for mitmproxy to await; None if there is nothing to
        await (an error already, or a refusal made here).

        Not async itself: mitmproxy awaits what a hook returns, so a refusal, answered at
        once, skips making and awaiting a coroutine."""
        name = flow.metadata.get(ENDPOINT_FLOW)
        if name is None or flow.response or flow.error:
            return None
        if not self.access.allows(flow.client_conn.peername):
            respond(flow, json_response(403, {"error": "forbidden"}))
        elif flow.request.method not in ALLOWED:
            refusal = json_response(405, {"error": "method not allowed"})
            refusal.headers["Allow"] = ", ".join(ALLOWED)
            respond(flow, refusal)
        else:
            return self._answer(flow, self.endpoints[name])
        return None

    @staticmethod
    async def _answer(flow: http.HTTPFlow, endpoint: Endpoint) -> None:
        respond(flow, await endpoint.answer(flow))
