"""End to end: body bytes both ways (/status's request_bytes and response_bytes, /metrics' byte
counters) through a real mitmdump, real clients and a real redis-server.

Exact for small bodies, buffered or streamed, declared or chunked, plain or gzip-compressed
(counted compressed), over HTTP/1.1 and HTTP/2; exact for 64 MiB streamed each way, with
mitmdump's memory flat; bounded for a download the client cuts short; counted as they pass for
WebSocket messages; exact, with the windows, through Redis SIGKILLs with a write's reply in
flight.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.bodies import MiB, check_pattern_download, echo, numbered_chunks, report
from tests.support.http2 import h2_client
from tests.support.http_client import HEADER_END, close_with_reset, parse_response
from tests.support.metrics import scrape
from tests.support.processes import Proxy, ProxyFactory
from tests.support.procfs import KiB, RssSampler
from tests.support.redis_kills import killed_mid_write
from tests.support.time_and_bytes import (
    HOUR,
    MINUTE,
    Counts,
    all_buckets,
    bytes_are,
    counts_of,
    poll_counts,
    stored_bytes,
)
from tests.support.upstream import PATTERN, is_pattern
from tests.support.websocket import Message, websocket
from tests.support.websocket import echo as ws_echo

HTTP1, HTTP2 = "HTTP/1.1", "HTTP/2"
# Around the default counter_stream_threshold (1m): buffered up to it, streamed above.
SIZES = [0, 1, 1000, 100 * KiB, 2 * MiB]
GZIPPED = [100 * KiB, 4 * MiB]
# Every wait on the proxy: generous for a busy 2-core machine.
SETTLE = 30.0
TIMEOUT = httpx.Timeout(60.0)
BIG = 64 * MiB
# A buffered 64 MiB body would grow mitmdump by at least that much; streamed, it grows by
# well under 1 MiB here.
FLAT = 16 * MiB
# The aborted download: declared this long, cut once the client has read this much.
ABORTED_SIZE = 1024 * MiB
READ_BEFORE_CUT = 16 * MiB
# The client's receive buffer, fixed (the kernel doubles it, and stops tuning it).
CLIENT_RCVBUF = 256 * KiB
# Each load request's body, in the Redis SIGKILL test.
LOAD_BODY = b"b" * 300


@dataclass
class Tally:
    """Body bytes the test's clients sent and received, as they travelled."""

    request: int = 0
    response: int = 0

    @property
    def both(self) -> tuple[int, int]:
        return self.request, self.response

    def add(self, sent: int, response: httpx.Response) -> None:
        """`sent` body bytes went up; `response`'s body came back, before any decoding."""
        self.request += sent
        self.response += response.num_bytes_downloaded


def pattern(size: int) -> bytes:
    """The upstream's download body of `size` bytes."""
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def client_for(proxy: Proxy, version: str) -> httpx.Client:
    """A client speaking `version` to the proxy: plain HTTP/1.1, or HTTP/2 over TLS."""
    if version == HTTP2:
        return h2_client(proxy, timeout=TIMEOUT)
    return httpx.Client(base_url=proxy.url, timeout=TIMEOUT)


def exchange(client: httpx.Client, tally: Tally, up: int, down: int, framing: str) -> None:
    """A POST of `up` bytes answered with `down` bytes of the pattern, each declared or of
    unknown length (`framing`: up/down, each "declared" or "chunked")."""
    body = random.Random(up).randbytes(up)
    chunked_up, chunked_down = (part == "chunked" for part in framing.split("/"))
    query = f"size={down}" + ("&chunked=1" if chunked_down else "")
    content = iter([body] if body else []) if chunked_up else body
    r = client.post(f"/download?{query}", content=content)
    assert r.status_code == 200, r.text[:300]
    assert r.content == pattern(down), f"{up} up, {down} down, {framing}"
    assert r.num_bytes_downloaded == down
    tally.add(up, r)


