"""The /status endpoint: answered by the proxy itself in reverse mode, never forwarded."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.net.http.http1 import expected_http_body_size
from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode
from mitmproxy.utils import human

from counting_addon.body_length import unknown_length
from counting_addon.option_errors import reported_cleanly
from counting_addon.redis_counter import CounterUnavailable

if TYPE_CHECKING:
    from counting_addon.counting import CountRequests

logger = logging.getLogger(__name__)

# Taken when the package is first imported, at proxy start-up: a script reload re-runs
# addon.py but not this module, so uptime stays the process's.
STARTED = time.monotonic()
# How long /status waits for Redis before answering 503.
READ_TIMEOUT = 1.5
# Status requests are answered after their body is read; a larger or unknown body is
# refused by closing the connection rather than buffering it.
MAX_STATUS_BODY = 64 * 1024
ALLOWED = ("GET", "HEAD")
# Marks the flows StatusEndpoint answers itself: the other addons neither count nor stream them.
STATUS_FLOW = "counting_addon.status"


def is_status_flow(flow: http.HTTPFlow) -> bool:
    return bool(flow.metadata.get(STATUS_FLOW))


def uptime() -> int:
    return int(time.monotonic() - STARTED)


def check_status_path(path: str) -> None:
    if not path.startswith("/") or any(c in path for c in "?# ") or not path.isprintable():
        raise ValueError(
            f"{path!r} must be a path starting with '/', without query, fragment or spaces"
        )


def matches(request_path: str, status_path: str) -> bool:
    """The request's path equals the status path exactly, its query string ignored."""
    return request_path.partition("?")[0] == status_path


def json_response(status_code: int, body: dict[str, object]) -> http.Response:
    return http.Response.make(
        status_code,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


def is_reverse(mode: str) -> bool:
    return isinstance(ProxyMode.parse(mode), ReverseMode)


class StatusEndpoint:
    """Answers GET/HEAD on the status path with the shared count and this process's uptime."""

    def __init__(self, counting: CountRequests) -> None:
        self.counting = counting
        self.path = "/status"

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_status_path",
            str,
            "/status",
            'Path answered by the proxy itself, in reverse mode only, with JSON {"counter": '
            '<requests counted in Redis>, "uptime": <seconds since start>}. The query string '
            "is ignored; other paths, /status/ included, are proxied.",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        if "counter_status_path" in updated:
            try:
                check_status_path(ctx.options.counter_status_path)
            except ValueError as e:
                raise exceptions.OptionsError(f"counter_status_path: {e}") from None
            self.path = ctx.options.counter_status_path
        if {"mode", "connection_strategy"} & updated and self._eager_reverse():
            # Eager mode connects upstream before reading the request and drops the client if
            # that fails: /status would be unreachable exactly when the upstream is down.
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
        if not matches(flow.request.path, self.path):
            return
        flow.metadata[STATUS_FLOW] = True
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
        limit = MAX_STATUS_BODY if stream_limit is None else min(MAX_STATUS_BODY, stream_limit)
        if size is None or size > limit:
            flow.kill()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Not async itself: mitmproxy awaits what a hook returns, and every other request
        # then skips making and awaiting a coroutine.
        if not is_status_flow(flow) or flow.response or flow.error:
            return None
        return self._answer(flow)

    async def _answer(self, flow: http.HTTPFlow) -> None:
        if flow.request.method not in ALLOWED:
            flow.response = json_response(405, {"error": "method not allowed"})
            flow.response.headers["Allow"] = ", ".join(ALLOWED)
            return
        counter = self.counting.counter
        assert counter, "configure() runs before any flow"
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                value = await counter.read()
        except (CounterUnavailable, TimeoutError) as e:
            problem = e.failure if isinstance(e, CounterUnavailable) else counter.problem
            flow.response = json_response(
                503,
                {
                    "error": str(problem or "Redis did not answer in time"),
                    "uptime": uptime(),
                    "pending": counter.unwritten,
                },
            )
        else:
            flow.response = json_response(200, {"counter": value, "uptime": uptime()})
        if flow.request.method == "HEAD":
            # mitmproxy sends whatever body an addon's response has; HEAD gets none, and
            # keeps the Content-Length a GET would have.
            flow.response.raw_content = b""
