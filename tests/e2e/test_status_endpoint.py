"""End to end: the status path is answered by the proxy itself, as specified."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
import redis

from tests.support.http_client import (
    ACCEPT_CHROMIUM,
    assert_status_fields,
    counter_of,
    is_count,
    raw_exchange,
    status_of,
)
from tests.support.processes import Proxy, ProxyFactory, free_port, wait_for


def json_body(response: httpx.Response) -> dict[str, object]:
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    return body


def assert_status_answer(response: httpx.Response) -> dict[str, object]:
    """A 200 /status answer from the proxy, with exactly the specified headers and fields."""
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Accept"
    body = json_body(response)
    assert_status_fields(body)
    return body


def assert_echo(response: httpx.Response, method: str, path: str) -> None:
    """The upstream echo server answered, and saw exactly this method and path."""
    assert response.status_code == 200, (response.status_code, response.text)
    body = json_body(response)
    assert body.get("method") == method, body
    assert body.get("path") == path, body


# --- answered by the proxy -------------------------------------------------------------------


def test_get_status_answers_json_with_headers(proxy: Proxy, redis_client: redis.Redis) -> None:
    body = assert_status_answer(status_of(proxy.url))
    assert body["counter"] == 0
    assert redis_client.get("counter") is None


def test_query_string_is_ignored(proxy: Proxy) -> None:
    for query in ("?x=1", "?", "?a=1&b=2&status", "?counter=99", "?%2F"):
        body = assert_status_answer(status_of(proxy.url, f"/status{query}"))
        assert body["counter"] == 0, query


def test_status_is_never_forwarded_even_with_upstream_down(
    start_proxy: ProxyFactory, redis_url: str
) -> None:
    dead_upstream = f"http://127.0.0.1:{free_port()}"
    p = start_proxy(dead_upstream, redis_url)
    for path in ("/status", "/status?q=1"):
        assert_status_answer(status_of(p.url, path))
    head = httpx.head(f"{p.url}/status", timeout=10)
    assert head.status_code == 200
    assert head.headers["content-type"] == "application/json"
    proxied = httpx.get(f"{p.url}/some/path", timeout=30)
    assert proxied.status_code == 502, proxied.text
    # The 502 came from mitmproxy itself, not from an upstream.
    assert "mitmproxy" in proxied.headers.get("server", "") or b"mitmproxy" in proxied.content
    # And /status still answers afterwards.
    assert_status_answer(status_of(p.url))


def test_head_has_status_headers(proxy: Proxy) -> None:
    r = httpx.head(f"{proxy.url}/status", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"


def test_head_sends_no_body(proxy: Proxy) -> None:
    """On the wire: the HEAD answer ends with its head, no body bytes follow."""
    r = raw_exchange(
        proxy.port, b"HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10
    )
    assert r.status == 200, r.raw
    assert r.header("content-type") == "application/json"
    assert r.header("cache-control") == "no-store"
    assert r.body == b"", f"HEAD /status sent a body: {r.raw!r}"


def test_head_then_request_on_same_connection(proxy: Proxy) -> None:
    """A keep-alive client sends HEAD /status, then a request on the same connection.

    After the HEAD answer's head, the next bytes on the connection must be the next response.
    """
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {received!r}"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        sock.sendall(b"GET /after-head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 "), f"bytes after the HEAD answer: {rest[:200]!r}"
    assert b'"path": "/after-head"' in rest, rest


def test_other_methods_get_405(proxy: Proxy, redis_client: redis.Redis) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        for path in ("/status", "/status?x=1"):
            content = b'{"a": 1}' if method in ("POST", "PUT", "PATCH") else b""
            r = httpx.request(method, f"{proxy.url}{path}", content=content, timeout=10)
            assert r.status_code == 405, (method, path, r.status_code, r.text)
            assert r.headers["allow"] == "GET, HEAD", (method, path)
            assert "method" not in json_body(r), f"the upstream echo answered {method} {path}"
    # Requests to the status path are not counted, whatever their method.
    assert counter_of(proxy.url) == 0
    assert redis_client.get("counter") is None


def test_status_requests_are_not_counted(proxy: Proxy, redis_client: redis.Redis) -> None:
    for _ in range(5):
        # HEAD on a connection of its own: see test_head_then_request_on_same_connection.
        assert httpx.head(f"{proxy.url}/status?x", timeout=10).status_code == 200
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(10):
            assert_status_answer(client.get("/status"))
            assert client.post("/status").status_code == 405
        assert_echo(client.get("/counted"), "GET", "/counted")
        assert json_body(client.get("/status"))["counter"] == 1
    assert redis_client.get("counter") == b"1"


# --- a browser: the live page ---------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", "text/html, application/json", "text/html;q=0", "nonsense"],
)
def test_every_client_but_a_browser_gets_the_json(proxy: Proxy, accept: str | None) -> None:
    """curl (*/*), scripts asking for JSON, none at all: today's JSON, and Vary: Accept."""
    header = b"" if accept is None else b"Accept: %s\r\n" % accept.encode()
    request = b"GET /status HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % header
    r = raw_exchange(proxy.port, request, timeout=10)
    assert r.status == 200 and r.header("content-type") == "application/json", r.raw[:300]
    assert r.header("vary") == "Accept"
    assert_status_fields(json.loads(r.body))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_browser_gets_the_live_page_uncounted(
    proxy: Proxy, redis_client: redis.Redis, method: str
) -> None:
    r = httpx.request(
        method, f"{proxy.url}/status?x=1", headers={"Accept": ACCEPT_CHROMIUM}, timeout=10
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["vary"] == "Accept"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"].startswith("default-src 'none';")
    length = int(r.headers["content-length"])
    assert 0 < length <= 150 * 1024
    if method == "GET":
        assert len(r.content) == length and r.text.startswith("<!doctype html>")
    else:
        assert r.content == b""
    assert counter_of(proxy.url) == 0
    assert redis_client.get("counter") is None


# --- counter ---------------------------------------------------------------------------------


def test_sequential_requests_are_counted_before_status_answers(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    """Each proxied request is visible in the very next /status, with no waiting in between."""
    sent = 0
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for i in range(15):
            assert_echo(client.get(f"/seq/{i}"), "GET", f"/seq/{i}")
            sent += 1
            assert json_body(client.get("/status"))["counter"] == sent
    # New connections each time, mixed methods, a streamed (large) body among them.
    for i in range(10):
        r = httpx.post(f"{proxy.url}/post/{i}", content=b"x" * 100, timeout=30)
        assert_echo(r, "POST", f"/post/{i}")
        sent += 1
    big = httpx.put(f"{proxy.url}/big", content=b"y" * (3 * 1024 * 1024), timeout=60)
    assert_echo(big, "PUT", "/big")
    assert json_body(big)["body_len"] == 3 * 1024 * 1024
    sent += 1
    assert counter_of(proxy.url) == sent
    assert redis_client.get("counter") == str(sent).encode()


def test_max_stale_answers_the_same_json_and_catches_up(proxy: Proxy) -> None:
    """`Cache-Control: max-stale` (a dashboard's poll): the same answer, from the counts in
    Redis now; this process's last counts show once written, without another request."""
    stale = {"Cache-Control": "max-stale=2"}
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for i in range(5):
            assert client.get(f"/stale/{i}").status_code == 200
        body = assert_status_answer(client.get("/status", headers=stale))
        assert body["counter"] in range(6), body
        wait_for(
            lambda: json_body(client.get("/status", headers=stale))["counter"] == 5,
            10,
            "the stale reads to show the 5 requests",
        )


def test_n_sequential_requests_then_status_is_n(proxy: Proxy) -> None:
    n = 40
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for i in range(n):
            assert client.get(f"/n/{i}").status_code == 200
        body = assert_status_answer(client.get("/status"))
    assert body["counter"] == n


def test_lookalike_paths_are_proxied_and_counted(proxy: Proxy, redis_client: redis.Redis) -> None:
    expected = 0
    for path in ("/statusx", "/status/", "/STATUS", "/%73tatus", "/x/status", "/status/?x"):
        for method in ("GET", "HEAD", "POST"):
            r = httpx.request(method, f"{proxy.url}{path}", timeout=30)
            expected += 1
            if method == "HEAD":
                assert r.status_code == 200, (path, r.status_code)
                assert r.content == b""
            else:
                assert_echo(r, method, path)
            assert counter_of(proxy.url) == expected, (method, path)
    assert redis_client.get("counter") == str(expected).encode()


# --- uptime ----------------------------------------------------------------------------------


def test_uptime_is_small_after_start_and_counts_seconds(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    before_start = time.monotonic()
    p = start_proxy(upstream, redis_url)
    first = assert_status_answer(status_of(p.url))["uptime"]
    assert isinstance(first, int)
    # Whole seconds since the process started, which was after `before_start`.
    assert 0 <= first <= time.monotonic() - before_start

    readings = []
    with httpx.Client(base_url=p.url, timeout=10) as client:
        for _ in range(10):
            value = json_body(client.get("/status"))["uptime"]
            assert isinstance(value, int)
            readings.append(value)
        assert readings == sorted(readings), readings
        assert readings[0] >= first

        # It advances with wall-clock seconds: two more takes at least one real second.
        start = time.monotonic()
        base = readings[-1]
        latest = [base]

        def advanced() -> bool:
            value = json_body(client.get("/status"))["uptime"]
            assert isinstance(value, int)
            assert value >= latest[-1], (value, latest)
            latest.append(value)
            return value >= base + 2

        wait_for(advanced, 15, "uptime to advance by two seconds")
        assert time.monotonic() - start >= 1.0
        assert latest[-1] <= time.monotonic() - before_start


# --- configuration ---------------------------------------------------------------------------


def test_custom_status_path(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url, "--set", "counter_status_path=/health")
    # wait_ready probed /status, which this proxy forwards: start from what is counted now.
    base = counter_of(p.url, "/health")
    assert_status_answer(status_of(p.url, "/health?verbose=1"))
    head = httpx.head(f"{p.url}/health", timeout=10)
    assert head.status_code == 200
    assert head.headers["content-type"] == "application/json"
    wrong = httpx.post(f"{p.url}/health", timeout=10)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD"

    assert_echo(status_of(p.url, "/status"), "GET", "/status")
    assert_echo(status_of(p.url, "/status?x=1"), "GET", "/status?x=1")
    assert counter_of(p.url, "/health") == base + 2
    assert redis_client.get("counter") == str(base + 2).encode()


# --- Redis unreachable -----------------------------------------------------------------------


def assert_503_answer(response: httpx.Response, elapsed: float, pending: int) -> None:
    assert elapsed < 5.0, f"/status took {elapsed:.1f}s"
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = json_body(response)
    assert {"error", "uptime", "pending"} <= set(body), body
    assert isinstance(body["error"], str) and body["error"], body
    assert is_count(body["uptime"]), body
    assert body["pending"] == pending, body


def timed_status(url: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = httpx.get(f"{url}/status", timeout=30)
    return r, time.monotonic() - start


def test_redis_refusing_connections(start_proxy: ProxyFactory, upstream: str) -> None:
    p = start_proxy(upstream, f"redis://127.0.0.1:{free_port()}/0")
    r, elapsed = timed_status(p.url)
    assert_503_answer(r, elapsed, pending=0)

    start = time.monotonic()
    with httpx.Client(base_url=p.url, timeout=30) as client:
        for i in range(3):
            assert_echo(client.get(f"/while-down/{i}"), "GET", f"/while-down/{i}")
    # Proxying never waits on Redis.
    assert time.monotonic() - start < 5.0

    for _ in range(2):
        r, elapsed = timed_status(p.url)
        assert_503_answer(r, elapsed, pending=3)


def test_redis_not_answering(start_proxy: ProxyFactory, upstream: str) -> None:
    """A Redis that accepts connections but never replies: /status still answers in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        p = start_proxy(upstream, f"redis://127.0.0.1:{port}/0")
        start = time.monotonic()
        for i in range(2):
            assert_echo(httpx.get(f"{p.url}/hang/{i}", timeout=30), "GET", f"/hang/{i}")
        assert time.monotonic() - start < 5.0
        r, elapsed = timed_status(p.url)
        assert_503_answer(r, elapsed, pending=2)
