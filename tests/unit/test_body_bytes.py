"""Body bytes as they travel, counted per request when its response ends or fails, and a
WebSocket's messages as they pass: through CountingProxy's hooks, as mitmproxy calls them."""

from __future__ import annotations

import gzip

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from counting_addon.process import PROCESS
from counting_addon.traffic.body_bytes import Passing, passed
from tests.support.flows import all_hooks, flow
from tests.support.in_process import InProcessProxy, MakeProxy


def counted(running: InProcessProxy) -> tuple[int, int]:
    """The bytes the counter holds for Redis, both ways."""
    ledger = running.counter.ledger
    return ledger.pending_request_bytes, ledger.pending_response_bytes


def test_a_passing_stream_hands_each_chunk_on_unchanged_and_counts_it() -> None:
    stream = Passing()
    assert [stream(b"abc"), stream(b""), stream(b"de")] == [b"abc", b"", b"de"]
    assert stream.passed == 5


@pytest.mark.parametrize(
    ("message", "complete", "expected"),
    [
        (None, True, 0),
        (tutils.treq(content=b"12345"), True, 5),
        # Cut short while buffered: none of it went on.
        (tutils.treq(content=b"12345"), False, 0),
        (tutils.treq(content=b""), True, 0),
    ],
)
def test_a_buffered_body_counts_once_complete(
    message: http.Message | None, complete: bool, expected: int
) -> None:
    assert passed(message, complete) == expected


def test_a_streamed_body_counts_what_passed_complete_or_not() -> None:
    message = tutils.tresp(content=None)
    message.stream = stream = Passing()
    stream(b"x" * 1000)
    assert passed(message, False) == passed(message, True) == 1000


def test_a_body_another_addon_streams_through_its_own_function_counts_nothing() -> None:
    message = tutils.tresp(content=None)
    message.stream = lambda chunk: chunk
    assert passed(message, True) == 0


async def test_bodies_mitmproxys_stream_large_bodies_streams_count_as_they_pass(
    counting_proxy: MakeProxy,
) -> None:
    """mitmproxy sets `stream = True` before the header hooks for a body over
    stream_large_bodies, however small counter_stream_threshold leaves it: counted all the
    same."""
    running = counting_proxy()
    f = flow("/up", "POST")
    f.request.headers["content-length"] = "5000"
    f.request.stream = True
    running.proxy.requestheaders(f)
    f.response = tutils.tresp(content=None)
    f.response.headers["content-length"] = "7000"
    f.response.stream = True
    running.proxy.responseheaders(f)
    request_stream, response_stream = f.request.stream, f.response.stream
    assert isinstance(request_stream, Passing) and isinstance(response_stream, Passing)
    request_stream(b"x" * 5000)
    response_stream(b"y" * 7000)
    running.proxy.response(f)
    assert counted(running) == (5000, 7000)
    await running.proxy.counting.done()


async def test_both_bodies_count_when_the_response_ends(counting_proxy: MakeProxy) -> None:
    running = counting_proxy()
    before = (PROCESS.stats.request_bytes, PROCESS.stats.response_bytes)
    f = flow("/upload", "POST")
    f.request.content = b"q" * 300
    f.response = tutils.tresp(content=b"r" * 7000)
    running.proxy.requestheaders(f)
    running.proxy.request(f)
    running.proxy.responseheaders(f)
    assert counted(running) == (0, 0)  # not before the response ends
    running.proxy.response(f)
    assert counted(running) == (300, 7000)
    after = (PROCESS.stats.request_bytes, PROCESS.stats.response_bytes)
    assert (after[0] - before[0], after[1] - before[1]) == (300, 7000)
    await running.proxy.counting.done()


async def test_a_compressed_body_counts_as_sent(counting_proxy: MakeProxy) -> None:
    running = counting_proxy()
    f = flow()
    f.request.content = b""
    body = gzip.compress(b"a" * 100_000)
    f.response = tutils.tresp(content=None)
    f.response.headers["content-encoding"] = "gzip"
    f.response.raw_content = body
    running.proxy.requestheaders(f)
    running.proxy.responseheaders(f)
    running.proxy.response(f)
    assert counted(running) == (0, len(body))
    await running.proxy.counting.done()


async def test_a_download_cut_short_counts_the_bytes_that_passed(
    counting_proxy: MakeProxy,
) -> None:
    running = counting_proxy(counter_stream_threshold="1k")
    f = flow("/big")
    f.request.content = b""
    running.proxy.requestheaders(f)
    f.request.timestamp_end = f.request.timestamp_start  # the GET came whole
    f.response = tutils.tresp(content=None)
    f.response.headers["content-length"] = str(10**9)
    running.proxy.responseheaders(f)
    stream = f.response.stream
    assert isinstance(stream, Passing)  # streamed, counted as it passes
    for _ in range(3):
        stream(b"z" * 65536)
    f.error = tflow.terr("connection closed by client")
    running.proxy.error(f)
    assert counted(running) == (0, 3 * 65536)
    await running.proxy.counting.done()


async def test_an_upload_cut_short_counts_what_streamed_and_nothing_buffered(
    counting_proxy: MakeProxy,
) -> None:
    running = counting_proxy(counter_stream_threshold="1k")
    streamed, buffered = flow("/up", "POST"), flow("/up", "POST")
    streamed.request.headers["content-length"] = str(10**6)
    buffered.request.headers["content-length"] = "100"
    for f in (streamed, buffered):
        f.request.content = None
        f.request.timestamp_end = None
        running.proxy.requestheaders(f)
    stream = streamed.request.stream
    assert isinstance(stream, Passing) and not buffered.request.stream
    stream(b"u" * 4096)
    for f in (streamed, buffered):
        f.error = tflow.terr("connection closed by client")
        running.proxy.error(f)
    assert counted(running) == (4096, 0)
    await running.proxy.counting.done()


async def test_the_proxys_own_endpoints_count_no_bytes(counting_proxy: MakeProxy) -> None:
    running = counting_proxy()
    f = flow("/status")
    assert await all_hooks(running.proxy, f) is not None  # answered by the proxy itself
    assert counted(running) == (0, 0)
    await running.proxy.counting.done()


async def test_websocket_messages_count_as_they_pass_by_direction(
    counting_proxy: MakeProxy,
) -> None:
    running = counting_proxy()
    f = tflow.twebsocketflow(messages=False)
    f.client_conn.proxy_mode = flow().client_conn.proxy_mode
    assert f.websocket is not None
    before = (PROCESS.stats.request_bytes, PROCESS.stats.response_bytes)
    messages: list[tuple[bool, bytes | str]] = [
        (True, b"hello"),
        (False, b"w" * 1000),
        (True, "héllo"),
    ]
    for from_client, content in messages:
        data = content.encode() if isinstance(content, str) else content
        kind = Opcode.TEXT if isinstance(content, str) else Opcode.BINARY
        f.websocket.messages.append(WebSocketMessage(kind, from_client, data))
        running.proxy.websocket_message(f)
    # "héllo" travels as 6 bytes of UTF-8.
    assert counted(running) == (5 + 6, 1000)
    after = (PROCESS.stats.request_bytes, PROCESS.stats.response_bytes)
    assert (after[0] - before[0], after[1] - before[1]) == (11, 1000)
    await running.proxy.counting.done()
