"""End to end: responses counted by the class of the status code the client received, once
per flow, through a real mitmdump (which hooks fire when: counting_addon/traffic/received.py).

Each test reads the shared hash in Redis once /status has had the proxy write what it counted.
"""

from __future__ import annotations

import socket

import httpx
import redis

from counting_addon.code_class import CodeClass
from tests.support.http_client import HEADER_END, counter_of, parse_response, raw_exchange
from tests.support.processes import Proxy, ProxyFactory, free_port, wait_for
from tests.support.upstream import PATTERN

RESPONSES = "{counter}:responses"
ALL = [c.value for c in CodeClass]


def classes(client: redis.Redis) -> dict[str, int]:
    held = client.hgetall(RESPONSES)
    return {name: int(held.get(name.encode(), 0)) for name in ALL}


def expect(proxy: Proxy, client: redis.Redis, requests: int, **by_class: int) -> None:
    """Wait until Redis holds `requests` and these classes (`c2xx=3`; others 0), and check
    that it still does once the proxy has written everything again."""
    expected = {name: by_class.get(f"c{name}", 0) for name in ALL}

    def landed() -> bool:
        counter_of(proxy.url)  # has the proxy write what it counted
        return classes(client) == expected

    wait_for(landed, 30, f"responses by class == {expected} (now {classes(client)})")
    assert counter_of(proxy.url) == requests
    assert classes(client) == expected


def test_each_response_in_the_class_the_client_received(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        codes = [200, 201, 204, 301, 304, 404, 418, 500, 503, 200]
        for code in codes:
            assert client.get(f"/code/{code}").status_code == code
        assert client.get("/status").status_code == 200  # the proxy's own: no class
        assert client.post("/status").status_code == 405
    expect(proxy, redis_client, len(codes), c2xx=4, c3xx=2, c4xx=2, c5xx=2)


def test_mitmproxys_502_for_an_unreachable_upstream_is_a_5xx(
    start_proxy: ProxyFactory, redis_url: str, redis_client: redis.Redis
) -> None:
    proxy = start_proxy(f"http://127.0.0.1:{free_port()}", redis_url)
    for _ in range(3):
        assert httpx.get(f"{proxy.url}/nowhere", timeout=10).status_code == 502
    expect(proxy, redis_client, 3, c5xx=3)


def test_a_download_aborted_after_its_head_is_in_the_heads_class(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    """Streamed (chunked, so of unknown length): the head goes to the client at once."""
    for code in (200, 404):
        received = bytearray()
        path = f"/download?size={1 << 30}&chunked=1" if code == 200 else "/code/404"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            while HEADER_END not in received or len(received) < 256 * 1024 * (code == 200):
                data = sock.recv(65536)
                assert data, received[:300]
                received += data
        assert parse_response(bytes(received), closed_by_peer=False).status == code
    expect(proxy, redis_client, 2, c2xx=1, c4xx=1)


def test_a_request_that_never_got_a_response_head_is_in_no_class(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    """The client leaves while the upstream still thinks (the upstream's /slow notices)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(b"GET /slow?delay=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: counter_of(proxy.url) == 1, 30, "the request counted")
    # An upload the client abandons halfway: buffered, it never reached the upstream.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        sock.sendall(PATTERN[:1000])
        wait_for(lambda: counter_of(proxy.url) == 2, 30, "the upload counted")
    assert httpx.get(f"{proxy.url}/after", timeout=10).status_code == 200
    expect(proxy, redis_client, 3, c2xx=1)


def test_requests_mitmproxy_refused_are_in_no_class(
    proxy: Proxy, redis_client: redis.Redis
) -> None:
    smuggling = (
        b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert raw_exchange(proxy.port, smuggling).status == 400
    assert raw_exchange(proxy.port, b"GARBAGE\r\n\r\n").status == 400
    assert httpx.get(f"{proxy.url}/after", timeout=10).status_code == 200
    expect(proxy, redis_client, 1, c2xx=1)


def test_a_request_over_body_size_limit_gets_mitmproxys_413_a_4xx(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    proxy = start_proxy(upstream, redis_url, "--set", "body_size_limit=10k")
    head = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n"
    assert raw_exchange(proxy.port, head + PATTERN[:20000]).status == 413
    expect(proxy, redis_client, 1, c4xx=1)
