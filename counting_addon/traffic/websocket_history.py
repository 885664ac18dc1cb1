"""Bounds what each WebSocket flow keeps of its messages, so that a long-lived WebSocket holds a
fixed amount of memory however much it carries (mitmproxy#6620).

mitmproxy appends every message of a WebSocket to `flow.websocket.messages` and never removes
one while the connection lives: 1 GiB each way over one connection is 2 GiB of memory, until
it closes. The list is a history, for people to look at, and nothing else needs it:

- mitmproxy's WebSocket layer (mitmproxy/proxy/layers/websocket.py) appends the message it
  reassembled, calls the `websocket_message` hook, then relays that message from its own
  reference (`message.content`, `message.dropped`), never from the list, which it only ever
  appends to;
- addons read the newest one, `flow.websocket.messages[-1]`, during its own hook (the hook's
  documented contract). Some run after this addon: mitmdump's Dumper, which prints each message
  (an IndexError on an empty list, the wrong message on a shortened one), and mitmweb's
  Intercept; then the `update` hook, by which mitmweb's View pushes the flow to the browser;
- mitmweb reads the whole list when asked (tools/web/app.py: the flow's count and total length
  of messages, and the messages themselves), as do `save_stream_file`, HAR export, `cut` and
  `export` when a flow is saved or exported.

So a message older than the newest may go at any time: mitmweb then shows the latest messages,
as many as fit. The newest stays for the rest of its own hook; one that does not fit on its
own is dropped just after, once every addon has seen it (`call_soon`: mitmproxy calls every
addon's hook of one message, and the update hook after them, in one step of one task unless
an addon's hook awaits something). A message too large to keep is gone from mitmweb while an
intercept holds it.

Each message counts at its payload plus what mitmproxy holds for it besides (MESSAGE_OVERHEAD):
a budget of payload bytes alone would let an endless run of empty messages grow without bound.
The running total of what a flow keeps lives in the flow's metadata, so that it outlives a
script reload and goes with the flow: each message is added once and subtracted once.
"""

from __future__ import annotations

import asyncio

from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.websocket import WebSocketMessage

from counting_addon.options import parse_size, parsed, reported_cleanly

OPTION = "counter_websocket_history"
DEFAULT = "256k"
# What mitmproxy holds for one message besides its payload, in bytes: the WebSocketMessage
# object and its attributes' values, the bytes object's header, the list's slot. Measured by
# tracemalloc on CPython 3.13 (tests/unit/test_websocket_history.py checks it still covers it).
MESSAGE_OVERHEAD = 256
# flow.metadata: what the flow's kept messages cost, in bytes (each at `cost`).
KEPT = "counting_addon.websocket_history"


def cost(message: WebSocketMessage) -> int:
    """What keeping `message` costs against the budget."""
    return len(message.content) + MESSAGE_OVERHEAD


def drop_oldest(messages: list[WebSocketMessage], kept: int, budget: int, newest: int) -> int:
    """Drops messages from the front of `messages`, whose costs total `kept`, until the rest
    fit in `budget` or only the `newest` last ones are left; returns what the rest cost.

    Each message is subtracted once, when it goes: no sum over the list. The slice deletion
    moves the pointers left, at most budget / MESSAGE_OVERHEAD of them, in one memmove.
    """
    dropped = 0
    while kept > budget and len(messages) - dropped > newest:
        kept -= cost(messages[dropped])
        dropped += 1
    del messages[:dropped]
    return kept


class BoundWebSocketHistory:
    """Keeps the latest messages of each WebSocket flow that fit in `counter_websocket_history`
    bytes, dropping older ones as new ones pass; a message larger than the budget is not kept,
    and 0 keeps none. Sees proxied flows only (proxy.py)."""

    def __init__(self) -> None:
        self.budget = parse_size(DEFAULT)

    def load(self, loader: Loader) -> None:
        loader.add_option(
            OPTION,
            str,
            DEFAULT,
            "The most bytes of recent messages each WebSocket flow keeps for mitmweb to show: "
            "the latest that fit; older ones are dropped as new ones pass, and a message "
            "larger than this is not kept. Bytes, or with a k/m/g suffix; 0 keeps none.",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        if OPTION in updated:
            # A smaller budget applies to each flow at its next message.
            self.budget = parsed(OPTION, parse_size)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket
        messages = flow.websocket.messages
        newest = messages[-1]
        kept = drop_oldest(messages, flow.metadata.get(KEPT, 0) + cost(newest), self.budget, 1)
        flow.metadata[KEPT] = kept
        if kept > self.budget:
            # The newest alone is left, and does not fit: the addons after this one still
            # read it as messages[-1] in this hook.
            asyncio.get_running_loop().call_soon(drop_newest, flow, newest)


def drop_newest(flow: http.HTTPFlow, message: WebSocketMessage) -> None:
    """Drops `message`, the one message kept and too large to keep, once every addon's hook of
    it has run. Newer messages may follow it in the list by now (mitmproxy goes on relaying as
    soon as the hooks return), not yet counted: nothing kept is left."""
    assert flow.websocket
    messages = flow.websocket.messages
    if messages and messages[0] is message:
        del messages[0]
        flow.metadata[KEPT] = 0
