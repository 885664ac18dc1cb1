"""The tests' upstream HTTP/1.1 server, run as its own process: python upstream.py PORT.

GET/POST/... any path: 200 and a JSON echo of method, path, headers (order and duplicates
kept) and the body's length and sha256.
/code/NNN: that status code, with the echo as body where the code allows one.
/respheaders: response headers with duplicates, in a known order.
/download?size=N[&chunked=1]: N bytes, with Content-Length or chunked.
"""

from __future__ import annotations

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)


def pattern_bytes(size: int) -> list[bytes]:
    """The download body as chunks: a fixed pattern a client can check."""
    full, rest = divmod(size, CHUNK)
    return [PATTERN] * full + ([PATTERN[:rest]] if rest else [])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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
        size, sha = self._read_body()
        url = urlsplit(self.path)
        if url.path == "/download":
            self._download(parse_qs(url.query))
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

    def _download(self, query: dict[str, list[str]]) -> None:
        size = int(query["size"][0])
        chunked = query.get("chunked") == ["1"]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        for chunk in pattern_bytes(size):
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.wfile.write(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


if __name__ == "__main__":
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
