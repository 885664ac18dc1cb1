"""End to end: /metrics answered by a real mitmdump by the endpoints' rules, in both formats,
over HTTP/1.1 and HTTP/2, whatever Redis does; and counter_allow_from fencing both endpoints."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import redis

from counting_addon.endpoints.answers import READ_TIMEOUT
from tests.support.bodies import echo
from tests.support.http2 import h2_client
from tests.support.http_client import counter_of, raw_exchange, send
from tests.support.metrics import (
    PROMETHEUS_ACCEPT,
    TEXT_CONTENT_TYPE,
    parse_openmetrics,
    parse_text,
    scrape,
)
from tests.support.processes import (
    Proxy,
    ProxyFactory,
    free_port,
    reload_script,
    script_copy,
    wait_for,
)

SHARED = "counting_addon_shared_requests_total"


def test_get_reports_the_shared_count_and_is_not_counted(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    send(proxy.url, "/counted", 5)
    for _ in range(3):  # each scrape sees the requests before it, and adds none
        samples = scrape(proxy.url, "/metrics?from=test")
        assert samples.value(SHARED) == 5
        assert samples.value("counting_addon_redis_up") == 1
        assert samples.value("counting_addon_pending_counts") == 0
        assert samples.value("process_open_fds") > 0  # prometheus_client's process metrics
    assert counter_of(proxy.url) == 5
    assert redis_client.get("counter") == b"5"


def test_openmetrics_when_the_scraper_asks(proxy: Proxy) -> None:
    send(proxy.url, "/counted", 2)
    r = httpx.get(f"{proxy.url}/metrics", headers={"Accept": PROMETHEUS_ACCEPT}, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0;")
    assert r.text.endswith("# EOF\n")
    assert parse_openmetrics(r.text).value(SHARED) == 2
    # Without an Accept, or a plain one: Prometheus's text format.
    for accept in ("*/*", "text/plain", "application/json"):
        plain = httpx.get(f"{proxy.url}/metrics", headers={"Accept": accept}, timeout=30)
        assert plain.headers["content-type"] == TEXT_CONTENT_TYPE, accept
        assert parse_text(plain.text).value(SHARED) == 2


def test_head_and_other_methods(proxy: Proxy, redis_client: redis.Redis) -> None:
    r = raw_exchange(
        proxy.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10
    )
    assert r.status == 200, r.raw
    assert r.header("content-type") == TEXT_CONTENT_TYPE
    assert int(r.header("content-length") or 0) > 1000
    assert r.body == b"", f"HEAD /metrics sent a body: {r.raw[:300]!r}"
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        content = b"{}" if method in ("POST", "PUT", "PATCH") else b""
        r2 = httpx.request(method, f"{proxy.url}/metrics", content=content, timeout=10)
        assert r2.status_code == 405, (method, r2.text)
        assert r2.headers["allow"] == "GET, HEAD"
    assert counter_of(proxy.url) == 0
    assert redis_client.get("counter") is None


def test_body_of_unknown_length_is_refused_unread(proxy: Proxy) -> None:
    """A chunked body on the metrics path: the connection is closed, nothing answered or read."""
    r = raw_exchange(
        proxy.port,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        timeout=10,
    )
    assert r.status is None and r.closed_by_peer, r.raw[:300]
    assert counter_of(proxy.url) == 0


def test_lookalikes_are_proxied_and_counted(proxy: Proxy) -> None:
    for path in ("/metrics/", "/metricsx", "/METRICS", "/%6detrics", "/x/metrics"):
        r = httpx.get(f"{proxy.url}{path}", timeout=30)
        assert echo(r)["path"] == path
    assert counter_of(proxy.url) == 5


def test_rules_hold_over_http2(proxy: Proxy) -> None:
    with h2_client(proxy, timeout=30) as client:
        assert client.get("/counted").status_code == 200
        r = client.get("/metrics")
        assert (r.http_version, r.status_code) == ("HTTP/2", 200)
        assert r.headers["content-type"] == TEXT_CONTENT_TYPE
        assert parse_text(r.text).value(SHARED) == 1
        om = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        assert parse_openmetrics(om.text).value(SHARED) == 1
        head = client.head("/metrics")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 1000
        refused = client.post("/metrics", content=b"{}")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        lookalike = client.get("/metrics/")
        assert echo(lookalike)["path"] == "/metrics/"
        # A body of unknown length on a method that gets 405: its stream reset, unread.
        with pytest.raises(httpx.HTTPError):
            client.post("/metrics", content=iter([b"x" * 1024] * 64))
    assert counter_of(proxy.url) == 2


def test_custom_path_and_off(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    custom = start_proxy(upstream, redis_url, "--set", "counter_metrics_path=/internal/prom")
    assert scrape(custom.url, "/internal/prom").value(SHARED) == 0
    assert echo(httpx.get(f"{custom.url}/metrics", timeout=30))["path"] == "/metrics"
    assert counter_of(custom.url) == 1

    off = start_proxy(upstream, redis_url, "--set", "counter_metrics_path=")
    for method in ("GET", "POST"):
        r = httpx.request(method, f"{off.url}/metrics?x=1", timeout=30)
        assert echo(r)["method"] == method and echo(r)["path"] == "/metrics?x=1"
    assert counter_of(off.url) == 3
    assert redis_client.get("counter") == b"3"


def test_redis_refusing_connections_answers_200_at_once(
    start_proxy: ProxyFactory, upstream: str
) -> None:
    p = start_proxy(upstream, f"redis://127.0.0.1:{free_port()}/0")
    send(p.url, "/while-down", 2)
    for _ in range(3):
        start = time.monotonic()
        samples = scrape(p.url)
        # A refused connection fails at once; the bound is what must never be reached.
        assert time.monotonic() - start < READ_TIMEOUT
        assert samples.value("counting_addon_redis_up") == 0
        assert samples.value("counting_addon_pending_counts") == 2
        assert SHARED not in samples.names()
        assert "counting_addon_shared_responses_total" not in samples.names()


def test_redis_not_answering(start_proxy: ProxyFactory, upstream: str) -> None:
    """A Redis that accepts connections and never replies: the first scrape gives up within
    READ_TIMEOUT with redis_up 0 (sooner when it joins a read already under way, here the
    start-up's readiness poll's); once the writer knows Redis is failing, scrapes don't wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        p = start_proxy(upstream, f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        start = time.monotonic()
        samples = scrape(p.url)
        elapsed = time.monotonic() - start
        assert elapsed < READ_TIMEOUT + 5, elapsed
        assert samples.value("counting_addon_redis_up") == 0
        assert SHARED not in samples.names()

        send(p.url, "/while-silent", 1)
        wait_for(lambda: "proxying goes on" in p.output(), 30, "the writer to report Redis")
        for _ in range(3):
            start = time.monotonic()
            samples = scrape(p.url)
            assert time.monotonic() - start < READ_TIMEOUT, "waited on a Redis known down"
            assert samples.value("counting_addon_redis_up") == 0
            assert samples.value("counting_addon_pending_counts") == 1