def gzipped_download(client: httpx.Client, tally: Tally, size: int, chunked: bool) -> None:
    """`size` bytes of the pattern, sent gzip-compressed: counted compressed."""
    r = client.get(f"/download?size={size}&gzip=1" + ("&chunked=1" if chunked else ""))
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip", r.headers
    assert r.content == pattern(size)  # as decoded by httpx
    assert r.num_bytes_downloaded == len(gzip.compress(pattern(size), mtime=0))
    tally.add(0, r)


def small_bodies(client: httpx.Client, version: str) -> Tally:
    """Every SIZES up against SIZES reversed down, in each framing; gzip-compressed downloads,
    buffered and streamed; bodiless answers; and the proxy's own endpoints, asked with a body:
    what the proxy must have counted, as the client saw it go."""
    tally = Tally()
    for framing in ("declared/declared", "declared/chunked", "chunked/declared", "chunked/chunked"):
        for up, down in zip(SIZES, reversed(SIZES), strict=True):
            exchange(client, tally, up, down, framing)
    for size in GZIPPED:
        for chunked in (False, True):
            gzipped_download(client, tally, size, chunked)
    # A HEAD's answer declares a length and carries no body; a 204's carries none either.
    head = client.head("/echo")
    assert head.http_version == version
    assert int(head.headers["content-length"]) > 0 and head.content == b"", head.headers
    tally.add(0, head)
    no_content = client.post("/code/204", content=b"x" * 10)
    assert no_content.status_code == 204
    tally.add(10, no_content)
    # The proxy's own endpoints count nothing, not even a body sent to them.
    assert client.request("GET", "/status", content=b"y" * 100).status_code == 200
    assert client.get("/metrics").status_code == 200
    return tally


def byte_metrics(url: str) -> dict[str, float]:
    """/metrics' four byte counters, by name."""
    samples = scrape(url)
    names = ["shared_request", "shared_response", "request", "response"]
    return {name: samples.value(f"counting_addon_{name}_bytes_total") for name in names}


def check_counted(proxy: Proxy, tally: Tally, redis_client: redis.Redis) -> None:
    """/status, /metrics (shared and this process's) and Redis all hold exactly `tally`."""
    counts = counts_of(proxy.url)
    assert counts.bytes == tally.both, (counts, tally)
    assert stored_bytes(redis_client) == tally.both
    request, response = tally.both
    assert byte_metrics(proxy.url) == {
        "shared_request": request,
        "shared_response": response,
        "request": request,
        "response": response,
    }


@pytest.mark.parametrize("version", [HTTP1, HTTP2])
def test_small_bodies_count_exactly_as_they_travel_buffered_streamed_and_compressed(
    proxy: Proxy, redis_client: redis.Redis, version: str
) -> None:
    """Bodies of 0 to 2 MiB each way, declared (buffered up to 1m) or chunked (streamed),
    gzip-compressed downloads, bodiless answers and bodies sent to /status: /status, /metrics
    and Redis hold exactly the body bytes the client sent and received."""
    with client_for(proxy, version) as client:
        tally = small_bodies(client, version)
    print(f"\n  {version}: {tally.request} bytes up, {tally.response} down")
    check_counted(proxy, tally, redis_client)


