"""Counts every proxied request in Redis, without making any request wait on Redis."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from counting_addon.endpoints import is_endpoint_flow
from counting_addon.option_errors import reported_cleanly
from counting_addon.redis_counter import RedisCounter, close_all
from counting_addon.redis_url import DEFAULT_URL, check_url, default_url, redact

logger = logging.getLogger(__name__)

# Shutdown waits this long for the last counts to reach Redis.
CLOSE_TIMEOUT = 3.0
# A counter replaced by an option change or a script reload goes on writing its counts in the
# background this long: Redis outages last minutes, and its counts are as real as any.
RETIRE_BOUND = 600.0


def is_h2c_preface(flow: http.HTTPFlow) -> bool:
    """HTTP/2 in cleartext with prior knowledge: its preface reads as a request `PRI *
    HTTP/2.0`, which mitmproxy's DisableH2C kills in the `request` hook, after this one."""
    request = flow.request.data
    return request.method == b"PRI" and request.path == b"*" and request.http_version == b"HTTP/2.0"


class Shutdown:
    """What `done` returns: mitmproxy awaits it on shutdown, and drops it on a script reload.

    Not a coroutine: one dropped unawaited would be a warning. This one makes its coroutine only
    when awaited.
    """

    def __await__(self) -> Generator[Any, None, None]:
        return close_all(CLOSE_TIMEOUT).__await__()


class CountRequests:
    def __init__(self) -> None:
        self.counter: RedisCounter | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_redis_url",
            str,
            default_url(),
            # One line, exactly as mitmproxy stores it: otherwise a script reload sees a
            # "different" option and resets the user's value to the default.
            "Redis holding the shared counter: redis://[[user]:password@]host[:port][/db], "
            "rediss:// for TLS, or unix:///path/to/socket. Defaults to the REDIS_URL "
            f"environment variable, else {DEFAULT_URL}.",
        )
        loader.add_option(
            "counter_key",
            str,
            "counter",
            "Redis key of the shared request counter. Proxies sharing a Redis and this key "
            "share one count.",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        if not {"counter_redis_url", "counter_key"} & updated:
            return
        url, key = ctx.options.counter_redis_url, ctx.options.counter_key
        try:
            check_url(url)
        except ValueError as e:
            raise exceptions.OptionsError(f"counter_redis_url: {e}") from None
        if not key or not key.isprintable():
            raise exceptions.OptionsError(
                f"counter_key: {key!r} must be a non-empty printable string"
            )
        if self.counter is not None:
            self.counter.retire(RETIRE_BOUND)
        self.counter = RedisCounter(url, key)
        logger.info(f"counting requests in Redis at {redact(url)}, key {key!r}")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A flow that arrives with an error was rejected by mitmproxy and never proxied.
        if flow.error is None and not is_endpoint_flow(flow) and not is_h2c_preface(flow):
            assert self.counter, "configure() runs before any flow"
            self.counter.add()

    def done(self) -> Shutdown:
        # Plain def: on a script reload mitmproxy calls done synchronously, and this counter
        # writes what it has left in the background while the new instance takes over.
        if self.counter is not None:
            self.counter.retire(RETIRE_BOUND)
        return Shutdown()
