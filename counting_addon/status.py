"""The /status endpoint: the shared count and this process's uptime, as JSON."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from counting_addon.endpoints import READ_TIMEOUT, check_path, json_response
from counting_addon.option_errors import reported_cleanly
from counting_addon.redis_counter import CounterUnavailable

if TYPE_CHECKING:
    from counting_addon.counting import CountRequests

# Taken when the package is first imported, at proxy start-up: a script reload re-runs
# addon.py but not this module, so uptime stays the process's.
STARTED = time.monotonic()


def uptime() -> int:
    return int(time.monotonic() - STARTED)


class StatusEndpoint:
    """Answers GET on the status path with the shared count and this process's uptime; the
    rules every endpoint follows are in endpoints.py."""

    name = "status"

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
                check_path(ctx.options.counter_status_path)
            except ValueError as e:
                raise exceptions.OptionsError(f"counter_status_path: {e}") from None
            self.path = ctx.options.counter_status_path

    async def answer(self, flow: http.HTTPFlow) -> http.Response:
        counter = self.counting.counter
        assert counter, "configure() runs before any flow"
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                value = await counter.read()
        except (CounterUnavailable, TimeoutError) as e:
            problem = e.failure if isinstance(e, CounterUnavailable) else counter.problem
            return json_response(
                503,
                {
                    "error": str(problem or "Redis did not answer in time"),
                    "uptime": uptime(),
                    "pending": counter.unwritten,
                },
            )
        return json_response(200, {"counter": value, "uptime": uptime()})
