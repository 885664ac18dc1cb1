"""Each WebSocket flow keeps the latest messages that fit in counter_websocket_history bytes
(counting_addon/traffic/websocket_history.py), under mitmproxy's taddons, with its Dumper."""

from __future__ import annotations

import asyncio
import io
import os
import tracemalloc

import pytest
from mitmproxy import http
from mitmproxy.addons.dumper import Dumper
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from counting_addon.options import parse_size
from counting_addon.process import PROCESS
from counting_addon.traffic.websocket_history import (
    KEPT,
    MESSAGE_OVERHEAD,
    OPTION,
    BoundWebSocketHistory,
    cost,
)
from tests.support.in_process import MakeProxy

BUDGET = 4096


def websocket_flow() -> tuple[http.HTTPFlow, list[WebSocketMessage]]:
    """A WebSocket flow without messages yet, and its list of them (the history trims that
    very list, in place)."""
    f = tflow.twebsocketflow()
    assert f.websocket
    f.websocket.messages = []
    return f, f.websocket.messages


def message(size: int, from_client: bool = True) -> WebSocketMessage:
    return WebSocketMessage(Opcode.BINARY, from_client, os.urandom(size))


def costing(c: int, from_client: bool = True) -> WebSocketMessage:
    """A message that costs `c` bytes against the budget."""
    return message(c - MESSAGE_OVERHEAD, from_client)


async def next_turn() -> None:
    """One turn of the event loop: what mitmproxy's loop does once a message's hooks return,
    so that what the history put off until then (call_soon) runs."""
    await asyncio.sleep(0)


def history(budget: str) -> tuple[BoundWebSocketHistory, taddons.context]:
    part = BoundWebSocketHistory()
    tctx = taddons.context(part)
    tctx.configure(part, **{OPTION: budget})
    return part, tctx


async def passes(part: BoundWebSocketHistory, f: http.HTTPFlow, *sent: WebSocketMessage) -> None:
    """Each of `sent` passes as mitmproxy relays it: appended, its hook, then the loop goes on;
    the flow's running total is right after each."""
    assert f.websocket
    for m in sent:
        f.websocket.messages.append(m)
        part.websocket_message(f)
        await next_turn()
        assert f.metadata[KEPT] == sum(map(cost, f.websocket.messages))


class TestTheOption:
    @pytest.mark.parametrize(
        ("value", "size"),
        [("0", 0), ("100", 100), ("256k", 256 * 1024), ("1m", 1024**2), ("2g", 2 * 1024**3)],
    )
    def test_a_size_is_bytes_or_has_a_k_m_or_g_suffix(self, value: str, size: int) -> None:
        assert parse_size(value) == size

    @pytest.mark.parametrize("value", ["", "lots", "-1", "-1k", "1.5m", "k", "1x"])
    def test_a_value_that_is_no_size_is_refused_saying_what_a_size_is(self, value: str) -> None:
        with pytest.raises(ValueError, match="must be a size of 0 or more"):
            parse_size(value)

    def test_the_default_is_256k(self) -> None:
        part = BoundWebSocketHistory()
        with taddons.context(part) as tctx:
            assert getattr(tctx.options, OPTION) == "256k"
            assert part.budget == 256 * 1024


