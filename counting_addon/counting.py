"""Counts every proxied request, and its response by class, in Redis, without making any
request wait on Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from counting_addon import received_class
from counting_addon.endpoints import is_endpoint_flow
from counting_addon.in_flight import InFlight
from counting_addon.keys import check_key
from counting_addon.option_errors import reported_cleanly
from counting_addon.process_stats import STATS
from counting_addon.redis_client import check_url
from counting_addon.redis_counter import RedisCounter, close_all
from counting_addon.redis_url import DEFAULT_URL, default_url, redact
from counting_addon.response_classes import CodeClass, code_class

logger = logging.getLogger(__name__)

# Shutdown waits this long for the requests in flight to end (in_flight.py), then this long
# for the last counts to reach Redis.
DRAIN_TIMEOUT = 2.0
CLOSE_TIMEOUT = 3.0
# A counter replaced by an option change or a script reload goes on writing its counts in the
# background this long: Redis outages last minutes, and its counts are as real as any.
RETIRE_BOUND = 600.0
# Marks the flows mitmproxy refused before the requestheaders hook (flow.error already set):
# not counted, so their error hook counts no response either.
REFUSED_FLOW = "counting_addon.refused"


def is_h2c_preface(flow: http.HTTPFlow) -> bool:
    """HTTP/2 in cleartext with prior knowledge: its preface reads as a request `PRI *
    HTTP/2.0`, which mitmproxy's DisableH2C kills in the `request` hook, after this one."""
    request = flow.request.data
    return request.method == b"PRI" and request.path == b"*" and request.http_version == b"HTTP/2.0"


class Shutdown:
    """What `done` returns: mitmproxy awaits it on shutdown, and drops it on a script reload.

    Not a coroutine: one dropped unawaited would be a warning. This one makes its coroutine only
    when awaited, so a reload neither refuses requests nor waits for any.
    """

    def __init__(self, in_flight: InFlight) -> None:
        self.in_flight = in_flight

    def __await__(self) -> Generator[Any, None, None]:
        return self._shut_down().__await__()

    async def _shut_down(self) -> None:
        if self.in_flight:
            logger.info(
                f"shutting down: refusing new requests, waiting up to {DRAIN_TIMEOUT:g} s for "
                f"the {len(self.in_flight)} in flight"
            )
        left = await self.in_flight.close(DRAIN_TIMEOUT)
        if left:
            logger.warning(f"{left} requests were still in flight when the proxy exited")
        await close_all(CLOSE_TIMEOUT)


class CountRequests:
    """Counts each proxied request once, at its headers, and its response once, in the class
    of the status code the client received (received_class.py), in Redis and in this
    process's figures (process_stats.STATS)."""

    def __init__(self) -> None:
        self.counter: RedisCounter | None = None
        self.in_flight = InFlight()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_redis_url",
            str,
            default_url(),
            # One line, exactly as mitmproxy stores it: otherwise a script reload sees a
            # "different" option and resets the user's value to the default.
            "Redis holding the shared counter: redis://[[user]:password@]host[:port][/db], "
            "rediss:// for TLS, unix:///path/to/socket, a Redis Cluster as "
            "redis+cluster://[[user]:password@]host:port[,host:port...], or a master watched "
            "by Sentinel as redis+sentinel://[[user]:password@]host:port[,host:port...]/NAME"
            "[/db] (rediss+ for TLS). Defaults to the REDIS_URL environment variable, else "
            f"{DEFAULT_URL}.",
        )
        loader.add_option(
            "counter_key",
            str,
            "counter",
            "Redis key of the shared request counter. Proxies sharing a Redis and this key "
            "share one count. Responses by class go in a hash beside it, named "
            "'{<key>}:responses' (or '<key>:responses' for a key with a {hash tag}).",
        )
        loader.add_option(
            "counter_redis_replicas",
            int,
            0,
            "Counts are acknowledged by Redis only once this many of its replicas have them "
            "(Redis's WAIT), so that a failover loses none; until then the same batch is "
            "resent. 0: once the primary has them.",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        replicas = ctx.options.counter_redis_replicas
        if "counter_redis_replicas" in updated:
            if replicas < 0:
                raise exceptions.OptionsError(
                    f"counter_redis_replicas: {replicas} must be 0 or more"
                )
            if self.counter is not None:
                self.counter.replicas = replicas
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
        try:
            check_key(key)
        except ValueError as e:
            raise exceptions.OptionsError(f"counter_key: {e}") from None
        if self.counter is not None:
            self.counter.retire(RETIRE_BOUND)
        self.counter = RedisCounter(url, key, replicas)
        logger.info(f"counting requests in Redis at {redact(url)}, key {key!r}")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A flow that arrives with an error was rejected by mitmproxy and never proxied.
        if flow.error is not None:
            flow.metadata[REFUSED_FLOW] = True
        elif not is_endpoint_flow(flow) and not is_h2c_preface(flow):
            if self.in_flight.closing:
                # Shutting down: refused unread, and so neither proxied nor counted.
                flow.metadata[REFUSED_FLOW] = True
                flow.kill()
                return
            assert self.counter, "configure() runs before any flow"
            self.counter.add()
            STATS.requests += 1
            self.in_flight.started(flow.id)

    # Exactly one of response and error ends each flow (received_class.py). The h2c preface,
    # counted in neither, is killed in the request hook: its error hook finds no class.
    def response(self, flow: http.HTTPFlow) -> None:
        if not is_endpoint_flow(flow):
            assert flow.response
            self._count_response(flow, code_class(flow.response.status_code))
            self.in_flight.ended(flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        if not is_endpoint_flow(flow) and REFUSED_FLOW not in flow.metadata:
            self._count_response(flow, received_class.on_error(flow))
            self.in_flight.ended(flow.id)

    def _count_response(self, flow: http.HTTPFlow, received: CodeClass | None) -> None:
        if received is None:
            return
        assert self.counter, "configure() runs before any flow"
        self.counter.add_response(received)
        STATS.responses[received] += 1
        response = flow.response
        end = response.timestamp_end if response and response.timestamp_end else time.time()
        STATS.request_duration.observe(end - flow.request.timestamp_start)

    def done(self) -> Shutdown:
        # Plain def: on a script reload mitmproxy calls done synchronously, and this counter
        # writes what it has left in the background while the new instance takes over.
        if self.counter is not None:
            self.counter.retire(RETIRE_BOUND)
        return Shutdown(self.in_flight)
