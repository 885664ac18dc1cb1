"""Hostile input, in process: the addon's parsers hold for any input (hypothesis, no processes).

The endpoint path matcher and the endpoints answer exactly the documented set of request paths
(the status path, optionally followed by `?` and any query; matching is on the raw path),
whatever the bytes; the option checks accept or refuse any string cleanly, and never show a
Redis password. tests/e2e/test_hostile_http.py sends hostile HTTP through a real mitmdump.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from urllib.parse import quote

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
from redis.asyncio.cluster import RedisCluster

from counting_addon import CountingProxy, StatusEndpoint, StreamBodies
from counting_addon.endpoints.rules import check_path, is_endpoint_flow, matches
from counting_addon.store.client import RedisClient
from counting_addon.store.url import parse, redact
from tests.support.in_process import MakeProxy
from tests.support.processes import unreachable_redis_url

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

# Characters check_path accepts: printable (str.isprintable excludes the Other and
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

URL_SCHEMES = st.sampled_from(
    ["redis", "rediss", "unix", "http", "REDIS", "redis+cluster", "rediss+sentinel", "redis+"]
)
URL_USERS = st.text(st.sampled_from(string.ascii_letters + string.digits + "-._~"), max_size=6)
URL_HOSTS = st.sampled_from(
    ["127.0.0.1", "localhost", "redis.internal", "[::1]", "", "h_st", "h1:7000,h2", "h,,h", "h,"]
)
URL_PORTS = st.sampled_from(["", ":6379", ":0", ":65536", ":port", ":-1"])
URL_DBS = st.sampled_from(["", "/", "/0", "/15", "/x", "/0/1", "/mymaster", "/my%20master/3"])
URL_QUERIES = st.one_of(
    st.sampled_from(
        [
            "",
            "?db=2",
            "?socket_timeout=0.5",
            "?socket_timeout=x",
            "?protocol=3",
            "?sentinel_password=",
        ]
    ),
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
    check_path(status_path)  # the generated status paths are all valid options
    request = request_flow(raw).request
    assert matches(request.path, status_path) is documented_match(raw, status_path), raw[:200]


def test_status_endpoint_answers_exactly_the_documented_set(counting_proxy: MakeProxy) -> None:
    """The endpoints' requestheaders and request hooks, in reverse mode under taddons, answer
    (and mark as an endpoint flow) exactly the documented set of status paths; everything else
    is left alone. (/metrics is off here: any generated path could be it.)

    Redis is a closed port, so an answered GET/HEAD is a 503 and any other method a 405: either
    way the proxy answered, and no Redis process is needed.
    """
    running = counting_proxy(counter_redis_url=unreachable_redis_url(), counter_metrics_path="")
    proxy, tctx = running.proxy, running.tctx
    endpoints = proxy.endpoints
    tally = {"answered": 0, "passed": 0, "long": 0}
    loop = tctx.master.event_loop

    @PROPERTY
    @given(
        status_and_request_path(),
        st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"DELETE", b"\xc3\x28"]),
    )
    def check(pair: tuple[str, bytes], method: bytes) -> None:
        status_path, raw = pair
        tctx.configure(proxy.status, counter_status_path=status_path)
        f = request_flow(raw, method)
        endpoints.claim(f)
        pending = endpoints.request(f)
        if pending is not None:
            loop.run_until_complete(pending)
        expected = documented_match(raw, status_path)
        tally["answered" if expected else "passed"] += 1
        tally["long"] += len(raw) > 64 * 1024
        assert is_endpoint_flow(f) is expected, (status_path, raw[:200])
        assert bool(f.marked) is expected
        if expected:
            assert f.error is None  # no body: nothing to refuse
            assert f.response is not None
            allowed = f.request.method in ("GET", "HEAD")
            # Only an answer that reads Redis is a coroutine for mitmproxy to await.
            assert (pending is not None) is allowed
            assert f.response.status_code == (503 if allowed else 405)
        else:
            assert pending is None
            assert f.response is None and f.error is None

    check()
    print(f"status endpoint: {tally}")
    assert tally["answered"] > 50 and tally["passed"] > 50 and tally["long"] > 0


# --- option parsing --------------------------------------------------------------------------


@PROPERTY
@given(OPTION_STRINGS)
def test_check_path_accepts_exactly_printable_absolute_paths(value: str) -> None:
    """Any string is accepted or refused with ValueError, never another exception; accepted
    means it starts with '/' and has no '?', '#', space or non-printable character."""
    try:
        check_path(value)
    except ValueError:
        accepted = False
    else:
        accepted = True
    valid = value.startswith("/") and not any(c in value for c in "?# ") and value.isprintable()
    assert accepted is valid, repr(value)
    if accepted:
        # An accepted path is answerable: its own bytes on the wire match it.
        assert matches(request_flow(value.encode()).request.path, value)


def option_values_tried(
    tctx: taddons.context,
    addon: object,
    option: str,
    values: st.SearchStrategy[str],
    current: Callable[[], object],
    took_effect: Callable[[str], None],
) -> dict[str, int]:
    """Sets `option` through `addon`'s configure to each of `values`: refused with an
    OptionsError naming the option, `current()` unchanged; or accepted, `took_effect(value)`
    checking it. How many of each."""
    tally = {"accepted": 0, "refused": 0}

    @PROPERTY
    @given(values)
    def check(value: str) -> None:
        before = current()
        try:
            tctx.configure(addon, **{option: value})
        except exceptions.OptionsError as e:
            tally["refused"] += 1
            assert str(e).startswith(f"{option}: "), str(e)
            assert current() == before
        else:
            tally["accepted"] += 1
            took_effect(value)

    check()
    print(f"{option}: {tally}")
    return tally


def test_status_path_option_names_itself_or_takes_effect() -> None:
    """Through configure under taddons: OptionsError naming the option (previous path kept),
    or the path in effect."""
    proxy = CountingProxy()
    status = proxy.status
    assert isinstance(status, StatusEndpoint)

    def took_effect(value: str) -> None:
        assert status.path == value
        check_path(value)

    with taddons.context(Proxyserver(), proxy) as tctx:
        tally = option_values_tried(
            tctx, status, "counter_status_path", OPTION_STRINGS, lambda: status.path, took_effect
        )
    assert tally["accepted"] > 20 and tally["refused"] > 20


def test_stream_threshold_option_names_itself_or_is_a_size() -> None:
    """counter_stream_threshold through StreamBodies.configure under taddons: any string is
    refused with an OptionsError naming the option (the previous threshold kept), or accepted
    as a size of 0 or more."""
    addon = StreamBodies()

    def took_effect(value: str) -> None:
        assert isinstance(addon.threshold, int) and addon.threshold >= 0, value

    with taddons.context(addon) as tctx:
        # taddons doesn't configure on add: make the threshold follow the option from here on.
        tctx.configure(addon, counter_stream_threshold="5k")
        assert addon.threshold == 5 * 1024
        tally = option_values_tried(
            tctx,
            addon,
            "counter_stream_threshold",
            SIZE_STRINGS,
            lambda: addon.threshold,
            took_effect,
        )
    assert tally["accepted"] > 20 and tally["refused"] > 20


@PROPERTY
@given(ANY_URLS)
def test_parse_and_redact_take_any_string(url: str) -> None:
    """parse raises ValueError or nothing, redact always returns a string; a URL parse
    accepts is one redis-py can build a client and a connection from (no I/O), failing at
    most with a RedisError, which the counter reports as a problem rather than raising."""
    assert isinstance(redact(url), str)
    try:
        target = parse(url)
    except ValueError:
        return
    try:
        client = RedisClient(target).client
        if not isinstance(client, RedisCluster):  # its constructor checked its arguments
            client.connection_pool.make_connection()
    except redis.RedisError:
        pass


def assert_secret_hidden(url: str, secret: str) -> None:
    assert secret not in redact(url), url
    try:
        parse(url)
    except ValueError as e:
        assert secret not in str(e), url


@PROPERTY
@given(urls_with_password(encode=True))
def test_percent_encoded_password_never_shown(pair: tuple[str, str]) -> None:
    """A well-formed URL (password percent-encoded): neither redact() nor parse's error
    message contains the password's secret part."""
    url, secret = pair
    assert_secret_hidden(url, secret)


