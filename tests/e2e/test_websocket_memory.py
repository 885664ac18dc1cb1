"""End to end: a WebSocket's memory in the proxy stays bounded however much it carries.

mitmproxy keeps every message of a WebSocket until it closes (mitmproxy#6620); the addon keeps
the latest that fit in counter_websocket_history bytes (traffic/websocket_history.py). A real
client echoes 1 GiB each way through mitmdump or mitmweb to the upstream's /ws, in messages
from 16 bytes to 4 MiB, and each comes back equal and in order while the proxy's RSS is sampled.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.mitmweb import start_web
from tests.support.processes import Proxy, ProxyFactory
from tests.support.procfs import MiB, RssSampler
from tests.support.websocket import TIMEOUT, Echoed, Traffic, echo_traffic, streaming_websocket

GiB = 1024 * MiB
# The figure: 1 GiB each way over one connection.
TRANSFER = 1 * GiB
# Through the same connection first, so that the baseline is the proxy's memory in use:
# buffers of the largest messages, TLS, the allocator's arenas.
WARM_UP = 64 * MiB
# Enough to show unbounded growth well past the bound: mitmproxy's own behaviour keeps it all.
UNBOUNDED = 128 * MiB
# counter_websocket_history's default.
BUDGET = 256 * 1024
LAST = "the last message"


async def echo_watching_rss(p: Proxy, ws: ClientConnection, total: int, what: str) -> RssSampler:
    """A warm-up, then `total` echoed through `ws` while the proxy's RSS is sampled."""
    traffic = Traffic(seed=20)
    await echo_traffic(ws, traffic, WARM_UP)
    with RssSampler(p.pid) as sampler:
        echoed = await echo_traffic(ws, traffic, total)
    report(echoed, sampler, what)
    return sampler


def report(echoed: Echoed, sampler: RssSampler, what: str) -> None:
    print(
        f"\n{what}: {echoed.messages} messages, {echoed.payload / MiB:.0f} MiB each way in "
        f"{echoed.seconds:.1f} s ({echoed.mib_per_second:.1f} MiB/s); RSS "
        f"{sampler.baseline / MiB:.1f} -> peak {sampler.peak / MiB:.1f} MiB "
        f"({sampler.growth / MiB:+.1f} MiB, {sampler.samples} samples)"
    )


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_1_gib_each_way_over_one_websocket_grows_mitmdump_by_less_than_64_mib(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, scheme: str
) -> None:
    p = start_proxy(upstream, redis_url)
    async with streaming_websocket(p, scheme) as ws:
        sampler = await echo_watching_rss(p, ws, TRANSFER, f"mitmdump, {scheme}://")
        sampler.check(f"1 GiB each way over {scheme}://")


async def test_1_gib_each_way_grows_mitmweb_by_less_than_64_mib_and_it_shows_the_latest_messages(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    with start_web(start_proxy, upstream, redis_url) as web:
        async with streaming_websocket(web.proxy) as ws:
            sampler = await echo_watching_rss(web.proxy, ws, TRANSFER, "mitmweb, ws://")
            sampler.check("1 GiB each way through mitmweb")
            await ws.send(LAST)
            async with asyncio.timeout(TIMEOUT):
                assert await ws.recv() == LAST
            # mitmweb shows what the flow kept: the latest messages, within the budget.
            (flow,) = [f for f in web.flows() if f["request"]["path"] == "/ws"]
            meta = flow["websocket"]["messages_meta"]
            assert 2 <= meta["count"] and meta["contentLength"] <= BUDGET, meta
            r = web.api.get(f"/flows/{flow['id']}/messages/content/auto.json")
            assert r.status_code == 200, r.text
            shown = r.json()
            assert len(shown) == meta["count"]
            assert [m["from_client"] for m in shown[-2:]] == [True, False]
            assert all(LAST in m["text"] for m in shown[-2:]), shown[-2:]


async def test_without_the_bound_the_same_check_fails_as_mitmdump_keeps_every_message(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """mitmproxy's own behaviour, a budget larger than the traffic: 128 MiB each way stays in
    memory, both ways, so the check the bounded proxy passes fails, by about as much."""
    p = start_proxy(upstream, redis_url, "--set", "counter_websocket_history=1t")
    async with streaming_websocket(p) as ws:
        sampler = await echo_watching_rss(p, ws, UNBOUNDED, "mitmdump without the bound, ws://")
    with pytest.raises(AssertionError, match="RSS grew by"):
        sampler.check("128 MiB each way")
    assert sampler.growth > 0.9 * 2 * UNBOUNDED, f"{sampler.growth / MiB:.0f} MiB"
