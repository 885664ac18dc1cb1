"""Hostile input: the addon's parsers hold for any input, and hostile HTTP never breaks the proxy.

Property tests (hypothesis, no processes): the status path matcher and StatusEndpoint answer
exactly the documented set of request paths (the status path, optionally followed by `?` and
any query; matching is on the raw path), whatever the bytes; the option checks accept or refuse
any string cleanly, and never show a Redis password.

End to end (real mitmdump, upstream and Redis): malformed and oversized HTTP that
tests/test_bad_input.py does not send (header floods, a Content-Length of 5000 digits, binary
request lines and methods, more broken chunked bodies, non-UTF-8 and 64 KiB paths), each on a
normal path and on /status, is refused or proxied, counted exactly as often as it was proxied,
and the proxy keeps serving. /status never reflects what a request sends it.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from mitmproxy import exceptions, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from counting_addon import CountingProxy, StatusEndpoint, StreamBodies
from counting_addon.counting import STATUS_FLOW
from counting_addon.redis_counter import check_url, client_options, redact
from counting_addon.status import check_status_path, matches
from tests.support.http_client import (
    RawResponse,
    assert_good_request_served,
    counter_of,
    raw_exchange,
)
from tests.support.processes import Process, Proxy, ProxyFactory, free_port, proxy_command, wait_for

# Deterministic (derandomize, no example database written into the repository) and bounded:
# every property test takes a few seconds at most, shrinking a failure included (the explain
# phase, slow, is left out).
PROPERTY = settings(
    deadline=None,
    max_examples=150,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

REVERSE = ProxyMode.parse("reverse:http://127.0.0.1:1")


# --- strategies ------------------------------------------------------------------------------

# Characters check_status_path accepts: printable (str.isprintable excludes the Other and
# Separator categories, ASCII space aside), and none of "?# ".
PATH_CHARACTERS = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
    exclude_characters="?# ",
)
STATUS_PATHS = st.one_of(
    st.sampled_from(["/status", "/", "/health", "/a/b", "/st%61tus", "/é", "/status;v=1"]),
    st.text(PATH_CHARACTERS, max_size=12).map(lambda s: "/" + s),
)
# What may follow the status path in a request that must NOT be answered (`?` aside).
LOOKALIKE_SUFFIXES = [
    b"/", b"//", b";x", b"#x", b"#", b"%3F", b"%3f", b"%3F?x", b"%23", b"x", b".", b"..",
    b"\x00", b" ", b"\t", b"\r\n", b"\xff", b"\xc3", b"\xe9", b"%00", b"/?x", b"#?x",
]  # fmt: skip
PREFIXES = [b"/", b"//", b"/.", b"/./", b"x", b" ", b"\xff", b"http://h", b"%2F"]
ANY_BYTES = st.binary(max_size=40)


def percent_encode_one(path: bytes, index: int, lower: bool) -> bytes:
    """`path` with one byte written as %XX: another raw path, the same decoded one."""
    i = index % len(path)
    escape = (b"%%%02x" if lower else b"%%%02X") % path[i]
    return path[:i] + escape + path[i + 1 :]


def request_paths(status_path: str) -> st.SearchStrategy[bytes]:
    """Raw request targets around `status_path`: equal, with queries, lookalikes, anything."""
    base = status_path.encode()
    return st.one_of(
        st.just(base),
        ANY_BYTES.map(lambda q: base + b"?" + q),
        st.builds(lambda s, t: base + s + t, st.sampled_from(LOOKALIKE_SUFFIXES), ANY_BYTES),
        st.sampled_from(PREFIXES).map(lambda p: p + base),
        st.builds(percent_encode_one, st.just(base), st.integers(0, 100), st.booleans()),
        st.sampled_from([base.swapcase(), base.upper(), base.lower(), base[:-1], base + base]),
        st.builds(
            lambda n, sep: base + sep + b"a" * n,
            st.integers(64 * 1024, 80 * 1024),
            st.sampled_from([b"?", b"/", b"", b"#", b"%3F"]),
        ),
        ANY_BYTES.map(lambda b: b"/" + b),
        ANY_BYTES,
    )


@st.composite
def status_and_request_path(draw: st.DrawFn) -> tuple[str, bytes]:
    status_path = draw(STATUS_PATHS)
    return status_path, draw(request_paths(status_path))


def documented_match(raw: bytes, status_path: str) -> bool:
    """README: the raw path equals the status path, optionally followed by `?` and a query."""
    base = status_path.encode()
    return raw == base or raw.startswith(base + b"?")


def request_flow(raw_path: bytes, method: bytes = b"GET") -> http.HTTPFlow:
    f = tflow.tflow(req=tutils.treq(path=raw_path, method=method, headers=http.Headers()))
    f.client_conn.proxy_mode = REVERSE
    return f


OPTION_STRINGS = st.one_of(
    st.text(),
    st.text().map(lambda s: "/" + s),
    st.text(PATH_CHARACTERS).map(lambda s: "/" + s),
    st.sampled_from(["", "/", "//", "/a b", "/a\tb", "/a\u00a0b", "/a\u2028b", "/é", "/\x7f"]),
)
SIZE_STRINGS = st.one_of(
    st.text(),
    st.from_regex(r"[ +-]?[0-9_]{0,12}[bkmgtBKMG]? ?", fullmatch=True),
    st.sampled_from(
        ["", "0", "-0", "-1", "-1k", "1_000", " 7 ", "١٢", "1e3", "0x10", "k", "9" * 5000]
    ),
)

URL_SCHEMES = st.sampled_from(["redis", "rediss", "unix", "http", "REDIS"])
URL_USERS = st.text(st.sampled_from(string.ascii_letters + string.digits + "-._~"), max_size=6)
URL_HOSTS = st.sampled_from(["127.0.0.1", "localhost", "redis.internal", "[::1]", "", "h_st"])
URL_PORTS = st.sampled_from(["", ":6379", ":0", ":65536", ":port", ":-1"])
URL_DBS = st.sampled_from(["", "/", "/0", "/15", "/x", "/0/1"])
URL_QUERIES = st.one_of(
    st.sampled_from(["", "?db=2", "?socket_timeout=0.5", "?socket_timeout=x", "?protocol=3"]),
    st.builds(
        lambda k, v: f"?{k}={v}",
        st.text(st.sampled_from(string.ascii_lowercase + "_"), min_size=1, max_size=10),
        st.text(st.sampled_from(string.ascii_letters + string.digits), max_size=4),
    ),
)
# The secret part of a generated password: a token that no fixed message text contains.
SECRET_CORES = st.from_regex(r"[A-Z][0-9][A-Za-z0-9]{4,8}", fullmatch=True)
# Around the secret: URL syntax characters above all, as a user might type them in a password.
AROUND_SECRET = st.text(
    st.one_of(st.sampled_from(list(":/?#@[]%;=& \\")), st.characters(codec="utf-8")),
    max_size=4,
)


# Typos that leave the scheme out or malformed: the URL is refused, and its message must
# still hide the password.
MALFORMED_PREFIXES = st.sampled_from(["", "//", "://", "redis:", "redis:/", "redis//", "redis:///"])


@st.composite
def urls_with_password(draw: st.DrawFn, encode: bool, malformed: bool = False) -> tuple[str, str]:
    """(URL, secret) where the URL's password contains `secret` and nothing else does."""
    core = draw(SECRET_CORES)
    password = draw(AROUND_SECRET) + core + draw(AROUND_SECRET)
    if encode:
        password = quote(password, safe="")
    prefix = draw(MALFORMED_PREFIXES) if malformed else f"{draw(URL_SCHEMES)}://"
    head = f"{prefix}{draw(URL_USERS)}:"
    tail = f"@{draw(URL_HOSTS)}{draw(URL_PORTS)}{draw(URL_DBS)}{draw(URL_QUERIES)}"
    assume(core not in head + tail)
    return head + password + tail, core


