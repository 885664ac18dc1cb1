"""A real HTTP/3 client for the tests: aioquic's, as in its examples/http3_client.py, but bound to
127.0.0.1 (aioquic's `connect` binds a dual-stack socket on every interface)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection, H3Stream
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

HOST = "127.0.0.1"
# How long a connection attempt or one exchange may take before the test fails.
TIMEOUT = 60.0


class H3Error(Exception):
    """The stream was reset, or the connection closed, before the response was complete."""


@dataclass
class H3Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict), value
        return value


@dataclass
class _Pending:
    response: H3Response = field(default_factory=H3Response)
    body: bytearray = field(default_factory=bytearray)
    done: asyncio.Future[H3Response] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _H3Connection(H3Connection):
    """aioquic 1.2.0's H3Connection, which also accepts a HEAD response without content.

    aioquic checks every response's DATA against its Content-Length, the answer to a HEAD
    included, and closes the whole connection (H3_MESSAGE_ERROR) when they differ. RFC 9114
    section 4.1.2 allows a non-zero Content-Length on a response defined to have no content,
    and a HEAD answer keeps the Content-Length a GET would have (RFC 9110 section 8.6).
    """

    head_streams: set[int]

    def _check_content_length(self, stream: H3Stream) -> None:
        if stream.stream_id not in self.head_streams:
            super()._check_content_length(stream)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = _H3Connection(self._quic)
        self._h3.head_streams = set()
        self._pending: dict[int, _Pending] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self._pending:
            self._fail(event.stream_id, f"stream reset, error code {event.error_code}")
        elif isinstance(event, ConnectionTerminated):
            for stream_id in list(self._pending):
                self._fail(stream_id, f"connection closed: {event.reason_phrase!r}")
        for h3_event in self._h3.handle_event(event):
            self._h3_event_received(h3_event)

    def _fail(self, stream_id: int, reason: str) -> None:
        pending = self._pending.pop(stream_id)
        if not pending.done.done():
            pending.done.set_exception(H3Error(reason))

    def _h3_event_received(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        pending = self._pending.get(event.stream_id)
        if pending is None:
            return
        if isinstance(event, HeadersReceived):
            for name, value in event.headers:
                if name == b":status":
                    pending.response.status = int(value)
                elif not name.startswith(b":"):
                    pending.response.headers.append((name.decode(), value.decode()))
        else:
            pending.body += event.data
        if event.stream_ended:
            del self._pending[event.stream_id]
            pending.response.body = bytes(pending.body)
            pending.done.set_result(pending.response)

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        body: Iterable[bytes] | AsyncIterable[bytes] | None = None,
        authority: str = "localhost",
    ) -> H3Response:
        """Send one request on a new stream; its body, if any, piece by piece as given (without
        Content-Length unless `headers` has one); return the whole response."""
        stream_id = self._quic.get_next_available_stream_id()
        pending = self._pending[stream_id] = _Pending()
        if method == "HEAD":
            self._h3.head_streams.add(stream_id)
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers),
        ]
        self._h3.send_headers(stream_id, head, end_stream=body is None)
        self.transmit()
        if body is not None:
            async with aclosing(_pieces(body)) as pieces:
                async for piece in pieces:
                    if pending.done.done():
                        break  # answered early, or reset: nothing more to send
                    self._h3.send_data(stream_id, piece, end_stream=False)
                    self.transmit()
                    # Let the event loop send and take acknowledgements between pieces.
                    await asyncio.sleep(0)
            if not pending.done.done():
                self._h3.send_data(stream_id, b"", end_stream=True)
                self.transmit()
        async with asyncio.timeout(TIMEOUT):
            return await pending.done


async def _pieces(body: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncGenerator[bytes]:
    if isinstance(body, AsyncIterable):
        async for piece in body:
            yield piece
    else:
        for piece in body:
            yield piece


@asynccontextmanager
async def h3_connect(
    port: int, ca_file: Path, server_name: str = "localhost"
) -> AsyncIterator[H3Client]:
    """A QUIC connection to 127.0.0.1:`port` offering ALPN h3, with `server_name` as SNI,
    trusting only `ca_file`."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=server_name
    )
    configuration.load_verify_locations(cafile=str(ca_file))
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: H3Client(QuicConnection(configuration=configuration)), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    assert isinstance(protocol, H3Client)
    try:
        protocol.connect((HOST, port))
        async with asyncio.timeout(TIMEOUT):
            await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        async with asyncio.timeout(TIMEOUT):
            await protocol.wait_closed()
        transport.close()
