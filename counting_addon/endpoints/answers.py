"""What the endpoints answer with: JSON, HEAD's empty body, and the shared counts read within a
bound, so that no answer hangs because Redis does."""

from __future__ import annotations

import asyncio
import json

from mitmproxy import http

from counting_addon.store.counter import CounterUnavailable, RedisCounter
from counting_addon.store.failures import Failure, FailureKind
from counting_addon.store.shared import Shared

# How long an endpoint waits for Redis: then /status answers 503, /metrics without the shared
# counts.
READ_TIMEOUT = 1.5
TIMED_OUT = Failure(FailureKind.UNREACHABLE, "Redis did not answer in time")


def json_response(status_code: int, body: dict[str, object]) -> http.Response:
    return http.Response.make(
        status_code,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


def respond(flow: http.HTTPFlow, response: http.Response) -> None:
    flow.response = response
    if flow.request.method == "HEAD":
        # mitmproxy sends whatever body an addon's response has; HEAD gets none, and keeps
        # the Content-Length a GET would have.
        response.raw_content = b""


async def read_shared(
    counter: RedisCounter, within: float, windows: bool = False, own_counts: bool = True
) -> Shared | Failure:
    """The shared counts once this process's are written (counter.py; without waiting for them
    if not `own_counts`), with the `windows` if asked, or why they can't be had within
    `within` s: the failure a read met, else the one the writer is in."""
    try:
        async with asyncio.timeout(within):
            return await counter.read_shared(windows, own_counts)
    except CounterUnavailable as e:
        return e.failure
    except TimeoutError:
        return counter.problem or TIMED_OUT
