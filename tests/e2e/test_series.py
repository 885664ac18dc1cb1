"""Counts by series through a real mitmdump: routes, methods, two client addresses and a header
label, summing exactly to the shared count in /status."""

from __future__ import annotations

import json

import httpx

from tests.support.http_client import status_of
from tests.support.processes import ProxyFactory

LABELS = "route,method,client,header:X-Client-Id"


def send(url: str, requests: list[tuple[str, str, str | None]], source: str) -> None:
    """(method, path, X-Client-Id) each, from the client address `source`."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        for method, path, client_id in requests:
            headers = {"X-Client-Id": client_id} if client_id else {}
            assert client.request(method, f"{url}{path}", headers=headers).status_code < 500


def test_series_sum_to_the_counter_by_route_method_client_and_header(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    p = start_proxy(
        upstream,
        redis_url,
        "--set", f"counter_by={LABELS}",
        "--set", "counter_routes=/code/{code}",
        "--set", "counter_routes=/static/*",
    )  # fmt: skip
    send(p.url, [("GET", "/code/200", "acme")] * 3 + [("POST", "/code/201", None)], "127.0.0.1")
    send(p.url, [("GET", "/static/a/b.css", "beta")] * 2 + [("GET", "/nowhere", None)], "127.0.0.2")
    answer = status_of(p.url)
    assert answer.status_code == 200, answer.text
    body = json.loads(answer.content)
    assert body["counter"] == 7
    assert body["by"] == [
        {"route": "/code/{code}", "method": "GET", "client": "127.0.0.1",
         "header:X-Client-Id": "acme", "count": 3},
        {"route": "/static/*", "method": "GET", "client": "127.0.0.2",
         "header:X-Client-Id": "beta", "count": 2},
        {"route": "(unmatched)", "method": "GET", "client": "127.0.0.2",
         "header:X-Client-Id": "(none)", "count": 1},
        {"route": "/code/{code}", "method": "POST", "client": "127.0.0.1",
         "header:X-Client-Id": "(none)", "count": 1},
    ]  # fmt: skip
    assert sum(series["count"] for series in body["by"]) == body["counter"]