def test_script_reload_keeps_answering(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, tmp_path: Path
) -> None:
    """Nothing is registered in prometheus_client's global registry: a reload (new addons,
    the same modules) registers nothing twice."""
    script = script_copy(tmp_path / "script")
    p = start_proxy(upstream, redis_url, script=script)
    send(p.url, "/before", 2)
    assert scrape(p.url).value(SHARED) == 2
    for round_ in range(2):
        reload_script(p, script)
        send(p.url, f"/after/{round_}", 1)
        assert scrape(p.url).value(SHARED) == 3 + round_
    assert "Traceback" not in p.output()


# --- counter_allow_from ----------------------------------------------------------------------


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    if response.request.method != "HEAD":
        assert json.loads(response.content) == {"error": "forbidden"}


def test_clients_outside_the_list_get_403(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url, "--set", "counter_allow_from=10.0.0.0/8, 192.0.2.1")
    for path in ("/status", "/metrics", "/status?x=1"):
        for method in ("GET", "HEAD", "POST", "DELETE"):
            assert_forbidden(httpx.request(method, f"{p.url}{path}", timeout=10))
    with h2_client(p) as client:
        assert_forbidden(client.get("/metrics"))
    # Every other path is proxied for everyone; the refused ones are not counted.
    send(p.url, "/proxied", 3)
    assert echo(httpx.get(f"{p.url}/status/", timeout=10))["path"] == "/status/"
    wait_for(lambda: redis_client.get("counter") == b"4", 10, "the 4 proxied requests in Redis")
    assert "Traceback" not in p.output()


def test_clients_in_the_list_are_answered(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    p = start_proxy(upstream, redis_url, "--set", "counter_allow_from=10.0.0.0/8,127.0.0.1")
    send(p.url, "/proxied", 2)
    assert counter_of(p.url) == 2
    assert scrape(p.url).value(SHARED) == 2


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_clients(start_proxy: ProxyFactory, upstream: str, redis_url: str) -> None:
    """A second listener on [::1]: its clients are ::1, allowed by an IPv6 entry only."""
    for allow_from, v6_allowed in (("127.0.0.1", False), ("::1", True), ("::/0", True)):
        port = free_port()  # free on 127.0.0.1; on ::1 it is almost always free too
        listener = f"reverse:{upstream}@::1:{port}"
        p = start_proxy(
            upstream, redis_url, "--set", f"counter_allow_from={allow_from}", listeners=[listener]
        )
        v6 = f"http://[::1]:{port}"

        def serving(url: str = v6) -> bool:
            try:
                httpx.get(f"{url}/ready", timeout=2)
            except httpx.HTTPError:
                return False
            return True

        wait_for(serving, 30, f"the listener on {v6}")
        answer = httpx.get(f"{v6}/status", timeout=10)
        if v6_allowed:
            assert answer.status_code == 200, answer.text
            assert scrape(v6).value("counting_addon_redis_up") == 1
        else:
            assert_forbidden(answer)
            assert_forbidden(httpx.get(f"{v6}/metrics", timeout=10))
        v4 = httpx.get(f"{p.url}/status", timeout=10)
        assert v4.status_code == (403 if v6_allowed else 200)
        p.stop()
