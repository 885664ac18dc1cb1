"""Hostile input, end to end (real mitmdump, upstream and Redis): malformed and oversized HTTP
that tests/e2e/test_bad_input.py does not send (header floods, a Content-Length of 5000 digits,
binary request lines and methods, more broken chunked bodies, non-UTF-8 and 64 KiB paths), each
on a normal path and on /status, is refused or proxied, counted exactly as often as it was
proxied, and the proxy keeps serving. /status never reflects what a request sends it. A Redis
URL with a parameter redis-py doesn't know is refused or harmless.

tests/unit/test_hostile_properties.py holds the in-process properties behind these.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from counting_addon.endpoints.live_page import page
from tests.support.http_client import (
    ACCEPT_CHROMIUM,
    STATUS_KEYS,
    RawResponse,
    assert_good_request_served,
    assert_status_fields,
    counter_of,
    raw_exchange,
)
from tests.support.processes import Process, Proxy, ProxyFactory, free_port, proxy_command, wait_for


def test_redis_url_with_unknown_parameter_is_refused_or_harmless(
    tmp_path: Path, upstream: str, redis_url: str
) -> None:
    """End to end, the consequence of test_parse_and_redact_take_any_string (in
    tests/unit/test_hostile_properties.py): a query parameter redis-py doesn't
    know makes every Redis call raise TypeError. mitmdump must either refuse the URL at start
    (naming the option) or run with it: /status answered by the addon (never forwarded), and
    nothing raised from first request to shutdown."""
    url = f"{redis_url}?foo=bar"
    port = free_port()
    command = proxy_command(
        "mitmdump", upstream, port, tmp_path / "confdir", "--set", f"counter_redis_url={url}"
    )
    proc = Process(command, tmp_path / "mitmdump.log")

    def exited_or_serving() -> bool:
        # Not a connect probe: mitmdump may accept one while it shuts down on the bad option.
        return proc.popen.poll() is not None or "listening at" in proc.output()

    try:
        wait_for(exited_or_serving, 30, "mitmdump to serve or exit")
        # A refused option is logged before "listening at"; mitmdump exits right after.
        if "counter_redis_url:" in proc.output():
            assert proc.popen.wait(30) != 0
        else:
            base = f"http://127.0.0.1:{port}"
            for path in ("/status", "/counted", "/status"):
                r = httpx.get(f"{base}{path}", timeout=30)
                print(f"{path}: {r.status_code} {r.text[:120]}")
                if path == "/counted":
                    assert r.status_code == 200, r.text
                else:
                    assert r.status_code in (200, 503), r.text
                    assert "BaseHTTP" not in r.headers.get("server", ""), "forwarded upstream"
                    assert set(r.json()) in (STATUS_KEYS, {"error", "uptime", "pending"})
    finally:
        proc.stop()
    output = proc.output()
    assert "Traceback" not in output, output[-4000:]
    assert "Addon error" not in output, output[-4000:]


# --- hostile HTTP, end to end ----------------------------------------------------------------

# Generous: several proxies and test suites share two cores.
EXCHANGE_TIMEOUT = 30.0


def exchange(port: int, data: bytes, half_close: bool = False) -> RawResponse:
    return raw_exchange(port, data, EXCHANGE_TIMEOUT, half_close)


def request(
    target: bytes, headers: bytes = b"", method: bytes = b"GET", version: bytes = b"HTTP/1.1"
) -> bytes:
    return b"%s %s %s\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (
        method,
        target,
        version,
        headers,
    )


def json_body(r: RawResponse) -> dict[str, object]:
    body = json.loads(r.body)
    assert isinstance(body, dict), r.raw[:300]
    return body


def is_status_answer(r: RawResponse) -> None:
    assert r.header("content-type") == "application/json", r.raw[:300]
    assert set(json_body(r)) == STATUS_KEYS, r.raw[:300]


def is_405(r: RawResponse) -> None:
    assert r.header("allow") == "GET, HEAD", r.raw[:300]
    assert json_body(r) == {"error": "method not allowed"}, r.raw[:300]


def echoes_path(path: bytes) -> Callable[[RawResponse], None]:
    """The upstream answered, having received exactly these path bytes (it decodes latin-1)."""

    def check(r: RawResponse) -> None:
        from_upstream(r)
        assert json_body(r)["path"] == path.decode("latin-1"), r.raw[:300]

    return check


def from_mitmproxy(r: RawResponse) -> None:
    assert "mitmproxy" in (r.header("server") or ""), r.raw[:300]


def from_upstream(r: RawResponse) -> None:
    assert "BaseHTTP" in (r.header("server") or ""), r.raw[:300]


def upstream_or_gateway_error(code: int) -> Callable[[RawResponse], None]:
    """`code` from the upstream, or mitmproxy's own 502 when the upstream reset first."""

    def check(r: RawResponse) -> None:
        (from_upstream if r.status == code else from_mitmproxy)(r)

    return check