def build_url(scheme: str, user: str, password: str, host: str, port: str, db: str, q: str) -> str:
    userinfo = f"{user}{password}@" if user or password else ""
    return f"{scheme}://{userinfo}{host}{port}{db}{q}"


ANY_URLS = st.one_of(
    st.text(),
    st.builds(
        lambda s, rest: s + rest, st.sampled_from(["redis://", "rediss://", "unix://"]), st.text()
    ),
    st.builds(
        build_url,
        URL_SCHEMES,
        URL_USERS,
        st.sampled_from(["", ":", ":pw", ":p%40ss"]),
        URL_HOSTS,
        URL_PORTS,
        URL_DBS,
        URL_QUERIES,
    ),
)


# --- status path matching --------------------------------------------------------------------


@PROPERTY
@given(status_and_request_path())
def test_matcher_matches_exactly_the_documented_set(pair: tuple[str, bytes]) -> None:
    """matches() on the path as mitmproxy gives it (raw bytes, surrogate-escaped) never raises
    and is true exactly for the status path, optionally followed by `?` and any query."""
    status_path, raw = pair
    check_status_path(status_path)  # the generated status paths are all valid options
    request = request_flow(raw).request
    assert matches(request.path, status_path) is documented_match(raw, status_path), raw[:200]


def test_status_endpoint_answers_exactly_the_documented_set() -> None:
    """StatusEndpoint's requestheaders and request hooks, in reverse mode under taddons, answer
    (and mark as a status flow) exactly the documented set; everything else is left alone.

    Redis is a closed port, so an answered GET/HEAD is a 503 and any other method a 405: either
    way the proxy answered, and no Redis process is needed.
    """
    proxy = CountingProxy()
    status = proxy.addons[0]
    assert isinstance(status, StatusEndpoint)
    tally = {"answered": 0, "passed": 0, "long": 0}
    with taddons.context(Proxyserver(), proxy) as tctx:
        tctx.configure(proxy.addons[1], counter_redis_url=f"redis://127.0.0.1:{free_port()}/0")
        loop = tctx.master.event_loop

        @PROPERTY
        @given(
            status_and_request_path(),
            st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"DELETE", b"\xc3\x28"]),
        )
        def check(pair: tuple[str, bytes], method: bytes) -> None:
            status_path, raw = pair
            tctx.configure(status, counter_status_path=status_path)
            f = request_flow(raw, method)
            status.requestheaders(f)
            pending = status.request(f)
            if pending is not None:
                loop.run_until_complete(pending)
            expected = documented_match(raw, status_path)
            tally["answered" if expected else "passed"] += 1
            tally["long"] += len(raw) > 64 * 1024
            assert (pending is not None) is expected, (status_path, raw[:200])
            assert bool(f.metadata.get(STATUS_FLOW)) is expected
            assert bool(f.marked) is expected
            if expected:
                assert f.error is None  # no body: nothing to refuse
                assert f.response is not None
                allowed = f.request.method in ("GET", "HEAD")
                assert f.response.status_code == (503 if allowed else 405)
            else:
                assert f.response is None and f.error is None

        check()
    print(f"status endpoint: {tally}")
    assert tally["answered"] > 50 and tally["passed"] > 50 and tally["long"] > 0