@PROPERTY
@given(urls_with_password(encode=False))
def test_password_as_typed_never_shown(pair: tuple[str, str]) -> None:
    """The password as a user types it, URL syntax characters ('/', '#', '?', '@') included:
    neither redact() nor parse's error message contains its secret part."""
    url, secret = pair
    assert_secret_hidden(url, secret)


@PROPERTY
@given(urls_with_password(encode=True, malformed=True))
def test_password_in_url_with_malformed_scheme_never_shown(pair: tuple[str, str]) -> None:
    """A URL whose scheme is missing or mistyped ("redis:/", "//", none) is refused, and neither
    the refusal nor redact() shows the password's secret part."""
    url, secret = pair
    with pytest.raises(ValueError):
        parse(url)
    assert_secret_hidden(url, secret)


@PROPERTY
@given(SECRET_CORES, AROUND_SECRET, AROUND_SECRET, st.booleans(), URL_QUERIES)
def test_sentinel_password_never_shown(
    core: str, before: str, after: str, encode: bool, more: str
) -> None:
    """A sentinel's own password, in the query of a sentinel URL (or misplaced in another's),
    typed or percent-encoded: neither redact() nor parse's error message shows it. (Typed,
    '&' and '#' end it, as in any query: they are left out.)"""
    password = before + core + after
    password = quote(password, safe="") if encode else password.replace("&", "").replace("#", "")
    for head in ("redis+sentinel://s1,s2:26380/mymaster", "redis+cluster://h1:7000"):
        url = f"{head}?sentinel_password={password}{more.replace('?', '&')}"
        assume(core not in url.replace(password, ""))
        assert_secret_hidden(url, core)
