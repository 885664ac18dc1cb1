"""Counts every proxied request in Redis, without making any request wait on Redis."""

from __future__ import annotations

import logging
import os

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from counting_addon.option_errors import reported_cleanly
from counting_addon.redis_counter import RedisCounter, check_url, redact

logger = logging.getLogger(__name__)

DEFAULT_URL = "redis://localhost:6379/0"
# Shutdown waits this long for the last counts to reach Redis.
CLOSE_TIMEOUT = 3.0
# Set by StatusEndpoint on flows it answers itself; those are not counted.
STATUS_FLOW = "counting_addon.status"


class CountRequests:
    def __init__(self) -> None:
        self.counter: RedisCounter | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_redis_url",
            str,
            os.environ.get("REDIS_URL", DEFAULT_URL),
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
            self._close(self.counter)
        self.counter = RedisCounter(url, key)
        logger.info(f"counting requests in Redis at {redact(url)}, key {key!r}")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A flow that arrives with an error was rejected by mitmproxy and never proxied.
        if flow.error is None and not flow.metadata.get(STATUS_FLOW):
            assert self.counter, "configure() runs before any flow"
            self.counter.add()

    def done(self) -> None:
        # Plain def: mitmproxy calls done synchronously on script reload.
        if self.counter is not None:
            self._close(self.counter)

    @staticmethod
    def _close(counter: RedisCounter) -> None:
        lost = counter.close(CLOSE_TIMEOUT)
        if lost:
            logger.warning(
                f"{lost} counts could not be written to Redis at {redact(counter.url)} "
                f"and are lost: {counter.problem or 'timed out'}"
            )