# --- option parsing --------------------------------------------------------------------------


@PROPERTY
@given(OPTION_STRINGS)
def test_check_status_path_accepts_exactly_printable_absolute_paths(value: str) -> None:
    """Any string is accepted or refused with ValueError, never another exception; accepted
    means it starts with '/' and has no '?', '#', space or non-printable character."""
    try:
        check_status_path(value)
    except ValueError:
        accepted = False
    else:
        accepted = True
    valid = value.startswith("/") and not any(c in value for c in "?# ") and value.isprintable()
    assert accepted is valid, repr(value)
    if accepted:
        # An accepted path is answerable: its own bytes on the wire match it.
        assert matches(request_flow(value.encode()).request.path, value)


def test_status_path_option_names_itself_or_takes_effect() -> None:
    """Through configure under taddons: OptionsError naming the option (previous path kept),
    or the path in effect."""
    proxy = CountingProxy()
    status = proxy.addons[0]
    assert isinstance(status, StatusEndpoint)
    tally = {"accepted": 0, "refused": 0}
    with taddons.context(Proxyserver(), proxy) as tctx:

        @PROPERTY
        @given(OPTION_STRINGS)
        def check(value: str) -> None:
            before = status.path
            try:
                tctx.configure(status, counter_status_path=value)
            except exceptions.OptionsError as e:
                tally["refused"] += 1
                assert str(e).startswith("counter_status_path: "), str(e)
                assert status.path == before
            else:
                tally["accepted"] += 1
                assert status.path == value
                check_status_path(value)

        check()
    print(f"counter_status_path: {tally}")
    assert tally["accepted"] > 20 and tally["refused"] > 20


def test_stream_threshold_option_names_itself_or_is_a_size() -> None:
    """counter_stream_threshold through StreamBodies.configure under taddons: any string is
    refused with an OptionsError naming the option (the previous threshold kept), or accepted
    as a size of 0 or more."""
    addon = StreamBodies()
    tally = {"accepted": 0, "refused": 0}
    with taddons.context(addon) as tctx:
        # taddons doesn't configure on add: make the threshold follow the option from here on.
        tctx.configure(addon, counter_stream_threshold="5k")
        assert addon.threshold == 5 * 1024

        @PROPERTY
        @given(SIZE_STRINGS)
        def check(value: str) -> None:
            before = addon.threshold
            try:
                tctx.configure(addon, counter_stream_threshold=value)
            except exceptions.OptionsError as e:
                tally["refused"] += 1
                assert str(e).startswith("counter_stream_threshold: "), str(e)
                assert addon.threshold == before
            else:
                tally["accepted"] += 1
                assert isinstance(addon.threshold, int) and addon.threshold >= 0, value

        check()
    print(f"counter_stream_threshold: {tally}")
    assert tally["accepted"] > 20 and tally["refused"] > 20