# Each message by what it costs against the budget: its payload plus MESSAGE_OVERHEAD.
TRIMMING = [
    # (what it shows, budget, costs in the order they pass, how many of the latest are kept)
    ("all fit", BUDGET, [1024, 1024, 1024, 1024], 4),
    ("the oldest go as new ones pass", BUDGET, [1024] * 9, 4),
    ("the latest that fit, exactly the budget", BUDGET, [2048, 1024, 3072, 1024], 2),
    ("one message of the whole budget", BUDGET, [1024, BUDGET], 1),
    ("a message over the budget is not kept", BUDGET, [1024, 1024, BUDGET + 1], 0),
    ("nor what came before it", BUDGET, [1024, BUDGET + 1, 1024, 1024], 2),
    ("0 keeps none", 0, [MESSAGE_OVERHEAD, 1024, 5000], 0),
    ("empty messages count too", BUDGET, [MESSAGE_OVERHEAD] * 100, BUDGET // MESSAGE_OVERHEAD),
]


@pytest.mark.parametrize(
    ("budget", "costs", "latest"), [row[1:] for row in TRIMMING], ids=[row[0] for row in TRIMMING]
)
async def test_a_flow_keeps_the_latest_messages_that_fit(
    budget: int, costs: list[int], latest: int
) -> None:
    part, tctx = history(str(budget))
    with tctx:
        f, messages = websocket_flow()
        sent = [costing(c, from_client=i % 2 == 0) for i, c in enumerate(costs)]
        for m in sent:
            await passes(part, f, m)
            assert sum(map(cost, messages)) <= budget
        # The same objects, the latest, in order.
        assert messages == (sent[-latest:] if latest else [])


async def test_the_total_stays_right_over_many_messages_of_every_size() -> None:
    part, tctx = history("64k")
    with tctx:
        f, _ = websocket_flow()
        sizes = [0, 1, 16, 255, 1000, 4096, 60_000, 65_536, 70_000, 200_000]
        for i in range(500):
            await passes(part, f, message(sizes[i * 7 % len(sizes)], from_client=i % 3 > 0))
            assert f.metadata[KEPT] <= 64 * 1024


async def test_while_its_hook_runs_the_newest_is_the_last_message_for_the_addons_after() -> None:
    """mitmdump's Dumper runs after the script's addons and prints messages[-1]: with a budget
    of 0, each message is still there for it, then gone."""
    part = BoundWebSocketHistory()
    out = io.StringIO()
    dumper = Dumper(out)
    with taddons.context(part, dumper) as tctx:
        tctx.configure(part, **{OPTION: "0"})
        tctx.configure(dumper, flow_detail=3)
        f, messages = websocket_flow()
        for i, from_client in enumerate([True, False, True]):
            text = f"message number {i}"
            messages.append(WebSocketMessage(Opcode.TEXT, from_client, text.encode()))
            before = len(out.getvalue())
            part.websocket_message(f)
            dumper.websocket_message(f)  # no IndexError
            printed = out.getvalue()[before:]
            assert f"{'->' if from_client else '<-'} WebSocket text message" in printed, printed
            assert text in printed, printed
            await next_turn()
            assert messages == []
            assert f.metadata[KEPT] == 0


async def test_an_oversized_message_goes_even_with_a_newer_one_already_behind_it() -> None:
    """mitmproxy relays the next message of the same read before the loop turns: the newer
    one is in the list, its hook not yet called, when the oversized one is dropped."""
    part, tctx = history(str(BUDGET))
    with tctx:
        f, messages = websocket_flow()
        big, small = message(BUDGET), message(10)
        messages.append(big)
        part.websocket_message(f)
        messages.append(small)
        await next_turn()
        assert messages == [small]
        part.websocket_message(f)
        assert f.metadata[KEPT] == cost(small)
        assert messages == [small]


async def kilobytes(
    part: BoundWebSocketHistory, f: http.HTTPFlow, n: int
) -> list[WebSocketMessage]:
    """`n` messages costing 1 KiB each pass; they are returned."""
    sent = [costing(1024) for _ in range(n)]
    await passes(part, f, *sent)
    return sent


async def test_a_smaller_budget_applies_at_the_next_message() -> None:
    part, tctx = history(str(BUDGET))
    with tctx:
        f, messages = websocket_flow()
        before = await kilobytes(part, f, 4)
        tctx.configure(part, **{OPTION: "2k"})
        assert messages == before
        assert messages == [before[-1], *await kilobytes(part, f, 1)]


async def test_after_a_script_reload_a_new_instance_goes_on_from_the_flows_total() -> None:
    first, tctx = history(str(BUDGET))
    with tctx:
        f, messages = websocket_flow()
        before = await kilobytes(first, f, 3)
        second = BoundWebSocketHistory()
        second.configure({OPTION})  # as a reload configures the script's new addon
        assert messages == [before[-1], *await kilobytes(second, f, 3)]


async def test_the_counting_sees_every_message_the_history_drops(
    counting_proxy: MakeProxy,
) -> None:
    """The proxy counts a message's bytes before its history may drop it."""
    running = counting_proxy(**{OPTION: "0"})
    f, messages = websocket_flow()
    before = (PROCESS.stats.request_bytes, PROCESS.stats.response_bytes)
    for size, from_client in [(1000, True), (300_000, False), (5, True)]:
        messages.append(message(size, from_client))
        running.proxy.websocket_message(f)
        await next_turn()
        assert messages == []
    after = (PROCESS.stats.request_bytes, PROCESS.stats.response_bytes)
    assert (after[0] - before[0], after[1] - before[1]) == (1005, 300_000)


def test_the_overhead_per_message_covers_what_mitmproxy_holds_for_one() -> None:
    """MESSAGE_OVERHEAD against tracemalloc: a message in a list, its payload aside."""
    count, size = 10_000, 100
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [WebSocketMessage(Opcode.BINARY, True, os.urandom(size)) for _ in range(count)]
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_message = (allocated - count * size) / count
    print(f"{per_message:.0f} bytes per message besides its payload")
    assert len(held) == count and per_message <= MESSAGE_OVERHEAD, f"{per_message:.0f} bytes"
