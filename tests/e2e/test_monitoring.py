"""End to end: every query of the Grafana dashboard (docs/monitoring/counting-addon.json) and
every alert rule (docs/monitoring/alerts.yml, loaded by Prometheus itself) against a real
Prometheus scraping two real proxies under load, each query's labels checked, the shared count
exact; then Redis stops under load and the alerts' expressions return both instances: Redis
unreachable and pending counts growing at once, counts not written a minute later."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from counting_addon.code_class import CodeClass
from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.load import Load
from tests.support.monitoring import (
    ALERTS,
    Query,
    alert_names,
    dashboard,
    metric_names,
    queries,
    substitute,
    variables,
)
from tests.support.processes import Proxy, ProxyFactory, wait_for
from tests.support.prometheus import PROMETHEUS, Prometheus, Result, by_label
from tests.support.series import series_options

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason=f"no {PROMETHEUS} (Debian's prometheus package; .ci/run installs it as root)",
)

# Grafana's variables as the test sets them: every job and instance, and a rate window of ten
# scrapes (this Prometheus scrapes every second).
VALUES = {"__rate_interval": "10s", "job": ".*", "instance": ".*"}
JOB = "counting_addon"
# counter_by, and the templates every request of the load matches.
BY = ("route", "method")
ROUTES = ("/users/{id}", "/code/{status}")
# One request in ten is answered 500 by the upstream: a 10% share of 5xx, above the alert's 5%.
FIVE_XX_EVERY = 10
BODY = b"b" * 512
# Bounds of the load on each proxy: it runs through the whole test, which ends it sooner.
LOAD_REQUESTS = 20_000
LOAD_SECONDS = 150.0
WAIT = 60.0
# Alerts whose expression returns nothing at all while Redis is up. Not pending counts
# growing: a burst can make pending's slope over the few seconds of data steep; its `for: 5m`
# rides that out (alerts.test.yml).
QUIET_WHILE_REDIS_IS_UP = {
    "CountingAddonRedisUnreachable",
    "CountingAddonCountsNotWritten",
    "CountingAddonDown",
}
# The grammar of a template variable's query in Grafana: label_values(selector, label).
LABEL_VALUES = re.compile(r"label_values\((?P<match>.+), (?P<label>\w+)\)")


def load_path(client: int, request: int) -> str:
    if request % FIVE_XX_EVERY == 0:
        return "/code/500"
    return f"/users/{client}-{request}"


def loaded(stack: ExitStack, proxy: Proxy) -> Load:
    load = Load(proxy.url, 1, LOAD_REQUESTS, LOAD_SECONDS, BODY, load_path)
    return stack.enter_context(load)


def shape(query: Query, instances: set[str]) -> Callable[[Result], bool]:
    """What `query`'s answer must look like, from what its legend shows: a series per instance
    (`{{instance}}`), per status class (`{{code_class}}`), per series of counter_by (the
    legend Grafana makes of all the labels, `__auto`), else a single total without labels;
    every value a number (a rate over a window without traffic would be NaN)."""
    labels = query.legend_labels()

    def holds(result: Result) -> bool:
        if not result or not all(math.isfinite(v) for v in result.values()):
            return False
        if "instance" in labels:
            return set(by_label(result, "instance")) == instances
        if "code_class" in labels:
            return set(by_label(result, "code_class")) == {c.value for c in CodeClass}
        if query.legend == "__auto":
            return all(set(dict(series)) == set(BY) for series in result) and set(
                by_label(result, "route")
            ) == set(ROUTES)
        return list(map(dict, result)) == [{}]

    return holds


def by_title(title: str) -> str:
    (query,) = (q for q in queries(dashboard()) if q.panel == title)
    return substitute(query.expr, VALUES)


def check_dashboard(prometheus: Prometheus, instances: set[str]) -> None:
    model = dashboard()
    for query in queries(model):
        prometheus.poll_until(
            substitute(query.expr, VALUES),
            shape(query, instances),
            WAIT,
            f"to answer {query.panel!r} {query.ref_id} with its labels",
        )
    # The template variables' label_values() lists, through Prometheus's label API.
    expected = {"job": {JOB}, "instance": instances}
    for name, definition in variables(model).items():
        parsed = LABEL_VALUES.fullmatch(definition)
        assert parsed, definition
        match = substitute(parsed["match"], VALUES)
        assert prometheus.label_values(parsed["label"], match) == expected[name], definition
    # Every name the dashboard and the rules use is one the real scrapes brought.
    scraped = prometheus.label_values("__name__", f'{{job="{JOB}"}}')
    used = {n for q in queries(model) for n in metric_names(q.expr)}
    assert used | metric_names(ALERTS.read_text()) <= scraped, used - scraped


def alerting(prometheus: Prometheus, name: str) -> dict[str, str]:
    """The state of alert `name`'s alerts in Prometheus (pending, firing), by instance."""
    (rule,) = (r for r in prometheus.rules() if r["name"] == name)
    return {alert["labels"]["instance"]: alert["state"] for alert in rule["alerts"]}