def test_bodies_that_mitmproxys_stream_large_bodies_streams_count_their_bytes_too(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """README: mitmproxy's stream_large_bodies keeps working and streams more than
    counter_stream_threshold (the stricter wins); docs/time-and-bytes.md: streamed bodies
    count as they pass. With stream_large_bodies=1k, 100 KiB bodies (declared, under the
    default 1m threshold) are streamed by mitmproxy itself, both ways."""
    p = start_proxy(upstream, redis_url, "--set", "stream_large_bodies=1k")
    tally = Tally()
    with client_for(p, HTTP1) as client:
        exchange(client, tally, 100 * KiB, 100 * KiB, "declared/declared")
    counts = counts_of(p.url)
    assert counts.bytes == tally.both, f"{counts.bytes} counted of {tally.both} sent and received"


@pytest.mark.parametrize("version", [HTTP1, HTTP2])
def test_64_mib_streamed_each_way_counts_exactly_and_mitmdumps_memory_stays_flat(
    proxy: Proxy, redis_client: redis.Redis, version: str
) -> None:
    """Over HTTP/1.1 a declared upload and a chunked download, over HTTP/2 an upload of unknown
    length and a declared download: all streamed (over the 1m threshold, or of unknown
    length), intact, counted exactly (no chunk or frame overhead), mitmdump growing by far
    less than the body."""
    tally = Tally()
    with client_for(proxy, version) as client:
        # One streamed exchange each way first, so the baseline has what streaming sets up.
        exchange(client, tally, MiB, MiB, "chunked/chunked")
        with RssSampler(proxy.pid) as sampler:
            start = time.monotonic()
            digest = hashlib.sha256()
            declared = {"Content-Length": str(BIG)} if version == HTTP1 else {}
            chunks = numbered_chunks(BIG // MiB, MiB, digest)
            r = client.post("/upload", content=chunks, headers=declared)
            assert r.http_version == version
            got = echo(r)
            assert (got["body_len"], got["body_sha256"]) == (BIG, digest.hexdigest())
            tally.add(BIG, r)
            query = f"size={BIG}" + ("&chunked=1" if version == HTTP1 else "")
            with client.stream("GET", f"/download?{query}") as r:
                assert check_pattern_download(r, BIG) == BIG
            assert r.num_bytes_downloaded == BIG
            tally.add(0, r)
            seconds = time.monotonic() - start
    report(f"{version}: 64 MiB up, then down", 2 * BIG, seconds, sampler)
    sampler.check(f"64 MiB each way over {version}", limit=FLAT)
    check_counted(proxy, tally, redis_client)


def excess_bound() -> int:
    """The most body bytes the proxy can have handed on to a client beyond those the client
    read before it cut the connection: the client's receive buffer (twice SO_RCVBUF: the
    kernel doubles it, and does not grow it once set), the proxy's send buffer (at most
    tcp_wmem's maximum), what mitmproxy holds above its socket (it drains its write buffer
    before it reads on: one read of 64 KiB and a write buffer under asyncio's 64 KiB mark),
    and 1 MiB for the chunks relayed between the client's reset and the flow's end."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return 2 * CLIENT_RCVBUF + wmem_max + 128 * KiB + MiB


def read_then_cut(port: int, i: int, reset: bool) -> int:
    """GET an ABORTED_SIZE download on a raw socket with a small receive buffer, read at least
    READ_BEFORE_CUT of its body, then close the connection (a RST, or a FIN, which the kernel
    turns into a RST as data keeps coming); the body bytes read, checked against the pattern."""
    received = bytearray()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.settimeout(SETTLE)
        sock.connect(("127.0.0.1", port))
        request = f"GET /download?size={ABORTED_SIZE}&i={i} HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request.encode())
        head_end = -1
        # Each pass receives at least a byte, or the socket times out or the proxy closes.
        while head_end < 0 or len(received) - head_end < READ_BEFORE_CUT:
            data = sock.recv(256 * KiB)
            assert data, f"the proxy closed the download after {len(received)} bytes"
            received += data
            if head_end < 0 and (found := received.find(HEADER_END)) >= 0:
                head_end = found + len(HEADER_END)
        if reset:
            close_with_reset(sock)
    r = parse_response(bytes(received), closed_by_peer=False)
    assert r.status == 200 and r.header("content-length") == str(ABORTED_SIZE), r.raw[:300]
    assert len(r.body) == len(received) - head_end
    assert is_pattern(r.body), "the download's bytes differ from the upstream's"
    return len(r.body)


def above(response_bytes: int) -> Callable[[Counts], bool]:
    """For poll_counts: more response bytes than `response_bytes`."""
    return lambda counts: counts.response_bytes > response_bytes


def test_an_aborted_download_counts_what_the_client_read_and_no_more_than_socket_buffers_held(
    proxy: Proxy,
) -> None:
    """A 1 GiB streamed download cut by the client after 16 MiB, with a RST and with a FIN:
    the response bytes counted are at least what the client read (counted as they pass, before
    they reach it) and at most excess_bound() more (what the sockets between could hold)."""
    bound = excess_bound()
    before = 0
    for i, reset in enumerate((True, False)):
        read = read_then_cut(proxy.port, i, reset)
        counts = poll_counts(proxy.url, above(before), SETTLE, "the cut download's bytes")
        passed = counts.response_bytes - before
        print(
            f"\n  cut with {'RST' if reset else 'FIN'} after {read / MiB:.2f} MiB read: "
            f"{passed / MiB:.2f} MiB counted, {(passed - read) / KiB:.0f} KiB more "
            f"(at most {bound / MiB:.2f} MiB)"
        )
        assert read <= passed <= read + bound, (read, passed, bound)
        assert (counts.counter, counts.request_bytes) == (i + 1, 0), counts
        before = counts.response_bytes


def test_websocket_messages_count_both_ways_as_they_pass_while_it_stays_open(
    proxy: Proxy,
) -> None:
    """Messages echoed by the upstream: their payloads (a text message's UTF-8 bytes, without
    frame headers or masks) count as request bytes from the client and response bytes to it,
    in /status while the WebSocket is still open; closing it adds nothing."""
    rng = random.Random(20)
    rounds: list[list[Message]] = [
        ["hello", "", "héllo wörld ✓ 🙂", bytes(range(256)), b""],
        [rng.randbytes(MiB), "x" * 70_000, *(rng.randbytes(i * 100) for i in range(20))],
    ]
    expected = 0
    with websocket(proxy) as ws:
        for messages in rounds:
            for message in messages:
                ws_echo(ws, message)
            expected += sum(len(m.encode() if isinstance(m, str) else m) for m in messages)
            poll_counts(proxy.url, bytes_are((expected, expected)), SETTLE, f"{expected} each way")
        # Sent in three frames, relayed by mitmproxy, echoed as one message: its payload once.
        ws.send(["frag", "men", "ted"])
        assert ws.recv(timeout=SETTLE) == "fragmented"
        expected += len("fragmented")
        open_counts = poll_counts(
            proxy.url, bytes_are((expected, expected)), SETTLE, "the fragmented one"
        )
    closed = counts_of(proxy.url)
    assert closed.bytes == open_counts.bytes == (expected, expected), closed
    assert closed.counter == 1, closed


def test_bytes_and_windows_stay_exact_through_redis_killed_with_a_reply_in_flight(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: str
) -> None:
    """POSTs of LOAD_BODY under load while Redis (AOF, fsync always) is SIGKILLed three times
    just after applying a batch whose reply the relay holds back: each batch is resent to the
    restarted Redis, and skipped there. In the end the bytes both ways are exactly what the
    clients sent and received, and every request is in its minute's and its hour's bucket
    exactly once: /status and Redis alike."""
    began = time.time()
    with killed_mid_write(tmp_path, start_proxy, upstream, body=LOAD_BODY) as (
        proxy,
        server,
        results,
    ):
        expected = (results.ok * len(LOAD_BODY), results.response_bytes)
        counts = poll_counts(proxy.url, bytes_are(expected), SETTLE, f"bytes {expected}")
        read_at = time.time()
        with redis.Redis.from_url(server.url) as client:
            assert stored_bytes(client) == expected
            minutes = all_buckets(client, MINUTE)
            hours = all_buckets(client, HOUR)
    print(
        f"\n  {results.ok} requests, {expected[0]} bytes up, {expected[1]} down; "
        f"by minute {minutes}, by hour {hours}; {read_at - began:.1f} s"
    )
    assert counts.counter == counts.last_hour == counts.last_day == results.ok, counts
    assert sum(minutes.values()) == sum(hours.values()) == results.ok
    # Every request arrived since `began`: all in the last minute as long as that is 60 s.
    if read_at < math.floor(began) + 60:
        assert counts.last_minute == results.ok, counts
    else:
        assert counts.last_minute <= results.ok, counts
