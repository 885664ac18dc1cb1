"""End to end: one mitmdump serving several listeners (several `--mode` options) counts them all
in one counter; only reverse listeners answer the status path."""

from __future__ import annotations

import json

import httpx
import redis

from tests.support.http_client import counter_of, send
from tests.support.processes import ProxyFactory, free_port, wait_listening, wait_until_serving


def test_two_reverse_listeners_share_one_counter(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """Requests through either listener land in the same key, and both answer /status with the
    same total after each request, whichever listener took it."""
    second_port = free_port()
    p = start_proxy(upstream, redis_url, listeners=[f"reverse:{upstream}@{second_port}"])
    second = f"http://127.0.0.1:{second_port}"
    wait_until_serving(p, second)
    answered = 0
    for i in range(12):
        send(p.url if i % 3 else second, f"/listener/{i % 3 == 0}/{i}", 1)
        answered += 1
        assert counter_of(p.url) == answered
        assert counter_of(second) == answered
    assert redis_client.get("counter") == str(answered).encode()
    # One process, one counter: a single writer id under the key.
    assert len(redis_client.keys("{counter}:writer:*")) == 1


def test_regular_listener_beside_reverse_proxies_the_status_path(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """Through a regular (forward) listener, `http://upstream/status` belongs to the upstream:
    it is proxied (the upstream's echo comes back) and counted. The reverse listener of the same
    process still answers /status itself, with that count."""
    forward_port = free_port()
    p = start_proxy(upstream, redis_url, listeners=[f"regular@{forward_port}"])
    wait_listening(p, forward_port)
    with httpx.Client(proxy=f"http://127.0.0.1:{forward_port}", timeout=30) as client:
        for i in range(3):
            r = client.get(f"{upstream}/status?n={i}")
            assert r.status_code == 200, r.text
            echo = json.loads(r.content)
            assert echo["method"] == "GET" and echo["path"] == f"/status?n={i}", echo
            assert "counter" not in echo, echo
            assert counter_of(p.url) == i + 1
        r = client.get(f"{upstream}/other")
        assert r.status_code == 200 and json.loads(r.content)["path"] == "/other", r.text
    assert counter_of(p.url) == 4
    # The reverse listener still answers /status itself and doesn't count it.
    assert counter_of(p.url) == 4
    send(p.url, "/reverse", 1)
    assert counter_of(p.url) == 5
    assert redis_client.get("counter") == b"5"