def nothing_sent(r: RawResponse) -> None:
    assert r.raw == b"", r.raw[:300]


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    counted: int  # how often the proxy must count it
    statuses: frozenset[int | None]  # what may come back; None: closed without an answer
    why: str  # the expectation, explained
    check: Callable[[RawResponse], None] | None = None
    half_close: bool = False


def post(target: bytes, headers: bytes) -> bytes:
    return request(target, headers, b"POST")


FLOOD = b"".join(b"X-Flood-%d: %d\r\n" % (i, i) for i in range(5000))
HUGE_LENGTH = b"Content-Length: " + b"9" * 5000 + b"\r\n"
BINARY_METHOD = b"\xc3\x28\xff"
# Every byte value but CR and LF, 64 KiB of them, then the end of a head.
BINARY_LINE = bytes(b for b in range(256) if b not in b"\r\n") * 258 + b"\r\n\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
LONG = b"p" * (64 * 1024)
NON_UTF8 = b"/caf\xe9/\xff\xfe\x80"
UPSTREAM_REFUSES = (
    "mitmproxy parsed the head (it has no limit on header count or line length), counted it "
    "once and forwarded it; the upstream (http.server) answers {code}, or resets the "
    "connection before mitmproxy reads that answer, and mitmproxy answers 502"
)
MITMPROXY_REFUSES = (
    "mitmproxy cannot parse or frame it and answers 400: no flow, or one that reaches "
    "requestheaders already carrying the error, is ever proxied, so nothing is counted"
)
STATUS_ANSWERS = "parsed and answered by the addon itself: requests to /status are not counted"

KINDS: dict[str, list[Case]] = {
    "header-flood": [
        Case(
            "5000 headers",
            request(b"/flood", FLOOD),
            1,
            frozenset({431, 502}),
            UPSTREAM_REFUSES.format(code="431 (over 100 headers)"),
            upstream_or_gateway_error(431),
        ),
        Case(
            "5000 headers on /status",
            request(b"/status", FLOOD),
            0,
            frozenset({200}),
            STATUS_ANSWERS,
            is_status_answer,
        ),
    ],
    # A huge value of the one header the addon parses itself (test_bad_input sends a huge
    # value of a header nobody reads): 5000 digits are over Python's int conversion limit.
    "content-length-of-5000-digits": [
        Case(
            "POST",
            post(b"/huge-length", HUGE_LENGTH),
            0,
            frozenset({400}),
            MITMPROXY_REFUSES,
            from_mitmproxy,
        ),
        Case(
            "GET /status",
            request(b"/status", HUGE_LENGTH),
            0,
            frozenset({400}),
            MITMPROXY_REFUSES,
            from_mitmproxy,
        ),
    ],
    "binary-request-line": [
        Case(
            "64 KiB of binary",
            BINARY_LINE,
            0,
            frozenset({400}),
            MITMPROXY_REFUSES,
            from_mitmproxy,
        ),
        Case(
            "binary HTTP version on /status",
            request(b"/status", version=b"HTTP/\xff\xfe"),
            0,
            frozenset({400}),
            MITMPROXY_REFUSES,
            from_mitmproxy,
        ),
        Case(
            "binary word inside the /status request line",
            request(b"/status \x00\xff"),
            0,
            frozenset({400}),
            MITMPROXY_REFUSES,
            from_mitmproxy,
        ),
        Case(
            "non-UTF-8 method",
            request(b"/binary-method", method=BINARY_METHOD),
            1,
            frozenset({501}),
            "mitmproxy accepts any method token: parsed, counted once, forwarded; the "
            "upstream answers 501 (unsupported method)",
            from_upstream,
        ),
        Case(
            "non-UTF-8 method on /status",
            request(b"/status", method=BINARY_METHOD),
            0,
            frozenset({405}),
            "the status path with a method other than GET/HEAD: 405 from the addon, uncounted",
            is_405,
        ),
    ],
    "invalid-chunked": [
        Case(
            "chunk shorter than its size, then EOF",
            post(b"/short-chunk", CHUNKED) + b"a\r\nhello",
            1,
            frozenset({None}),
            "the head is valid: counted at requestheaders and streamed upstream before the "
            "body turns out truncated, like a client that goes away mid-body; mitmproxy then "
            "closes without an answer",
            nothing_sent,
            half_close=True,
        ),
        Case(
            "no last chunk, then EOF",
            post(b"/no-last-chunk", CHUNKED) + b"5\r\nhello\r\n",
            1,
            frozenset({None}),
            "as above: a valid head, proxied and counted, then a body that never ends",
            nothing_sent,
            half_close=True,
        ),
        Case(
            "unknown transfer coding",
            post(b"/bad-coding", b"Transfer-Encoding: xchunked\r\n") + b"0\r\n\r\n",
            0,
            frozenset({400}),
            MITMPROXY_REFUSES,
            from_mitmproxy,
        ),
        Case(
            "bad chunk size on /status",
            post(b"/status", CHUNKED) + b"zz\r\nhello\r\n0\r\n\r\n",
            0,
            frozenset({None}),
            "a status request of unknown length is refused by closing the connection (the "
            "addon kills it at requestheaders), before the body is read; never counted",
            nothing_sent,
        ),
    ],
    "non-utf8-path": [
        Case(
            "non-UTF-8 path",
            request(NON_UTF8),
            1,
            frozenset({200}),
            "a valid request: proxied with its raw bytes, counted once",
            echoes_path(NON_UTF8),
        ),
        Case(
            "/status followed by a non-UTF-8 byte",
            request(b"/status\xff"),
            1,
            frozenset({200}),
            "another path than /status (matching is on the raw bytes): proxied, counted once",
            echoes_path(b"/status\xff"),
        ),
        Case(
            "/status with a non-UTF-8 query",
            request(b"/status?\xff\xfe=\x80"),
            0,
            frozenset({200}),
            STATUS_ANSWERS,
            is_status_answer,
        ),
    ],
    "64k-path": [
        Case(
            "64 KiB path",
            request(b"/" + LONG),
            1,
            frozenset({414, 502}),
            UPSTREAM_REFUSES.format(code="414 (request line over 64 KiB)"),
            upstream_or_gateway_error(414),
        ),
        Case(
            "/status with a 64 KiB query",
            request(b"/status?" + LONG),
            0,
            frozenset({200}),
            STATUS_ANSWERS,
            is_status_answer,
        ),
        Case(
            "/status/ and 64 KiB",
            request(b"/status/" + LONG),
            1,
            frozenset({414, 502}),
            UPSTREAM_REFUSES.format(code="414 (request line over 64 KiB)"),
            upstream_or_gateway_error(414),
        ),
    ],
}


