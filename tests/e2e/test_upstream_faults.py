"""End to end: an upstream that is down, fails mid-body, or is very slow.

Each request the proxy receives is counted exactly once whatever the upstream does; a failed
one ends in an error the client can see (a 502, or a body cut short, never one that looks
complete); other requests keep being served promptly; and afterwards the proxy holds on to
nothing: its file descriptors and TCP connections return to their baseline, its memory stays
near it.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from tests.support.http_client import (
    RawResponse,
    assert_good_request_served,
    close_with_reset,
    concurrent_gets,
    counter_of,
    raw_exchange,
)
from tests.support.processes import Proxy, ProxyFactory, free_port, wait_for
from tests.support.procfs import KiB, MiB, Resources, RssSampler, check_peak_rss
from tests.support.upstream import FAULT_PARTIAL, is_pattern


def from_mitmproxy(r: RawResponse | httpx.Response) -> bool:
    """Answered by mitmproxy itself (its error responses name it as the server)."""
    server = r.header("server") if isinstance(r, RawResponse) else r.headers.get("server")
    return (server or "").startswith("mitmproxy")


# --- 1. upstream down --------------------------------------------------------------------------

SEQUENTIAL = 20
CONCURRENT = 30


def test_upstream_down_every_request_gets_502_and_is_counted(
    start_proxy: ProxyFactory, redis_url: str
) -> None:
    """Nothing listens on the upstream port: each request gets mitmproxy's 502, is counted
    exactly once, and /status still answers 200."""
    p = start_proxy(f"http://127.0.0.1:{free_port()}", redis_url)
    resources = Resources(p, redis_url)
    responses: list[httpx.Response] = []
    with httpx.Client(base_url=p.url, timeout=30) as client:
        for i in range(SEQUENTIAL):
            if i % 2:
                responses.append(client.post(f"/post/{i}", content=b"x" * (i * 100)))
            else:
                responses.append(client.get(f"/get/{i}"))
    responses += concurrent_gets(f"{p.url}/concurrent", CONCURRENT)

    codes = Counter(r.status_code for r in responses)
    print(f"{len(responses)} requests to a dead upstream: {dict(codes)}")
    assert codes == {502: SEQUENTIAL + CONCURRENT}
    for r in responses:
        assert from_mitmproxy(r), (r.headers, r.text)
    assert counter_of(p.url) == SEQUENTIAL + CONCURRENT
    resources.settle(f"{len(responses)} requests to a dead upstream")
    # Nothing was counted late or twice while settling.
    assert counter_of(p.url) == SEQUENTIAL + CONCURRENT


# --- 2. upstream failing mid-body --------------------------------------------------------------

FAULT_REPEATS = 20
# The upstream's query for each framing, and how many body bytes it sends before failing.
FAULTS = {
    # 512 KiB declared: under the 1 MiB threshold, so the proxy buffers it.
    "content-length-buffered": ("length=524288&sent=131072", 128 * KiB),
    # 8 MiB declared: streamed.
    "content-length-streamed": ("length=8388608&sent=2097152", 2 * MiB),
    # Unknown length: streamed. The body ends FAULT_PARTIAL bytes into a chunk.
    "chunked": ("chunked=1&sent=2097152", 2 * MiB + FAULT_PARTIAL),
}


def check_failed_response(r: RawResponse, framing: str, end: str, sent: int) -> str:
    """Check what the client saw of an upstream failing mid-body; a name for it."""
    assert r.closed_by_peer, f"the proxy left the connection open: {r.raw[:300]!r}"
    if r.status == 502 and from_mitmproxy(r):
        # The upstream's head can be lost with a reset: the proxy had nothing to forward.
        # A FIN loses nothing, so a streamed body must have started by then.
        assert framing == "content-length-buffered" or end == "reset", r.raw[:300]
        return "502"
    assert framing != "content-length-buffered", (
        f"the proxy forwarded the head of a buffered body it never got whole: {r.raw[:300]!r}"
    )
    assert r.status == 200, r.raw[:300]
    if framing == "chunked":
        assert r.header("transfer-encoding") == "chunked", r.headers
        assert not r.complete, "the proxy ended a cut-short chunked body as if it were whole"
    else:
        declared = int(r.header("content-length") or 0)
        assert len(r.body) < declared, f"a complete {declared}-byte body from a failing upstream"
    assert is_pattern(r.body), "the body that came through differs from what the upstream sent"
    if end == "close":
        # Nothing is lost before a FIN: the client gets every byte the upstream sent.
        assert len(r.body) == sent, (len(r.body), sent)
    return f"truncated at {len(r.body) // KiB} KiB"


@pytest.mark.parametrize("end", ["reset", "close"])
@pytest.mark.parametrize("framing", list(FAULTS))
def test_upstream_failing_mid_body_is_counted_once_and_leaks_nothing(
    proxy: Proxy, redis_url: str, framing: str, end: str
) -> None:
    """The upstream sends a head, part of the body, then resets (SO_LINGER 0) or closes the
    connection, 20 times, with a good request after each. The client sees a 502 or a
    truncated body, each request counts once, and the proxy keeps serving."""
    query, sent = FAULTS[framing]
    request = (
        f"GET /fault?{query}&end={end} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    resources = Resources(proxy, redis_url)
    outcomes: Counter[str] = Counter()
    with RssSampler(proxy.pid) as peak:
        for _ in range(FAULT_REPEATS):
            r = raw_exchange(proxy.port, request, timeout=30)
            outcomes[check_failed_response(r, framing, end, sent)] += 1
            assert_good_request_served(proxy.port, timeout=30)
    print(f"{framing}, upstream {end}s after {sent} bytes: {dict(outcomes)}")
    assert counter_of(proxy.url) == 2 * FAULT_REPEATS
    after = resources.settle(f"{FAULT_REPEATS} failed and {FAULT_REPEATS} good requests")
    resources.check_rss(after, "the failed requests")
    check_peak_rss(peak, resources.baseline, "the failed requests")
    assert_good_request_served(proxy.port, timeout=30)
    assert counter_of(proxy.url) == 2 * FAULT_REPEATS + 1


# --- 3. a very slow upstream -------------------------------------------------------------------

SLOW_DELAY = 5.0
SLOW_REQUESTS = 4
TRICKLE_PIECES = 10
TRICKLE_INTERVAL = 0.5
TRICKLE_SIZE = 64 * KiB
TRICKLE = f"size={TRICKLE_SIZE}&pieces={TRICKLE_PIECES}&interval={TRICKLE_INTERVAL}"
# A fast request takes milliseconds. Were it to wait on the slow ones, it would take seconds
# (up to SLOW_DELAY) and few would fit in: 1 s is wide of both.
FAST_MEDIAN_LIMIT = 1.0
MIN_FAST_DURING = 10
MAX_FAST = 2000
FAST_BEFORE = 20


@dataclass
class SlowResult:
    path: str
    status: int = 0
    body: bytes = b""
    headers: httpx.Headers | None = None
    seconds: float = 0.0
    first_piece_after: float | None = None
    error: str | None = None
    done: bool = False


def fetch_slow(client: httpx.Client, result: SlowResult) -> None:
    start = time.monotonic()
    body = bytearray()
    try:
        with client, client.stream("GET", result.path) as r:
            result.status, result.headers = r.status_code, r.headers
            for piece in r.iter_raw():
                if result.first_piece_after is None:
                    result.first_piece_after = time.monotonic() - start
                body += piece
    except httpx.HTTPError as e:
        result.error = repr(e)
    result.body = bytes(body)
    result.seconds = time.monotonic() - start
    result.done = True


def fast_latency(client: httpx.Client, path: str) -> float:
    start = time.monotonic()
    response = client.get(path)
    assert response.status_code == 200, response.text
    return time.monotonic() - start


def test_slow_upstream_does_not_hold_up_other_requests(proxy: Proxy, redis_url: str) -> None:
    """Requests the upstream answers after 5 s, or trickles over 4.5 s, are in flight; fast
    requests through the same proxy meanwhile are served promptly; all count exactly."""
    resources = Resources(proxy, redis_url)
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        before = [fast_latency(client, f"/before/{i}") for i in range(FAST_BEFORE)]
    slow = [SlowResult(f"/slow?delay={SLOW_DELAY}&i={i}") for i in range(SLOW_REQUESTS)]
    trickle_chunked = SlowResult(f"/trickle?{TRICKLE}&chunked=1")
    trickle_length = SlowResult(f"/trickle?{TRICKLE}")
    results = [*slow, trickle_chunked, trickle_length]
    # Made here, so that the threads need no time to set them up before sending.
    clients = [httpx.Client(base_url=proxy.url, timeout=60) for _ in results]
    threads = [
        threading.Thread(target=fetch_slow, args=(client, result), daemon=True)
        for client, result in zip(clients, results, strict=True)
    ]
    for t in threads:
        t.start()
    # Each slow request holds two connections of the proxy: the client's and the upstream's.
    # Within 3 s: the trickles end after 4.5 s.
    wait_for(
        lambda: resources.now().connections >= 2 * len(results),
        3.0,
        "the slow requests to reach the upstream",
    )
    during: list[float] = []
    fast = 0
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        while not any(r.done for r in results) and fast < MAX_FAST and time.monotonic() < deadline:
            latency = fast_latency(client, f"/fast/{fast}")
            fast += 1
            if not any(result.done for result in results):
                during.append(latency)
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a slow request did not finish"

    print(
        f"fast requests before: median {statistics.median(before) * 1000:.0f} ms; "
        f"{len(during)} while {len(results)} slow ones were pending: median "
        f"{statistics.median(during) * 1000:.0f} ms, worst {max(during) * 1000:.0f} ms; "
        f"slow: {', '.join(f'{r.seconds:.2f}s' for r in results)}; chunked trickle's first "
        f"piece after {trickle_chunked.first_piece_after or 0:.2f}s"
    )
    assert len(during) >= MIN_FAST_DURING, len(during)
    assert statistics.median(during) < FAST_MEDIAN_LIMIT, statistics.median(during)
    for result in results:
        assert result.error is None, (result.path, result.error)
        assert result.status == 200, (result.path, result.status)
        assert is_pattern(result.body), result.path
    for result in slow:
        assert len(result.body) == 1024, result.path
        assert result.seconds >= SLOW_DELAY, (result.path, result.seconds)  # it really waited
    for result in (trickle_chunked, trickle_length):
        assert len(result.body) == TRICKLE_SIZE, result.path
        assert result.seconds >= (TRICKLE_PIECES - 1) * TRICKLE_INTERVAL, result.seconds
    # The chunked trickle is streamed: its first piece reaches the client seconds before its
    # last (4.5 s apart at the upstream; 1 s leaves a wide margin).
    assert trickle_chunked.headers is not None
    assert trickle_chunked.headers.get("transfer-encoding") == "chunked"
    first, last = trickle_chunked.first_piece_after, trickle_chunked.seconds
    assert first is not None and first < last - 1.0, (first, last)

    total = FAST_BEFORE + len(results) + fast
    assert counter_of(proxy.url) == total
    resources.settle(f"{len(results)} slow and {FAST_BEFORE + fast} fast requests")
    assert counter_of(proxy.url) == total


# The upstream would answer after a minute: a proxy that waited for that to drop its upstream
# connection would not settle within SETTLE_TIMEOUT.
GIVE_UP_DELAY = 60
TIMEOUTS = 3
ABORTS = 4


def test_client_giving_up_on_slow_upstream_is_counted_once_and_leaks_nothing(
    proxy: Proxy, redis_url: str
) -> None:
    """Clients that time out, or close (FIN or RST) while the upstream is still thinking: each
    is counted once, and the proxy drops both connections without waiting for the upstream."""
    resources = Resources(proxy, redis_url)
    for i in range(TIMEOUTS):
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{proxy.url}/slow?delay={GIVE_UP_DELAY}&timeout={i}", timeout=1.0)
        gave_up = time.monotonic() - start
        assert counter_of(proxy.url) == i + 1
        resources.settle(f"a client timing out after {gave_up:.2f}s")
    for i in range(ABORTS):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sock.sendall(
                f"GET /slow?delay={GIVE_UP_DELAY}&abort={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            # Both legs open: the request is with the upstream.
            wait_for(lambda: resources.now().connections == 2, 15, "the upstream connection")
            if i % 2:
                close_with_reset(sock)
        assert counter_of(proxy.url) == TIMEOUTS + i + 1
        resources.settle(f"a client closing ({'RST' if i % 2 else 'FIN'}) while waiting")
    assert_good_request_served(proxy.port, timeout=30)
    assert counter_of(proxy.url) == TIMEOUTS + ABORTS + 1
