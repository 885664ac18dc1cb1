"""Counts by series through a real mitmdump: routes, methods, two client addresses and a header
label, summing exactly to the shared count in /status; two proxies reaching the cap on series
from both sides and keeping the same series and the same overflow; HTTP/2 and HTTP/1.1 counted
in the same series."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.http2 import h2_client
from tests.support.http_client import counter_is, gets_all_ok, poll_status, status_of
from tests.support.processes import Proxy, ProxyFactory
from tests.support.series import as_series, series_of, series_options, status_by

LABELS = "route,method,client,header:X-Client-Id"
ROUTED = series_options(LABELS, "/code/{code}", "/static/*")
# Requests as (method, path, X-Client-Id or None).
Requests = list[tuple[str, str, str | None]]

# Two proxies on one counter, the most series kept: each sends its own routes, /a/N/... on
# one and /b/N/... on the other, so the cap is reached from both sides.
CAP = 3
ROUTES_PER_PROXY = 10
SIDES = ("a", "b")
CAPPED = [
    "--set", f"counter_max_series={CAP}",
    *series_options("route", *(f"/{s}/{n}/*" for s in SIDES for n in range(ROUTES_PER_PROXY))),
]  # fmt: skip
OTHER = ("(other)",)
# The concurrent burst: per route, this many GETs over this many connections.
PER_ROUTE = 20
CONNECTIONS_PER_ROUTE = 2
BURST_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0


def send(client: httpx.Client, requests: Requests) -> None:
    for method, path, client_id in requests:
        headers = {"X-Client-Id": client_id} if client_id else {}
        assert client.request(method, path, headers=headers).status_code < 500


def send_from(url: str, requests: Requests, source: str) -> None:
    """`requests` over HTTP/1.1 from the client address `source`."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=url, timeout=10) as client:
        send(client, requests)


def test_series_sum_to_the_counter_by_route_method_client_and_header(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    p = start_proxy(upstream, redis_url, *ROUTED)
    send_from(
        p.url, [("GET", "/code/200", "acme")] * 3 + [("POST", "/code/201", None)], "127.0.0.1"
    )
    send_from(
        p.url, [("GET", "/static/a/b.css", "beta")] * 2 + [("GET", "/nowhere", None)], "127.0.0.2"
    )
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


def two_capped_proxies(start_proxy: ProxyFactory, upstream: str, redis_url: str) -> list[Proxy]:
    return [start_proxy(upstream, redis_url, *CAPPED) for _ in SIDES]


def same_answer_on_both(proxies: list[Proxy], total: int) -> dict[tuple[str, ...], int]:
    """Once both proxies' /status say `total` (each writes its own counts before it reads,
    the other's follow within its write interval): the same series on both, summing to it;
    they, as a mapping."""
    for p in proxies:
        poll_status(p.url, counter_is(total), SETTLE_TIMEOUT, f"{p.url}/status at {total}")
    answers = [status_by(p.url) for p in proxies]
    assert answers[0] == answers[1] == (total, answers[0][1]), answers
    return as_series(answers[0][1], ["route"])


def test_two_proxies_reaching_the_cap_in_turn_keep_the_first_series_and_one_overflow(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """New routes from one proxy and then the other, each request read back through its
    proxy's /status (which writes that proxy's counts first), so Redis sees them in the order
    sent: the first CAP routes are kept, whichever proxy brought them; every later new route,
    from either side, counts in (other); kept routes go on counting in their own series."""
    proxies = two_capped_proxies(start_proxy, upstream, redis_url)
    order = ["a0", "b0", "a1", "b1", "a2", "b0", "a1", "b2", "a0"]
    for n, step in enumerate(order, 1):
        side, route = step[0], int(step[1])
        p = proxies[SIDES.index(side)]
        assert httpx.get(f"{p.url}/{side}/{route}/x", timeout=10).status_code == 200
        counter, _ = series_of(p.url, ["route"])
        assert counter == n
    series = same_answer_on_both(proxies, len(order))
    # a0, b0 and a1 were first; b1, a2 and b2 came once the cap was reached.
    assert series == {("/a/0/*",): 2, ("/b/0/*",): 2, ("/a/1/*",): 2, OTHER: 3}


def test_two_proxies_racing_to_the_cap_keep_the_same_series_and_one_overflow(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """Both proxies send requests on ROUTES_PER_PROXY new routes each, all at once, so their
    batches race to the cap: CAP routes are kept, the same on both, each with every request
    sent on it (a route is kept from its first request or never); the rest count in (other)."""
    proxies = two_capped_proxies(start_proxy, upstream, redis_url)
    urls = [f"{p.url}/{s}/{n}" for p, s in zip(proxies, SIDES, strict=True)
            for n in range(ROUTES_PER_PROXY)]  # fmt: skip
    with ThreadPoolExecutor(len(urls)) as pool:
        bursts = [
            pool.submit(gets_all_ok, url, PER_ROUTE, CONNECTIONS_PER_ROUTE, BURST_TIMEOUT)
            for url in urls
        ]
        for burst in bursts:
            burst.result()
    total = len(urls) * PER_ROUTE
    series = same_answer_on_both(proxies, total)
    kept = {values: count for values, count in series.items() if values != OTHER}
    print(f"\n  kept {sorted(kept)}, (other) {series.get(OTHER)}, of {total}")
    assert len(kept) == CAP, series
    sent = {(f"/{s}/{n}/*",) for s in SIDES for n in range(ROUTES_PER_PROXY)}
    assert set(kept) <= sent, series
    assert set(kept.values()) == {PER_ROUTE}, series
    assert series[OTHER] == total - CAP * PER_ROUTE, series


def test_http2_and_http1_requests_land_in_the_same_series(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """The same requests over HTTP/2 (TLS, h2 alone offered), over HTTP/1.1 on the same TLS
    listener, and over plain HTTP/1.1: each round adds exactly one more of each series, labels
    alike (HTTP/2's lower-case header names and :method/:path pseudo-headers included)."""
    p = start_proxy(upstream, redis_url, *ROUTED)
    requests: Requests = [
        ("GET", "/code/200?page=2", "acme"),
        ("GET", "/code/404", "acme"),
        ("POST", "/code/201", None),
        ("GET", "/static/a/b.css", "beta"),
        ("DELETE", "/nowhere", "beta"),
    ]
    context = ssl.create_default_context(cafile=p.ca_cert)
    tls = f"https://localhost:{p.port}"
    clients: list[tuple[str, Callable[[], httpx.Client]]] = [
        ("HTTP/2", lambda: h2_client(p, timeout=10)),
        ("HTTP/1.1", lambda: httpx.Client(base_url=tls, verify=context, timeout=10)),
        ("HTTP/1.1", lambda: httpx.Client(base_url=p.url, timeout=10)),
    ]
    labels = LABELS.split(",")
    rounds = []
    for version, make in clients:
        with make() as client:
            assert client.get("/code/204").http_version == version
            send(client, requests)
        rounds.append(series_of(p.url, labels))
    first = rounds[0][1]
    print(f"\n  after the HTTP/2 round: {first}")
    assert len(first) == 5 and rounds[0][0] == len(requests) + 1, rounds[0]
    for n, (counter, series) in enumerate(rounds, 1):
        assert counter == n * (len(requests) + 1)
        assert series == {values: n * count for values, count in first.items()}, (n, series)
