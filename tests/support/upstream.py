"""The tests' upstream HTTP/1.1 server, run as its own process: python upstream.py PORT.

GET/POST/... any path: 200 and a JSON echo of method, path, headers (order and duplicates
kept) and the body's length and sha256.
/code/NNN: that status code, with the echo as body where the code allows one.
/respheaders: response headers with duplicates, in a known order.
/download?size=N[&chunked=1][&gzip=1]: N bytes, with Content-Length or chunked; with gzip=1,
  those N bytes gzip-compressed (Content-Encoding: gzip), the length the compressed one.
/fault?sent=M[&length=N][&chunked=1][&end=reset|close]: the head of an N-byte body (or a
  chunked one), M bytes of it (then, chunked, a chunk cut short), then a reset (SO_LINGER 0,
  no FIN) or a plain close.
/slow?delay=S[&size=N]: waits S seconds, or until the client goes away, then N bytes.
/trickle?size=N&pieces=K&interval=S[&chunked=1]: N bytes in K pieces, S seconds apart.
/ws with a WebSocket upgrade (RFC 6455, no extensions): a 101, then every message echoed back
  as it came (text or binary, in order), pings answered, the close handshake returned.
Bodies are the PATTERN's bytes; waits are capped at MAX_WAIT. With UPSTREAM_RECORD set, each
request's method and target are logged to stdout, for a test to see what reached the upstream.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from wsproto.connection import SERVER, Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)
# /fault's chunked body ends this many bytes into a chunk announced as CHUNK bytes.
FAULT_PARTIAL = 1000
# No endpoint keeps a thread waiting longer than this, whatever it is asked.
MAX_WAIT = 120.0
# With UPSTREAM_RECORD set (processes.py's start_upstream(record=True)), every request's
# method and target go to stdout as "request METHOD TARGET", one line each, as its head is read.
RECORDING = bool(os.environ.get("UPSTREAM_RECORD"))
RECORD_LOCK = threading.Lock()
# RFC 6455, section 1.3: appended to the client's key to prove the server read the handshake.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def is_pattern(data: bytes) -> bool:
    """Whether `data` is a prefix of the endless 0..255 pattern the bodies are made of."""
    return data == (PATTERN * (len(data) // len(PATTERN) + 1))[: len(data)]


def pattern_bytes(size: int) -> list[bytes]:
    """The download body as chunks: a fixed pattern a client can check."""
    full, rest = divmod(size, CHUNK)
    return [PATTERN] * full + ([PATTERN[:rest]] if rest else [])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm the body would wait
    # for the proxy's delayed ACK, some 40 ms on every small response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline()
                length = int(line.split(b";")[0].strip(), 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = length
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        raise ConnectionError("client went away mid-chunk")
                    digest.update(data)
                    left -= len(data)
                    size += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", 0))
            while left:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise ConnectionError("client went away mid-body")
                digest.update(data)
                left -= len(data)
                size += len(data)
        return size, digest.hexdigest()

    def _handle(self) -> None:
        if RECORDING:
            with RECORD_LOCK:
                sys.stdout.write(f"request {self.command} {self.path}\n")
                sys.stdout.flush()
        size, sha = self._read_body()
        url = urlsplit(self.path)
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        if url.path == "/download":
            self._download(parse_qs(url.query))
            return
        faults = {"/fault": self._fault, "/slow": self._slow, "/trickle": self._trickle}
        if url.path in faults:
            faults[url.path](parse_qs(url.query))
            return
        echo = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": size,
                "body_sha256": sha,
            }
        ).encode()
        status = 200
        extra: list[tuple[str, str]] = []
        if url.path.startswith("/code/"):
            status = int(url.path.removeprefix("/code/"))
        elif url.path == "/respheaders":
            extra = [
                ("Set-Cookie", "a=1"),
                ("X-Dup", "one"),
                ("Set-Cookie", "b=2"),
                ("X-Dup", "two"),
            ]
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        if status in (204, 304) or self.command == "HEAD":
            self.send_header("Content-Length", "0" if status in (204, 304) else str(len(echo)))
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)

    def _websocket(self) -> None:
        """Accept the upgrade, then echo every message until the client closes."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        self.close_connection = True
        if self.headers.get("Sec-WebSocket-Version") != "13" or not key:
            self.send_error(400, "not a WebSocket version 13 handshake")
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        ws = Connection(SERVER)
        while ws.state is not ConnectionState.CLOSED:
            # read1: what the request's buffered reader already holds, else one recv.
            try:
                data = self.rfile.read1(CHUNK)
            except OSError:
                data = b""
            ws.receive_data(data or None)
            out = bytearray()
            for event in ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    # Each piece goes back as it came: messages keep their boundaries.
                    out += ws.send(event)
                elif isinstance(event, Ping):
                    out += ws.send(event.response())
                elif isinstance(event, CloseConnection) and data:
                    out += ws.send(event.response())
            if out:
                self.wfile.write(bytes(out))
            if not data:
                break

    def _begin_body(self, length: int, chunked: bool, encoding: str | None = None) -> None:
        """A 200 head for a binary body of `length` bytes, or chunked, in `encoding` if any."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_piece(self, piece: bytes, chunked: bool) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)

    def _download(self, query: dict[str, list[str]]) -> None:
        size = int(query["size"][0])
        chunked = query.get("chunked") == ["1"]
        chunks = pattern_bytes(size)
        encoding = None
        if query.get("gzip") == ["1"]:
            compressed = gzip.compress(b"".join(chunks), mtime=0)
            chunks = [compressed[i : i + CHUNK] for i in range(0, len(compressed), CHUNK)]
            size, encoding = len(compressed), "gzip"
        self._begin_body(size, chunked, encoding)
        for chunk in chunks:
            self._send_piece(chunk, chunked)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _fault(self, query: dict[str, list[str]]) -> None:
        sent = int(query["sent"][0])
        chunked = query.get("chunked") == ["1"]
        length = 0 if chunked else int(query["length"][0])
        assert chunked or sent < length, "a fault sends less than it announces"
        self._begin_body(length, chunked)
        for chunk in pattern_bytes(sent):
            self._send_piece(chunk, chunked)
        if chunked:
            self.wfile.write(b"%x\r\n%s" % (CHUNK, PATTERN[:FAULT_PARTIAL]))
        self.close_connection = True
        if query.get("end", ["reset"]) == ["reset"]:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Closed here: the server's own shutdown(SHUT_WR) would send a FIN before the reset.
            os.close(self.connection.detach())

    def _client_left_within(self, seconds: float) -> bool:
        """Wait `seconds`; True as soon as the client closes or resets the connection."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if not readable:
                continue
            try:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return True
            except OSError:
                return True
            # The client sent more: it is still there, and we can't wait on it any longer.
            time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def _slow(self, query: dict[str, list[str]]) -> None:
        delay = min(float(query["delay"][0]), MAX_WAIT)
        if self._client_left_within(delay):
            self.close_connection = True
            return
        body = b"".join(pattern_bytes(int(query.get("size", ["1024"])[0])))
        self._begin_body(len(body), chunked=False)
        self.wfile.write(body)

    def _trickle(self, query: dict[str, list[str]]) -> None:
        body = b"".join(pattern_bytes(int(query["size"][0])))
        pieces = max(1, int(query["pieces"][0]))
        interval = min(float(query["interval"][0]), MAX_WAIT / pieces)
        chunked = query.get("chunked") == ["1"]
        self._begin_body(len(body), chunked)
        step = -(-len(body) // pieces)
        for i in range(pieces):
            if i:
                time.sleep(interval)
            piece = body[i * step : (i + 1) * step]
            if piece:
                self._send_piece(piece, chunked)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


if __name__ == "__main__":
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    if len(sys.argv) == 4:  # CERT KEY: HTTPS, HTTP/1.1 by ALPN
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        context.set_alpn_protocols(["http/1.1"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()
