"""End to end: clients that go away in the middle of a large streamed body.

A client sends 16 MiB of a 256 MiB (or chunked) upload, or reads 16 MiB of a 1 GiB download,
then closes the connection (FIN and RST in turn), ten times over. Each request is counted
exactly once; after each, the proxy's file descriptors and TCP connections are back to their
baseline and its memory near it, with no growth from one abort to the next; a normal request
still works afterwards.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.support.http_client import (
    HEADER_END,
    assert_good_request_served,
    close_with_reset,
    counter_of,
    parse_response,
)
from tests.support.processes import Proxy
from tests.support.procfs import KiB, MiB, Resources, RssSampler, Snapshot, check_peak_rss
from tests.support.upstream import PATTERN, is_pattern

DECLARED_UPLOAD = 256 * MiB
DOWNLOAD_SIZE = 1024 * MiB
SENT = 16 * MiB
REPEATS = 10
# Memory may wobble between aborts; a leak of the bodies would add 16 MiB per abort (and
# 10 of them exceed MAX_RSS_GROWTH).
MAX_RSS_DRIFT = 16 * MiB
WARM_UPS = 2
SOCKET_TIMEOUT = 60.0
FRAMINGS = ["content-length", "chunked"]


def warm_up(proxy: Proxy) -> None:
    """One whole streamed upload and download first, so the baseline has what they set up."""
    with httpx.Client(timeout=60) as client:
        r = client.post(f"{proxy.url}/warm-up", content=iter([PATTERN] * 32))
        assert r.status_code == 200 and r.json()["body_len"] == 32 * len(PATTERN), r.text
        r = client.get(f"{proxy.url}/download?size={2 * MiB}&chunked=1")
        assert r.status_code == 200 and len(r.content) == 2 * MiB


def abort_upload(port: int, i: int, chunked: bool, reset: bool) -> None:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {DECLARED_UPLOAD}"
    head = f"POST /upload/{i} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode()
    piece = b"%x\r\n%s\r\n" % (len(PATTERN), PATTERN) if chunked else PATTERN
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(head)
        for _ in range(SENT // len(PATTERN)):
            sock.sendall(piece)
        if reset:
            close_with_reset(sock)


def abort_download(port: int, i: int, chunked: bool, reset: bool) -> None:
    query = f"size={DOWNLOAD_SIZE}&i={i}" + ("&chunked=1" if chunked else "")
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(f"GET /download?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # Each pass receives at least a byte, or the socket times out or the proxy closes.
        while len(received) < SENT or HEADER_END not in received[:4096]:
            data = sock.recv(256 * KiB)
            assert data, f"the proxy closed the download after {len(received)} bytes"
            received += data
        if reset:
            close_with_reset(sock)
    r = parse_response(bytes(received), closed_by_peer=False)
    assert r.status == 200, r.raw[:300]
    if chunked:
        assert r.header("transfer-encoding") == "chunked", r.headers
        assert not r.complete
    else:
        assert r.header("content-length") == str(DOWNLOAD_SIZE), r.headers
    # Less the head, the chunks' framing and a chunk cut short.
    assert len(r.body) >= SENT - 128 * KiB, len(r.body)
    assert is_pattern(r.body), "the download's bytes differ from the upstream's"


def run_aborts(proxy: Proxy, redis_url: str, direction: str, chunked: bool) -> None:
    """REPEATS aborted transfers, checked one by one, then the whole against the baseline."""
    warm_up(proxy)
    resources = Resources(proxy, redis_url)
    abort = abort_upload if direction == "upload" else abort_download
    after: list[Snapshot] = []
    with RssSampler(proxy.pid) as peak:
        for i in range(REPEATS):
            reset = i % 2 == 1
            abort(proxy.port, i, chunked, reset)
            # The proxy read the head before the body went through: it is counted by now.
            assert counter_of(proxy.url) == WARM_UPS + i + 1
            after.append(resources.settle(f"{direction} {i} aborted ({'RST' if reset else 'FIN'})"))
    rss = [s.rss for s in after]
    print(
        f"{direction}s aborted after {SENT // MiB} MiB ({'chunked' if chunked else 'declared'}):"
        f" RSS after each, MiB above baseline: "
        f"{[round((r - resources.baseline.rss) / MiB, 1) for r in rss]}"
    )
    for i, snapshot in enumerate(after):
        resources.check_rss(snapshot, f"abort {i}")
    assert rss[-1] - rss[0] < MAX_RSS_DRIFT, "the proxy's memory grew from abort to abort"
    check_peak_rss(peak, resources.baseline, f"{REPEATS} aborted {direction}s")

    assert_good_request_served(proxy.port, timeout=30)
    assert counter_of(proxy.url) == WARM_UPS + REPEATS + 1
    resources.settle("a good request")


@pytest.mark.parametrize("framing", FRAMINGS)
def test_upload_aborted_midway_is_counted_once_and_leaks_nothing(
    proxy: Proxy, redis_url: str, framing: str
) -> None:
    """16 MiB of a 256 MiB (or chunked) upload, then the client closes, ten times."""
    run_aborts(proxy, redis_url, "upload", framing == "chunked")


@pytest.mark.parametrize("framing", FRAMINGS)
def test_download_aborted_midway_is_counted_once_and_leaks_nothing(
    proxy: Proxy, redis_url: str, framing: str
) -> None:
    """16 MiB of a 1 GiB download (declared or chunked), then the client closes, ten times."""
    run_aborts(proxy, redis_url, "download", framing == "chunked")
