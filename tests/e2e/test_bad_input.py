"""End to end: bad option values and malformed HTTP are refused cleanly, and never counted."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.http_client import (
    RawResponse,
    assert_good_request_served,
    counter_of,
    raw_exchange,
)
from tests.support.processes import Process, Proxy, ProxyFactory, free_port, proxy_command, wait_for

# How long a mitmdump with a bad option may take to give up: start-up plus error, on a busy
# machine (it takes about a second on an idle one).
EXIT_TIMEOUT = 30.0

# (option as given to --set, the option's name the message must contain)
BAD_OPTIONS = [
    ("counter_redis_url=http://x", "counter_redis_url"),
    ("counter_redis_url=redis://host:notaport", "counter_redis_url"),
    ("counter_key=", "counter_key"),
    ("counter_status_path=status", "counter_status_path"),
    ("counter_status_path=/a?b", "counter_status_path"),
    ("counter_stream_threshold=lots", "counter_stream_threshold"),
    ("counter_stream_threshold=-1", "counter_stream_threshold"),
    ("counter_websocket_history=lots", "counter_websocket_history"),
    ("counter_metrics_path=metrics", "counter_metrics_path"),
    ("counter_metrics_path=/status", "counter_metrics_path"),
    ("counter_allow_from=10.0.0.256", "counter_allow_from"),
    ("counter_allow_from=10.0.0.1/8", "counter_allow_from"),
    ("counter_allow_from=127.0.0.1,,::1", "counter_allow_from"),
]


@pytest.mark.parametrize(("setting", "option"), BAD_OPTIONS, ids=[s for s, _ in BAD_OPTIONS])
def test_bad_option_value_exits_with_message(
    tmp_path: Path, upstream: str, redis_url: str, setting: str, option: str
) -> None:
    args = [] if option == "counter_redis_url" else ["--set", f"counter_redis_url={redis_url}"]
    command = proxy_command(
        "mitmdump", upstream, free_port(), tmp_path / "confdir", *args, "--set", setting
    )
    proc = Process(command, tmp_path / "mitmdump.log")
    start = time.monotonic()
    try:
        code = proc.popen.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise AssertionError(
            f"mitmdump kept running with --set {setting}:\n{proc.output()}"
        ) from None
    finally:
        proc.stop()
    elapsed = time.monotonic() - start
    output = proc.output()
    assert code != 0, f"exit code {code} with --set {setting}:\n{output}"
    assert option in output, output
    assert "Traceback" not in output, f"--set {setting} (exited after {elapsed:.1f}s):\n{output}"


@pytest.mark.parametrize("userinfo", [":s3cret", "someuser:s3cret"])
def test_redis_password_never_shown(
    start_proxy: ProxyFactory, upstream: str, userinfo: str
) -> None:
    url = f"redis://{userinfo}@127.0.0.1:{free_port()}/0"
    p = start_proxy(upstream, url)
    r = httpx.get(f"{p.url}/needs-counting", timeout=30)
    assert r.status_code == 200
    status = httpx.get(f"{p.url}/status", timeout=30)
    assert status.status_code == 503, status.text
    assert "s3cret" not in status.text
    # The failed write is reported in the log; wait for that report, then check it.
    wait_for(lambda: "Redis unreachable" in p.output(), 15, "the unreachable-Redis warning")
    # Shutting down reports the counts it could not write: that message too.
    p.stop()
    output = p.output()
    assert "lost" in output, output
    assert "s3cret" not in output, output
    assert "***" in output, "the URL is shown redacted"


# --- malformed HTTP on raw sockets -----------------------------------------------------------

MALFORMED = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "binary-garbage": b"\x00\x01\x02 \xff\xfe\xfd hello\r\n\r\n",
    "header-without-colon": b"GET /nocolon HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "content-length-and-transfer-encoding": (
        b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    "conflicting-content-lengths": (
        b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "repeated-content-length": (
        b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: b\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    ),
    "negative-content-length": b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
}

# Valid heads, broken bodies. A request counts once its headers reach the proxy (the
# requestheaders hook), like one whose client goes away mid-body.
MALFORMED_BODY = {
    "bad-chunk-size": (
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n"
    ),
    "bad-chunk-terminator": (
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhelloXX0\r\n\r\n"
    ),
}


def assert_refused(r: RawResponse, case: str) -> None:
    """Refused by the proxy: a 4xx answer from mitmproxy or a closed connection, no more."""
    assert r.closed_by_peer, f"{case}: the proxy left the connection open: {r.raw!r}"
    if r.raw:
        assert r.status is not None and 400 <= r.status < 500, f"{case}: {r.raw!r}"
        assert b"BaseHTTP" not in r.raw, f"{case}: the upstream answered: {r.raw!r}"


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_refused_and_not_counted(proxy: Proxy, case: str) -> None:
    before = counter_of(proxy.url)
    r = raw_exchange(proxy.port, MALFORMED[case])
    assert_refused(r, case)
    assert counter_of(proxy.url) == before, f"{case} was counted"
    assert_good_request_served(proxy.port)
    assert counter_of(proxy.url) == before + 1


@pytest.mark.parametrize("case", list(MALFORMED_BODY))
def test_malformed_body_is_refused_and_counted_once(proxy: Proxy, case: str) -> None:
    before = counter_of(proxy.url)
    assert_refused(raw_exchange(proxy.port, MALFORMED_BODY[case]), case)
    assert counter_of(proxy.url) == before + 1
    assert_good_request_served(proxy.port)
    assert counter_of(proxy.url) == before + 2


def test_all_malformed_then_good_requests(proxy: Proxy) -> None:
    """Every malformed request in a row, good ones in between: only the good ones count."""
    start = counter_of(proxy.url)
    counted: list[str] = []
    good = 0
    for case, data in MALFORMED.items():
        before = counter_of(proxy.url)
        assert_refused(raw_exchange(proxy.port, data), case)
        if counter_of(proxy.url) != before:
            counted.append(case)
        assert_good_request_served(proxy.port)
        good += 1
    assert counted == [], f"malformed requests that were counted: {counted}"
    assert counter_of(proxy.url) == start + good


def big_header_request(path: bytes) -> bytes:
    """A request with a 200 KiB header value."""
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
        + b"a" * (200 * 1024)
        + b"\r\n\r\n"
    )


def test_oversized_header_value(proxy: Proxy) -> None:
    """A 200 KiB header value: well-formed HTTP, so mitmproxy may forward it (the upstream
    then refuses it) or refuse it itself. Counted exactly when it reached the upstream."""
    before = counter_of(proxy.url)
    r = raw_exchange(proxy.port, big_header_request(b"/big-header"))
    assert r.closed_by_peer, r.raw[:300]
    assert r.status is not None and 400 <= r.status < 500, r.raw[:300]
    forwarded = r.header("server") is not None and "BaseHTTP" in (r.header("server") or "")
    assert counter_of(proxy.url) == before + (1 if forwarded else 0), r.raw[:300]
    assert_good_request_served(proxy.port)
    assert counter_of(proxy.url) == before + (2 if forwarded else 1)


def test_oversized_header_on_status_path(proxy: Proxy) -> None:
    """A 200 KiB header on /status: answered or refused, never forwarded or counted."""
    before = counter_of(proxy.url)
    r = raw_exchange(proxy.port, big_header_request(b"/status"))
    assert r.status in (200, 400, 431, None), r.raw[:300]
    assert b"BaseHTTP" not in r.raw
    assert counter_of(proxy.url) == before
    assert_good_request_served(proxy.port)
    assert counter_of(proxy.url) == before + 1