@PROPERTY
@given(ANY_URLS)
def test_check_url_and_redact_take_any_string(url: str) -> None:
    """check_url raises ValueError or nothing, redact always returns a string; a URL check_url
    accepts is one redis-py can build a client and a connection from (no I/O), failing at
    most with a RedisError, which the counter reports as a problem rather than raising."""
    assert isinstance(redact(url), str)
    try:
        check_url(url)
    except ValueError:
        return
    client = redis.asyncio.Redis.from_url(url, **client_options(redis.asyncio.retry.Retry))
    try:
        client.connection_pool.make_connection()
    except redis.RedisError:
        pass


def assert_secret_hidden(url: str, secret: str) -> None:
    assert secret not in redact(url), url
    try:
        check_url(url)
    except ValueError as e:
        assert secret not in str(e), url


def test_redis_url_with_unknown_parameter_is_refused_or_harmless(
    tmp_path: Path, upstream: str, redis_url: str
) -> None:
    """End to end, the consequence of the property above: a query parameter redis-py doesn't
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
                    assert set(r.json()) in ({"counter", "uptime"}, {"error", "uptime", "pending"})
    finally:
        proc.stop()
    output = proc.output()
    assert "Traceback" not in output, output[-4000:]
    assert "Addon error" not in output, output[-4000:]


@PROPERTY
@given(urls_with_password(encode=True))
def test_percent_encoded_password_never_shown(pair: tuple[str, str]) -> None:
    """A well-formed URL (password percent-encoded): neither redact() nor check_url's error
    message contains the password's secret part."""
    url, secret = pair
    assert_secret_hidden(url, secret)


@PROPERTY
@given(urls_with_password(encode=False))
def test_password_as_typed_never_shown(pair: tuple[str, str]) -> None:
    """The password as a user types it, URL syntax characters ('/', '#', '?', '@') included:
    neither redact() nor check_url's error message contains its secret part."""
    url, secret = pair
    assert_secret_hidden(url, secret)


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
    assert set(json_body(r)) == {"counter", "uptime"}, r.raw[:300]


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


def probes() -> list[tuple[str, bytes, bool]]:
    """(name, raw request, whether the method is GET/HEAD) carrying the payload every way."""
    body = PAYLOAD.encode()
    return [
        ("GET query", request(b"/status" + PAYLOAD_QUERY), True),
        ("GET headers and cookies", request(b"/status", PAYLOAD_HEADERS), True),
        ("GET all", request(b"/status" + PAYLOAD_QUERY, PAYLOAD_HEADERS), True),
        ("HEAD all", request(b"/status" + PAYLOAD_QUERY, PAYLOAD_HEADERS, b"HEAD"), True),
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
    200 {counter, uptime}, 503 {error, uptime, pending}, 405 {error}."""
    url = redis_url if redis_up else f"redis://127.0.0.1:{free_port()}/0"
    p = start_proxy(upstream, url)
    ok = 200 if redis_up else 503
    ok_keys = {"counter", "uptime"} if redis_up else {"error", "uptime", "pending"}
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
            assert r.status == ok and r.body == b"", f"{name}: {r.raw!r}"
        else:
            assert r.status == ok, f"{name}: {r.raw!r}"
            body = json_body(r)
            assert set(body) == ok_keys, body
            assert all(isinstance(body[k], int) for k in ok_keys - {"error"}), body
    if redis_up:
        assert counter_of(p.url) == 0, "requests to /status are never counted"
    assert_clean_output(p, redis_up)


@PROPERTY
@given(urls_with_password(encode=True, malformed=True))
def test_password_in_url_with_malformed_scheme_never_shown(pair: tuple[str, str]) -> None:
    """A URL whose scheme is missing or mistyped ("redis:/", "//", none) is refused, and neither
    the refusal nor redact() shows the password's secret part."""
    url, secret = pair
    with pytest.raises(ValueError):
        check_url(url)
    assert_secret_hidden(url, secret)
