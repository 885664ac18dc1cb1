"""The proxy's own endpoints (/status, /metrics): the rules they share, applied in one place.

In reverse mode only, a request whose path is an endpoint's is answered by the proxy: GET and
HEAD by the endpoint, other methods 405, clients outside `counter_allow_from` 403 whatever the
method. It is never forwarded, counted or streamed, and is marked in mitmweb. A body larger than
the proxy would buffer, or of unknown length, is refused unread, from any client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from mitmproxy import ctx, http
from mitmproxy.net.http.http1 import expected_http_body_size
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode
from mitmproxy.utils import human

from counting_addon.access import AccessControl
from counting_addon.body_length import unknown_length

logger = logging.getLogger(__name__)

# Endpoint requests are answered after their body is read; a larger or unknown body is refused
# by closing the connection rather than buffering it.
MAX_ENDPOINT_BODY = 64 * 1024
ALLOWED = ("GET", "HEAD")
# How long an endpoint waits for Redis: then /status answers 503, /metrics without the shared
# counts.
READ_TIMEOUT = 1.5
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


def matches(request_path: str, endpoint_path: str | None) -> bool:
    """The request's path equals the endpoint's exactly, its query string ignored."""
    return request_path.partition("?")[0] == endpoint_path


def json_response(status_code: int, body: dict[str, object]) -> http.Response:
    return http.Response.make(
        status_code,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


def is_reverse(mode: str) -> bool:
    return isinstance(ProxyMode.parse(mode), ReverseMode)


def respond(flow: http.HTTPFlow, response: http.Response) -> None:
    flow.response = response
    if flow.request.method == "HEAD":
        # mitmproxy sends whatever body an addon's response has; HEAD gets none, and keeps
        # the Content-Length a GET would have.
        response.raw_content = b""


class Endpoints:
    """Claims the requests for the endpoints' paths and answers them by the shared rules."""

    def __init__(self, endpoints: Sequence[Endpoint], access: AccessControl) -> None:
        self.endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        self.access = access

    def configure(self, updated: set[str]) -> None:
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

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.error or not isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return
        request_path = flow.request.path
        for endpoint in self.endpoints.values():
            if matches(request_path, endpoint.path):
                break
        else:
            return
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
            return
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

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Not async itself: mitmproxy awaits what a hook returns, and every other request
        # then skips making and awaiting a coroutine.
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
