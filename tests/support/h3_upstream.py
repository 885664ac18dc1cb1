"""The tests' HTTP/3 upstream, run as its own process:
python -m tests.support.h3_upstream PORT CERT KEY.

mitmproxy forwards an HTTP/3 client's requests over HTTP/3 (QUIC) to the upstream, so the
HTTP/1.1 upstream of upstream.py can't serve them. This one listens on 127.0.0.1:PORT (UDP)
with the certificate CERT/KEY and answers like upstream.py does:

It prints "request METHOD PATH" for each request, and "body data for PATH" when the first
bytes of a body arrive.

Any method, any path: 200 and a JSON echo of method, path, headers (pseudo-headers included,
order and duplicates kept) and the body's length and sha256, read as it arrives;
/download?size=N: N bytes of upstream.py's pattern, with Content-Length.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from tests.support.upstream import pattern_bytes


@dataclass
class Exchange:
    """One request as it arrives: its headers, and its body's length and digest so far."""

    headers: list[tuple[bytes, bytes]]
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def header(self, name: bytes) -> str:
        return next((v.decode() for k, v in self.headers if k == name), "")


class EchoServer(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._exchanges: dict[int, Exchange] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self._h3.handle_event(event):
            self._h3_event_received(h3_event)

    def _h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            exchange = self._exchanges.setdefault(event.stream_id, Exchange(event.headers))
            # The tests look for requests here that must never have been forwarded.
            print(f"request {exchange.header(b':method')} {exchange.header(b':path')}", flush=True)
        elif isinstance(event, DataReceived):
            exchange = self._exchanges[event.stream_id]
            if event.data and not exchange.size:
                # The tests watch for this line to see a body arrive while it is being sent.
                print(f"body data for {exchange.header(b':path')}", flush=True)
            exchange.size += len(event.data)
            exchange.digest.update(event.data)
        else:
            return
        if event.stream_ended:
            self._respond(event.stream_id, self._exchanges.pop(event.stream_id))

    def _respond(self, stream_id: int, exchange: Exchange) -> None:
        url = urlsplit(exchange.header(b":path"))
        if url.path == "/download":
            body = b"".join(pattern_bytes(int(parse_qs(url.query)["size"][0])))
            content_type = b"application/octet-stream"
        else:
            body = json.dumps(
                {
                    "method": exchange.header(b":method"),
                    "path": exchange.header(b":path"),
                    "headers": [[k.decode(), v.decode()] for k, v in exchange.headers],
                    "body_len": exchange.size,
                    "body_sha256": exchange.digest.hexdigest(),
                }
            ).encode()
            content_type = b"application/json"
        self._h3.send_headers(
            stream_id,
            [
                (b":status", b"200"),
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        self._h3.send_data(stream_id, body, end_stream=True)
        self.transmit()


async def main(port: int, cert: str, key: str) -> None:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(Path(cert), Path(key))
    await serve("127.0.0.1", port, configuration=configuration, create_protocol=EchoServer)
    print("ready", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
