"""Shutdown lets the counted requests in flight end, and refuses new ones, before the last
write: the bookkeeping alone, then the counter's hooks under taddons against a real Redis."""

from __future__ import annotations

import asyncio

import redis
from mitmproxy.flow import Error
from mitmproxy.test import tutils

from counting_addon.traffic.counting import DRAIN_TIMEOUT
from counting_addon.traffic.in_flight import InFlight
from tests.support.flows import flow, requestheaders_only
from tests.support.in_process import MakeProxy


async def test_closing_with_nothing_in_flight_returns_at_once() -> None:
    in_flight = InFlight()
    in_flight.started("a")
    in_flight.ended("a")
    in_flight.ended("never started")
    async with asyncio.timeout(1):
        assert await in_flight.close(60) == 0
    assert in_flight.closing


async def test_closing_waits_for_the_flows_in_flight_then_for_no_more() -> None:
    in_flight = InFlight()
    for flow_id in "abc":
        in_flight.started(flow_id)
    closing = asyncio.ensure_future(in_flight.close(60))
    await asyncio.sleep(0)
    in_flight.ended("a")
    in_flight.ended("b")
    assert not closing.done() and len(in_flight) == 1
    in_flight.ended("c")
    async with asyncio.timeout(1):
        assert await closing == 0


async def test_closing_gives_up_after_its_bound() -> None:
    in_flight = InFlight()
    in_flight.started("stuck")
    async with asyncio.timeout(5):
        assert await in_flight.close(0.05) == 1


async def test_shutdown_refuses_new_requests_and_writes_those_in_flight_once_they_end(
    counting_proxy: MakeProxy, redis_client: redis.Redis
) -> None:
    """A request in flight when shutdown begins is counted, and so is its response once it
    ends; one arriving meanwhile is killed, counted in neither. Then the counts are written."""
    proxy = counting_proxy().proxy
    proxy.counting.drain_timeout = DRAIN_TIMEOUT  # the product's: it must not run out here
    early = flow()
    requestheaders_only(proxy, early)
    shutdown = asyncio.ensure_future(proxy.done())
    await asyncio.sleep(0)
    assert not shutdown.done(), "waits for the request in flight"

    late = flow()
    proxy.requestheaders(late)
    assert late.error is not None and late.error.msg == Error.KILLED_MESSAGE
    proxy.error(late)

    early.response = tutils.tresp()
    proxy.responseheaders(early)
    proxy.response(early)
    async with asyncio.timeout(10):
        await shutdown
    assert redis_client.get("counter") == b"1"
    assert redis_client.hgetall("{counter}:responses") == {b"2xx": b"1"}