# What the addon logs when something is wrong (mitmdump shows no log level).
ADDON_PROBLEMS = ("Redis error", "Redis unreachable", "Redis refused", "could not be written")


def assert_clean_output(proxy: Proxy, redis_up: bool = True) -> None:
    """The addon never raised (mitmproxy logs "Addon error" and a traceback when a hook does),
    and, with Redis up, logged no problem of its own."""
    output = proxy.output()
    assert "Traceback" not in output, output[-3000:]
    assert "Addon error" not in output, output[-3000:]
    if redis_up:
        for problem in ADDON_PROBLEMS:
            assert problem not in output, output[-3000:]


@pytest.mark.parametrize("kind", list(KINDS))
def test_hostile_http_is_refused_or_proxied_and_counted_exactly(proxy: Proxy, kind: str) -> None:
    """Each case on a normal path and on /status: an answer (an error unless the request is
    merely unusual) or a close, never a hang; counted exactly when mitmproxy proxied it;
    a good request is served and counted right after; the addon never raised."""
    expected = counter_of(proxy.url)
    assert expected == 0  # a fresh Redis; wait_ready's /status probes are not counted
    for case in KINDS[kind]:
        start = time.monotonic()
        r = exchange(proxy.port, case.data, case.half_close)
        elapsed = time.monotonic() - start
        print(
            f"{kind} / {case.name}: sent {len(case.data)} B, got {r.status} "
            f"({len(r.raw)} B) in {elapsed:.2f}s"
        )
        assert r.closed_by_peer, f"{case.name}: left open after {elapsed:.1f}s: {r.raw[:300]!r}"
        assert r.status in case.statuses, f"{case.name}: {r.raw[:300]!r}"
        if case.check:
            case.check(r)
        expected += case.counted
        assert counter_of(proxy.url) == expected, f"{case.name}: {case.why}"
        assert_good_request_served(proxy.port, EXCHANGE_TIMEOUT)
        expected += 1
        assert counter_of(proxy.url) == expected, f"{case.name}: the good request after it"
        assert_clean_output(proxy)
    assert proxy.popen.poll() is None, "the proxy exited"


# --- /status never reflects its input --------------------------------------------------------

