"""Counts every proxied request, and its response by class, in Redis, without making any
request wait on Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from typing import Any

from mitmproxy import http
from mitmproxy.addonmanager import Loader

from counting_addon.code_class import CodeClass, code_class
from counting_addon.options import blaming, parsed, reported_cleanly
from counting_addon.process import PROCESS
from counting_addon.series.labels import Labeller, check_routes_for, parse_by, parse_max_series
from counting_addon.series.routes import Routes
from counting_addon.store.counter import RedisCounter, close_all
from counting_addon.store.keys import parse_key
from counting_addon.store.shared import SeriesSpec
from counting_addon.store.url import DEFAULT_URL, default_url, parse
from counting_addon.traffic import received
from counting_addon.traffic.body_bytes import passed
from counting_addon.traffic.in_flight import InFlight

logger = logging.getLogger(__name__)

# The options a new counter is made for (the others change the running one in place).
COUNTER_OPTIONS = {"counter_redis_url", "counter_key", "counter_by", "counter_max_series"}
# Shutdown waits this long for the requests in flight to end (in_flight.py), then this long
# for the last counts to reach Redis.
DRAIN_TIMEOUT = 2.0
CLOSE_TIMEOUT = 3.0
# A counter replaced by an option change or a script reload goes on writing its counts in the
# background this long: Redis outages last minutes, and its counts are as real as any.
RETIRE_BOUND = 600.0
# Marks the flows not proxied: refused by mitmproxy before the requestheaders hook
# (flow.error already set), or by us while shutting down. Not counted, so their error hook
# counts no response either.
REFUSED_FLOW = "counting_addon.refused"


def parse_replicas(value: int) -> int:
    if value < 0:
        raise ValueError(f"{value} must be 0 or more")
    return value


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

    def __init__(self, in_flight: InFlight, drain_timeout: float, close_timeout: float) -> None:
        self.in_flight = in_flight
        self.drain_timeout = drain_timeout
        self.close_timeout = close_timeout

    def __await__(self) -> Generator[Any, None, None]:
        return self._shut_down().__await__()

    async def _shut_down(self) -> None:
        if self.in_flight:
            logger.info(
                f"shutting down: refusing new requests, waiting up to {self.drain_timeout:g} s "
                f"for the {len(self.in_flight)} in flight"
            )
        left = await self.in_flight.close(self.drain_timeout)
        if left:
            logger.warning(f"{left} requests were still in flight when the proxy exited")
        await close_all(self.close_timeout)


class CountRequests:
    """Counts each proxied request once, at its headers (stamped with the second they arrived
    in, for the windows), and its response once, in the class of the status code the client
    received (received.py), with the body bytes both ways (body_bytes.py), in Redis and in
    this process's figures (process.py); and a WebSocket's messages' bytes as they pass.
    Sees proxied flows only (proxy.py).

    `drain_timeout` and `close_timeout` bound the shutdown's two waits (tests shorten them).
    """

    def __init__(
        self, drain_timeout: float = DRAIN_TIMEOUT, close_timeout: float = CLOSE_TIMEOUT
    ) -> None:
        self.counter: RedisCounter | None = None
        # A request's label values, when counted by labels (counter_by); None otherwise.
        self.labeller: Labeller | None = None
        self.in_flight = InFlight()
        self.drain_timeout = drain_timeout
        self.close_timeout = close_timeout

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
        loader.add_option(
            "counter_by",
            str,
            "",
            "Also count requests by these labels, comma-separated: route (the first "
            "counter_routes template matching the path), method, client (the client's IP "
            "address), header:NAME (that request header's value). Shared and exact like the "
            "total, shown in /status and /metrics. Empty: no breakdown.",
        )
        loader.add_option(
            "counter_routes",
            Sequence[str],
            [],
            "Path templates for the route label, tried in order: {name} matches one path "
            "segment, a final /* the prefix and anything below it, the rest literally "
            "(/users/{id}, /static/*). Unmatched paths count as (unmatched).",
        )
        loader.add_option(
            "counter_max_series",
            int,
            1000,
            "The most label combinations counted by counter_by, across all proxies sharing "
            "the counter; requests of a new combination past it count in one series whose "
            "every label is (other).",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        replicas = parsed("counter_redis_replicas", parse_replicas)
        if "counter_redis_replicas" in updated and self.counter is not None:
            self.counter.replicas = replicas
        labeller = self.labeller
        if {"counter_by", "counter_routes"} & updated:
            routes = parsed("counter_routes", Routes)
            labels = parsed("counter_by", parse_by)
            with blaming("counter_by"):
                check_routes_for(labels, routes)
            if not labels:
                labeller = None
            elif labeller is None or (labeller.labels, labeller.routes) != (labels, routes):
                labeller = Labeller(labels, routes)
        if COUNTER_OPTIONS & updated:
            target = parsed("counter_redis_url", parse)
            key = parsed("counter_key", parse_key)
            max_series = parsed("counter_max_series", parse_max_series)
            series = SeriesSpec()
            if labeller is not None:
                series = SeriesSpec(tuple(map(str, labeller.labels)), max_series)
            # Every value checked: from here on nothing fails. The same values again (an
            # option rolled back, a script reload) keep the counter.
            current = self.counter
            if current is None or (current.target.url, current.key, current.series) != (
                target.url,
                key,
                series,
            ):
                if current is not None:
                    current.retire(RETIRE_BOUND)
                self.counter = RedisCounter(target, key, replicas, series)
                by = f", by {series.name} (at most {series.max_series})" if series.labels else ""
                logger.info(f"counting requests in Redis at {target.redacted}, key {key!r}{by}")
        # Changing the templates alone changes where new requests go, not the counter.
        self.labeller = labeller

    def refused(self, flow: http.HTTPFlow) -> None:
        """A flow mitmproxy refused before the requestheaders hook: never proxied."""
        flow.metadata[REFUSED_FLOW] = True

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if is_h2c_preface(flow):
            return
        if self.in_flight.closing:
            # Shutting down: refused unread, and so neither proxied nor counted.
            flow.metadata[REFUSED_FLOW] = True
            flow.kill()
            return
        assert self.counter, "configure() runs before any flow"
        labeller = self.labeller
        # mitmproxy stamps the request when its headers arrive: the instance's own clock.
        second = int(flow.request.timestamp_start)
        self.counter.add(None if labeller is None else labeller.values(flow), second)
        PROCESS.stats.requests += 1
        self.in_flight.started(flow.id)

    # Exactly one of response and error ends each flow (received_class.py). The h2c preface,
    # counted in neither, is killed in the request hook: its error hook finds no class.
    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        assert response
        self._ended(
            flow,
            code_class(response.status_code),
            passed(flow.request, True),
            passed(response, True),
        )

    def error(self, flow: http.HTTPFlow) -> None:
        if REFUSED_FLOW not in flow.metadata:
            # A request's body came whole if mitmproxy stamped its end (just before the request
            # hook); a response's, cut short, counts only what streamed past.
            complete = flow.request.timestamp_end is not None
            self._ended(
                flow,
                received.on_error(flow),
                passed(flow.request, complete),
                passed(flow.response, False),
            )

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A WebSocket message passed: its payload counts as request bytes from the client,
        response bytes to it, at once (a WebSocket open for a day is not invisible for a
        day)."""
        assert flow.websocket
        message = flow.websocket.messages[-1]
        size = len(message.content)
        if message.from_client:
            self._count_bytes(size, 0)
        else:
            self._count_bytes(0, size)

    def _count_bytes(self, request: int, response: int) -> None:
        if request or response:
            assert self.counter, "configure() runs before any flow"
            self.counter.add_bytes(request, response)
            stats = PROCESS.stats
            stats.request_bytes += request
            stats.response_bytes += response

    def _ended(
        self,
        flow: http.HTTPFlow,
        received: CodeClass | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """A counted flow ended: its response counted in the class the client `received`
        (None: in none), with the body bytes that passed both ways, in one call to the
        counter."""
        if received is None:
            self._count_bytes(request_bytes, response_bytes)
        else:
            assert self.counter, "configure() runs before any flow"
            self.counter.add_response(received, request_bytes, response_bytes)
            stats = PROCESS.stats
            stats.responses[received] += 1
            stats.request_bytes += request_bytes
            stats.response_bytes += response_bytes
            response = flow.response
            end = response.timestamp_end if response and response.timestamp_end else time.time()
            stats.request_duration.observe(end - flow.request.timestamp_start)
        self.in_flight.ended(flow.id)

    def done(self) -> Shutdown:
        # Plain def: on a script reload mitmproxy calls done synchronously, and this counter
        # writes what it has left in the background while the new instance takes over.
        if self.counter is not None:
            self.counter.retire(RETIRE_BOUND)
        return Shutdown(self.in_flight, self.drain_timeout, self.close_timeout)
