"""HTTP from the tests' side: raw exchanges over sockets, /status reads, sequential and concurrent
GETs."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import httpx

from tests.support.processes import wait_for

HEADER_END = b"\r\n\r\n"
# A 200 /status answer's fields, in order (without counter_by; with it, "by" follows).
STATUS_FIELDS = (
    "counter",
    "uptime",
    "last_minute",
    "last_hour",
    "last_day",
    "request_bytes",
    "response_bytes",
    "responses",
)
STATUS_KEYS = set(STATUS_FIELDS)
# The keys of its "responses": the shared responses by class of status code, each class always.
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# What browsers send as Accept when they open a page: /status answers them the live page.
ACCEPT_CHROMIUM = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,"
    "*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
ACCEPT_FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ACCEPT_SAFARI = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# A request that makes the proxy answer and close: raw tests send it after a bad one.
GOOD_REQUEST = b"GET /good HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@dataclass
class RawResponse:
    """What came back on a raw connection: the first response's head (if any), its body's data
    (de-chunked), whether that body ended as its framing says, and how the connection ended."""

    raw: bytes
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    closed_by_peer: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def parse_response(raw: bytes, closed_by_peer: bool) -> RawResponse:
    """The first HTTP/1.x response in `raw`, parsed by h11, as far as it goes.

    It is read as the answer to a GET, whatever was sent: after a HEAD answer, bytes that
    should not be there then show up as its body. A body cut short (or a head h11 refuses)
    leaves what was read before, with `complete` False.
    """
    result = RawResponse(raw=raw, closed_by_peer=closed_by_peer)
    connection = h11.Connection(h11.CLIENT)
    # h11 reads a response only once it has seen a request go out.
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    connection.receive_data(raw)
    if closed_by_peer:
        connection.receive_data(b"")
    body = bytearray()
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Response):
                result.status = event.status_code
                result.headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in event.headers
                ]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                result.complete = True
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError:
        pass  # cut short: what came before stands
    result.body = bytes(body)
    return result


def raw_exchange(
    port: int, data: bytes, timeout: float = 10.0, half_close: bool = False
) -> RawResponse:
    """Send `data` on a new connection (then shut down our side if `half_close`) and read until
    the peer closes or `timeout` passes.

    Meant for requests that make the server close the connection (errors, Connection: close):
    everything the server sent is in `raw`, the first response parsed from it.
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


def status_json(url: str, timeout: float = 10.0) -> tuple[int, dict[str, object]]:
    """/status's code and JSON body; fails the test if the body isn't a JSON object."""
    r = status_of(url, timeout=timeout)
    assert r.headers.get("content-type") == "application/json", (r.status_code, r.text)
    body = json.loads(r.content)
    assert isinstance(body, dict), (r.status_code, r.text)
    return r.status_code, body


def is_count(value: object) -> bool:
    """An integer of 0 or more (JSON's true is not one)."""
    return type(value) is int and value >= 0


def assert_status_fields(body: dict[str, object]) -> None:
    """A 200 /status body has exactly STATUS_FIELDS, in order, each a count but "responses",
    a count for each of RESPONSE_CLASSES, in order."""
    assert tuple(body) == STATUS_FIELDS, body
    assert all(is_count(body[name]) for name in STATUS_FIELDS if name != "responses"), body
    responses = body["responses"]
    assert isinstance(responses, dict) and tuple(responses) == RESPONSE_CLASSES, body
    assert all(map(is_count, responses.values())), body


def poll_status(
    url: str, accept: Callable[[int, dict[str, object]], bool], timeout: float, what: str
) -> tuple[int, dict[str, object]]:
    """Ask /status until `accept(code, body)` holds; the accepted answer, or the last one in
    the failure."""
    last: list[tuple[int, dict[str, object]]] = []

    def check() -> bool:
        last[:] = [status_json(url)]
        return accept(*last[0])

    try:
        wait_for(check, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last /status answer: {last}") from None
    return last[0]


def counter_is(expected: int) -> Callable[[int, dict[str, object]], bool]:
    """For poll_status: a 200 with `expected` as the counter."""
    return lambda code, body: code == 200 and body.get("counter") == expected


def counter_of(url: str, path: str = "/status", timeout: float = 10.0) -> int:
    """The `counter` of a 200 /status answer; fails the test on anything else."""
    r = status_of(url, path, timeout)
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


def gets_all_ok(url: str, count: int, connections: int, timeout: float = 60.0) -> None:
    """`count` GETs under `url`, `connections` at a time (concurrent_gets); every one must get
    a 200."""
    codes = [r.status_code for r in concurrent_gets(url, count, connections, timeout)]
    assert codes == [200] * count, sorted(set(codes))


def send(url: str, path: str, count: int) -> None:
    """`count` GETs of `path`/0, `path`/1, ... one after another, each of which must be proxied
    with a 200."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(count):
            r = client.get(f"{path}/{i}")
            assert r.status_code == 200, (r.status_code, r.text)


def assert_good_request_served(port: int, timeout: float = 10.0) -> None:
    """GOOD_REQUEST on a new connection is proxied: a 200 with the upstream's echo of it."""
    r = raw_exchange(port, GOOD_REQUEST, timeout)
    assert r.status == 200, r.raw[:300]
    assert b'"path": "/good"' in r.body, r.raw[:300]
    assert json.loads(r.body)["path"] == "/good", r.raw[:300]


def close_with_reset(sock: socket.socket) -> None:
    """Make the coming close() send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