def returns(instances: set[str]) -> Callable[[Result], bool]:
    return lambda result: set(by_label(result, "instance")) == instances


def check_rules(prometheus: Prometheus, instances: set[str]) -> dict[str, str]:
    """The rules as Prometheus loaded them, each evaluated by it without error, then each
    expression run: the high 5xx share returns both instances (10% of 5xx). Their
    expressions, by alert name."""
    rules = prometheus.rules()
    assert [r["name"] for r in rules] == alert_names()
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        for text in rule["annotations"].values():
            assert "{{ $labels.instance }}" in text, rule["annotations"]
        assert "$value" in rule["annotations"]["description"], rule["annotations"]

    def evaluated() -> bool:
        return all(r["health"] == "ok" and not r.get("lastError") for r in prometheus.rules())

    wait_for(evaluated, WAIT, "every rule evaluated by prometheus without error")
    exprs = {r["name"]: r["query"] for r in rules}
    for name, expr in exprs.items():
        result = prometheus.query(expr)
        if name in QUIET_WHILE_REDIS_IS_UP:
            assert result == {}, name
    prometheus.poll_until(
        exprs["CountingAddonHigh5xxShare"], returns(instances), WAIT, "for both instances"
    )
    return exprs


@pytest.fixture
def proxies(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> tuple[Proxy, Proxy]:
    """Two proxies sharing `own_redis`, counting by route and method."""
    args = series_options(",".join(BY), *ROUTES)
    return start_proxy(upstream, own_redis.url, *args), start_proxy(upstream, own_redis.url, *args)


def test_every_dashboard_query_and_alert_rule_runs_against_prometheus_scraping_two_proxies(
    own_redis: EmbeddedRedis, proxies: tuple[Proxy, Proxy], tmp_path: Path
) -> None:
    instances = {f"127.0.0.1:{p.port}" for p in proxies}
    with Prometheus(tmp_path / "prometheus", sorted(instances), [ALERTS]) as prometheus:
        with ExitStack() as under_load:
            began = time.monotonic()
            loads = [loaded(under_load, p) for p in proxies]
            check_dashboard(prometheus, instances)
            exprs = check_rules(prometheus, instances)
        # Every request counted once, however many instances report the shared count.
        sent = sum(load.results.sent for load in loads)
        print(f"\n  under load: {sent} requests in {time.monotonic() - began:.1f} s")
        prometheus.poll(by_title("Shared count"), sent)

        # Redis stops (by pid) under load: both instances' scrapes report redis_up 0, which
        # the alert's expression returns at once (Prometheus holds the alert pending for its
        # `for:`), and the counts waiting in memory grow.
        with ExitStack() as under_load:
            for p in proxies:
                loaded(under_load, p)
            own_redis.stop()
            stopped = time.monotonic()
            prometheus.poll_until(
                exprs["CountingAddonRedisUnreachable"], returns(instances), WAIT, "for both"
            )
            print(f"  redis_up 0 for both: {time.monotonic() - stopped:.1f} s after Redis stopped")
            prometheus.poll(by_title("Instances not reading Redis"), len(instances))
            prometheus.poll_until(
                exprs["CountingAddonPendingCountsGrowing"], returns(instances), WAIT, "for both"
            )
            wait_for(
                lambda: set(alerting(prometheus, "CountingAddonRedisUnreachable")) == instances,
                WAIT,
                "prometheus's CountingAddonRedisUnreachable pending for both instances",
            )
        # The load ends, its counts still waiting: a minute after the last write, each
        # instance's counts are not written.
        prometheus.poll_until(
            exprs["CountingAddonCountsNotWritten"], returns(instances), 2 * WAIT, "for both"
        )
        print(f"  counts not written: {time.monotonic() - stopped:.1f} s after Redis stopped")
