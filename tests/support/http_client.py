"""Helpers shared by the end-to-end tests: raw HTTP over sockets, /status reads, bare mitmdump."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field

import httpx

HEADER_END = b"\r\n\r\n"


@dataclass
class RawResponse:
    """What came back on a raw connection: parsed head (if any), body bytes, how it ended."""

    raw: bytes
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    closed_by_peer: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def parse_response(raw: bytes, closed_by_peer: bool) -> RawResponse:
    """Parse one HTTP/1.x response head; everything after the head is returned as `body`."""
    result = RawResponse(raw=raw, closed_by_peer=closed_by_peer)
    head, sep, rest = raw.partition(HEADER_END)
    if not sep:
        return result
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        result.status = int(parts[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        result.headers.append((name.strip(), value.strip()))
    result.body = rest
    return result


def raw_exchange(
    port: int, data: bytes, timeout: float = 10.0, half_close: bool = False
) -> RawResponse:
    """Send `data` on a new connection (then shut down our side if `half_close`) and read until
    the peer closes or `timeout` passes.

    Meant for requests that make the server close the connection (errors, Connection: close):
    everything the server sent, including anything after the response head, is returned.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            # The server may reject and close before reading everything we send.
            pass
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    return parse_response(bytes(received), closed)


def status_of(url: str, path: str = "/status", timeout: float = 10.0) -> httpx.Response:
    return httpx.get(f"{url}{path}", timeout=timeout)


def counter_of(url: str, path: str = "/status") -> int:
    """The `counter` of a 200 /status answer; fails the test on anything else."""
    r = status_of(url, path)
    assert r.status_code == 200, (r.status_code, r.text)
    body = json.loads(r.content)
    assert isinstance(body, dict), body
    value = body["counter"]
    assert isinstance(value, int) and not isinstance(value, bool), body
    return value


def concurrent_gets(
    url: str, count: int, connections: int = 100, timeout: float = 60.0
) -> list[httpx.Response]:
    """GETs of `url`/0 to `url`/`count - 1`, `connections` at a time, all within `timeout` s."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            async with asyncio.timeout(timeout):
                return await asyncio.gather(*(client.get(f"{url}/{i}") for i in range(count)))

    return asyncio.run(run())