MARK = "hostileZ9q"
PAYLOAD = f"<script>{MARK}</script>\"'}}{{{MARK}"
PAYLOAD_HEADERS = (
    f"X-Payload: {PAYLOAD}\r\n"
    f"User-Agent: {MARK}\r\n"
    f"Accept: text/html, {MARK}\r\n"
    f"Referer: http://{MARK}.example/{MARK}\r\n"
    f"Origin: http://{MARK}.example\r\n"
    f"X-Forwarded-For: {MARK}\r\n"
    f"X-Forwarded-Host: {MARK}.example\r\n"
    f"Authorization: Bearer {MARK}\r\n"
    f'If-None-Match: "{MARK}"\r\n'
    f"Cookie: session={MARK}; counter={MARK}; uptime={PAYLOAD}\r\n"
    f"Cookie: {MARK}={MARK}\r\n"
).encode()
PAYLOAD_QUERY = (
    f"?{MARK}={MARK}&counter={MARK}&uptime=-1&callback={MARK}&q={PAYLOAD}&error={MARK}"
).encode()


BROWSER_HEADERS = PAYLOAD_HEADERS.replace(
    f"Accept: text/html, {MARK}\r\n".encode(), f"Accept: {ACCEPT_CHROMIUM}\r\n".encode()
)


def probes() -> list[tuple[str, bytes, bool]]:
    """(name, raw request, whether the method is GET/HEAD) carrying the payload every way."""
    body = PAYLOAD.encode()
    return [
        ("GET query", request(b"/status" + PAYLOAD_QUERY), True),
        ("GET headers and cookies", request(b"/status", PAYLOAD_HEADERS), True),
        ("GET all", request(b"/status" + PAYLOAD_QUERY, PAYLOAD_HEADERS), True),
        ("HEAD all", request(b"/status" + PAYLOAD_QUERY, PAYLOAD_HEADERS, b"HEAD"), True),
        # A browser's Accept: the live page, the same bytes for every request.
        ("GET all, a browser", request(b"/status" + PAYLOAD_QUERY, BROWSER_HEADERS), True),
        (
            "HEAD all, a browser",
            request(b"/status" + PAYLOAD_QUERY, BROWSER_HEADERS, b"HEAD"),
            True,
        ),
        (
            "POST body",
            request(
                b"/status" + PAYLOAD_QUERY,
                PAYLOAD_HEADERS + b"Content-Length: %d\r\n" % len(body),
                b"POST",
            )
            + body,
            False,
        ),
        ("method", request(b"/status" + PAYLOAD_QUERY, PAYLOAD_HEADERS, MARK.encode()), False),
        ("PUT", request(b"/status" + PAYLOAD_QUERY, PAYLOAD_HEADERS, b"PUT"), False),
    ]


@pytest.mark.parametrize("redis_up", [True, False], ids=["200", "503"])
def test_status_never_reflects_request_input(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_up: bool
) -> None:
    """/status with a payload in the query, headers, cookies, body and method: the response
    bytes (head and body) never contain it, and the JSON has exactly the documented keys:
    200 with STATUS_FIELDS, 503 {error, uptime, pending}, 405 {error}; to a browser's Accept the
    live page, byte for byte the same whatever the request holds."""
    url = redis_url if redis_up else f"redis://127.0.0.1:{free_port()}/0"
    p = start_proxy(upstream, url)
    ok = 200 if redis_up else 503
    for name, data, allowed in probes():
        start = time.monotonic()
        r = exchange(p.port, data)
        elapsed = time.monotonic() - start
        print(f"/status {name}: {r.status}, {len(r.raw)} B in {elapsed:.2f}s")
        assert r.closed_by_peer, name
        assert MARK.lower().encode() not in r.raw.lower(), f"{name}: {r.raw!r}"
        assert r.header("access-control-allow-origin") is None, name
        if not allowed:
            assert r.status == 405, f"{name}: {r.raw!r}"
            is_405(r)
        elif data.startswith(b"HEAD"):
            assert r.status == (200 if "a browser" in name else ok), f"{name}: {r.raw!r}"
            assert r.body == b"", f"{name}: {r.raw!r}"
        elif "a browser" in name:
            assert r.status == 200, f"{name}: {r.raw!r}"
            assert r.header("content-type") == "text/html; charset=utf-8", name
            assert r.body == page().html, name
        else:
            assert r.status == ok, f"{name}: {r.raw!r}"
            body = json_body(r)
            if redis_up:
                assert_status_fields(body)
            else:
                assert set(body) == {"error", "uptime", "pending"}, body
                assert isinstance(body["uptime"], int) and isinstance(body["pending"], int), body
    if redis_up:
        assert counter_of(p.url) == 0, "requests to /status are never counted"
    assert_clean_output(p, redis_up)
