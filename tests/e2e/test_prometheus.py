"""End to end with a real Prometheus (Debian's `prometheus` package, 2.42): it scrapes the
proxy's /metrics every second, and its HTTP API gives back what the test sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.http_client import send
from tests.support.processes import Proxy, ProxyFactory
from tests.support.prometheus import PROMETHEUS, Prometheus, Result, by_label
from tests.support.series import series_options

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason=f"no {PROMETHEUS} (Debian's prometheus package; .ci/run installs it as root)",
)

# The PromQL of docs/metrics.md, "PromQL" section.
README_QUERIES = [
    "sum(rate(counting_addon_requests_total[5m]))",
    'sum(rate(counting_addon_responses_total{code_class="5xx"}[5m]))'
    " / sum(rate(counting_addon_responses_total[5m]))",
    "sum(max by (code_class) "
    '(increase(counting_addon_shared_responses_total{code_class="5xx"}[5m])))'
    " / sum(max by (code_class) (increase(counting_addon_shared_responses_total[5m])))",
    "histogram_quantile(0.95, "
    "sum by (le) (rate(counting_addon_request_duration_seconds_bucket[5m])))",
    "counting_addon_redis_up == 0",
]


# The PromQL of docs/series.md: requests per second by route, across all proxies.
SERIES_QUERY = (
    "sum by (route) "
    "(max without (instance, job) (rate(counting_addon_shared_requests_by_total[5m])))"
)
# The counts by route, one value per series whichever proxies report it: exact.
BY_ROUTE = "sum by (route) (max without (instance, job) (counting_addon_shared_requests_by_total))"


def scraping(directory: Path, *proxies: Proxy) -> Prometheus:
    return Prometheus(directory / "prometheus", [f"127.0.0.1:{p.port}" for p in proxies])


def codes(proxy: Proxy, code: int, count: int) -> None:
    for _ in range(count):
        assert httpx.get(f"{proxy.url}/code/{code}", timeout=30).status_code == code


def test_prometheus_scrapes_the_shared_count(proxy: Proxy, tmp_path: Path) -> None:
    with scraping(tmp_path, proxy) as prometheus:
        prometheus.poll('up{job="counting_addon"}', 1)
        send(proxy.url, "/counted", 7)
        prometheus.poll("counting_addon_shared_requests_total", 7)
        prometheus.poll("counting_addon_redis_up", 1)
        # Its scrapes are not counted: five more of them, and the count is still 7.
        seen = prometheus.query("count_over_time(counting_addon_shared_requests_total[5m])")
        prometheus.poll(
            "count_over_time(counting_addon_shared_requests_total[5m]) >= bool "
            f"{next(iter(seen.values())) + 5}",
            1,
        )
        prometheus.poll("max_over_time(counting_addon_shared_requests_total[5m])", 7)
        send(proxy.url, "/more", 3)
        prometheus.poll("counting_addon_shared_requests_total", 10)
        # The queries of docs/metrics.md run (their values are checked by the test below and
        # in-process).
        prometheus.poll("max(counting_addon_shared_requests_total)", 10)
        for promql in README_QUERIES:
            prometheus.query(promql)


def test_prometheus_gets_responses_by_class(proxy: Proxy, tmp_path: Path) -> None:
    with scraping(tmp_path, proxy) as prometheus:
        send(proxy.url, "/ok", 4)
        codes(proxy, 404, 3)
        codes(proxy, 500, 2)
        prometheus.poll("counting_addon_shared_requests_total", 9)
        # One query, so every series comes from the same scrape as the total of 9.
        got = prometheus.query('{__name__=~"counting_addon_(shared_)?re(quest|sponse)s_total"}')
        by_name_and_class = {
            (labels["__name__"], labels.get("code_class")): value
            for labels, value in ((dict(k), v) for k, v in got.items())
        }
        expected = {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 3, "5xx": 2}
        for name in ("counting_addon_shared_responses_total", "counting_addon_responses_total"):
            assert {c: by_name_and_class.get((name, c)) for c in expected} == expected, got
        assert by_name_and_class[("counting_addon_requests_total", None)] == 9


def test_the_per_route_rate_of_docs_series_md_over_two_proxies(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, tmp_path: Path
) -> None:
    """Two proxies sharing the counter, counting by route and method, both scraped: each
    reports every shared series, so one value per series (max over the instances) gives the
    exact counts by route, and the query of docs/series.md gives a rate for every route."""
    args = series_options("route,method", "/users/{id}", "/static/*")
    a, b = (start_proxy(upstream, redis_url, *args) for _ in range(2))
    with scraping(tmp_path, a, b) as prometheus:
        prometheus.poll('count(up{job="counting_addon"} == 1)', 2)
        send(a.url, "/users", 3)
        send(a.url, "/static/css", 2)
        send(b.url, "/users", 1)
        send(b.url, "/elsewhere", 2)
        # Three series (every method a GET), reported by both instances.
        prometheus.poll("count(counting_addon_shared_requests_by_total)", 6)
        totals = {"/users/{id}": 4, "/static/*": 2, "(unmatched)": 2}
        prometheus.poll_by(BY_ROUTE, "route", totals)
        # More on every route, from both, so that every series' rate is above 0.
        for p in (a, b):
            for path in ("/users", "/static/js", "/elsewhere"):
                send(p.url, path, 2)
        prometheus.poll_by(BY_ROUTE, "route", {route: n + 4 for route, n in totals.items()})

        def rates(result: Result) -> bool:
            by_route = by_label(result, "route")
            return set(by_route) == set(totals) and all(v > 0 for v in by_route.values())

        result = prometheus.poll_until(SERIES_QUERY, rates, 30, "> 0 for every route")
    print(f"\n  {SERIES_QUERY}: {sorted((dict(k)['route'], v) for k, v in result.items())}")
    assert all(set(dict(labels)) == {"route"} for labels in result), result
