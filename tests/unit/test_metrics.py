"""/metrics in process: the collector's exposition in both formats, the metrics path option, and
the endpoint's answers under taddons against a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from mitmproxy import http
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from counting_addon import CountingProxy
from counting_addon.code_class import CodeClass
from counting_addon.endpoints.rules import parse_metrics_path
from counting_addon.endpoints.scrape import registry
from counting_addon.process import ProcessStats
from counting_addon.store.shared import Shared
from tests.support.flows import all_hooks, flow
from tests.support.in_process import MakeProxy
from tests.support.metrics import (
    PROMETHEUS_ACCEPT,
    TEXT_CONTENT_TYPE,
    Samples,
    parse_openmetrics,
    parse_text,
)
from tests.support.processes import stays_pending, unreachable_redis_url

OWN = {
    "counting_addon_requests_total",
    "counting_addon_responses_total",
    "counting_addon_request_duration_seconds_bucket",
    "counting_addon_request_duration_seconds_count",
    "counting_addon_request_duration_seconds_sum",
    "counting_addon_pending_counts",
    "counting_addon_redis_up",
    "counting_addon_redis_writes_total",
    "counting_addon_redis_write_duration_seconds_bucket",
    "counting_addon_redis_write_duration_seconds_count",
    "counting_addon_redis_write_duration_seconds_sum",
    "counting_addon_request_bytes_total",
    "counting_addon_response_bytes_total",
}
SHARED = {
    "counting_addon_shared_requests_total",
    "counting_addon_shared_responses_total",
    "counting_addon_shared_request_bytes_total",
    "counting_addon_shared_response_bytes_total",
}


def stats() -> ProcessStats:
    s = ProcessStats(requests=7, redis_writes=3, request_bytes=900, response_bytes=2**41)
    s.responses[CodeClass.C2XX] = 5
    s.responses[CodeClass.C5XX] = 1
    for seconds in (0.001, 0.2, 0.2, 30.0):
        s.request_duration.observe(seconds)
    s.redis_write_duration.observe(0.0004)
    return s


SHARED_COUNTS = Shared(
    1234, {CodeClass.C1XX: 0, CodeClass.C2XX: 1000, CodeClass.C3XX: 3, CodeClass.C4XX: 200,
           CodeClass.C5XX: 30}, request_bytes=5000, response_bytes=2**50,
)  # fmt: skip


@pytest.mark.parametrize("parse", [parse_text, parse_openmetrics], ids=["text", "openmetrics"])
def test_exposition_names_and_values(parse: Callable[[str], Samples]) -> None:
    """The exact names of the issue in both formats: `_total` once, never twice or missing."""
    encode = generate_latest if parse is parse_text else generate_openmetrics
    samples = parse(encode(registry(stats(), 4, SHARED_COUNTS)).decode())
    counting = {name for name in samples.names() if name.startswith("counting_addon_")}
    assert counting == OWN | SHARED
    assert samples.value("counting_addon_shared_requests_total") == 1234
    for code_class, count in SHARED_COUNTS.responses.items():
        labels = {"code_class": code_class.value}
        assert samples.value("counting_addon_shared_responses_total", labels) == count
    assert samples.value("counting_addon_shared_request_bytes_total") == 5000
    assert samples.value("counting_addon_shared_response_bytes_total") == 2**50
    assert samples.value("counting_addon_requests_total") == 7
    assert samples.value("counting_addon_request_bytes_total") == 900
    assert samples.value("counting_addon_response_bytes_total") == 2**41
    assert samples.value("counting_addon_responses_total", {"code_class": "2xx"}) == 5
    assert samples.value("counting_addon_responses_total", {"code_class": "5xx"}) == 1
    assert samples.value("counting_addon_responses_total", {"code_class": "4xx"}) == 0
    assert samples.value("counting_addon_pending_counts") == 4
    assert samples.value("counting_addon_redis_up") == 1
    assert samples.value("counting_addon_redis_writes_total") == 3
    duration = "counting_addon_request_duration_seconds"
    assert samples.value(f"{duration}_count") == 4
    assert samples.value(f"{duration}_sum") == pytest.approx(30.401)
    assert samples.value(f"{duration}_bucket", {"le": "0.005"}) == 1
    assert samples.value(f"{duration}_bucket", {"le": "0.25"}) == 3
    assert samples.value(f"{duration}_bucket", {"le": "10.0"}) == 3
    assert samples.value(f"{duration}_bucket", {"le": "+Inf"}) == 4
    writes = "counting_addon_redis_write_duration_seconds"
    assert samples.value(f"{writes}_bucket", {"le": "0.0005"}) == 1
    # prometheus_client's process metrics (Linux: from /proc).
    assert samples.value("process_resident_memory_bytes") > 0


@pytest.mark.parametrize("parse", [parse_text, parse_openmetrics], ids=["text", "openmetrics"])
def test_the_series_are_one_family_with_a_label_per_configured_label(
    parse: Callable[[str], Samples],
) -> None:
    series: dict[tuple[str, ...], int] = {("/users/{id}", "acme"): 1200, ("(other)", "(other)"): 34}
    shared = Shared(1234, SHARED_COUNTS.responses, series)
    encode = generate_latest if parse is parse_text else generate_openmetrics
    labels = ("route", "header_x_client_id")
    samples = parse(encode(registry(stats(), 0, shared, labels)).decode())
    by = "counting_addon_shared_requests_by_total"
    assert samples.value(by, {"route": "/users/{id}", "header_x_client_id": "acme"}) == 1200
    assert samples.value(by, {"route": "(other)", "header_x_client_id": "(other)"}) == 34
    without = parse(encode(registry(stats(), 0, SHARED_COUNTS)).decode())
    assert by not in without.names()


def test_without_redis_the_shared_counts_are_left_out() -> None:
    samples = parse_text(generate_latest(registry(stats(), 4, None)).decode())
    assert {n for n in samples.names() if n.startswith("counting_addon_")} == OWN
    assert samples.value("counting_addon_redis_up") == 0
    assert samples.value("counting_addon_requests_total") == 7


@pytest.mark.parametrize(
    ("value", "path"), [("/metrics", "/metrics"), ("/prom/m", "/prom/m"), ("", None)]
)
def test_parse_metrics_path(value: str, path: str | None) -> None:
    assert parse_metrics_path(value) == path


@pytest.mark.parametrize("value", ["metrics", "/metrics?x", "/a#b", "/a b", " ", "/\x7f"])
def test_parse_metrics_path_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_metrics_path(value)


async def scrape(
    counting_proxy: MakeProxy,
    f: http.HTTPFlow,
    before: int = 0,
    **options: str,
) -> tuple[http.HTTPFlow, http.Response | None, int]:
    """`before` proxied requests, then `f`, each through every hook, on a proxy of its own;
    the flow, the proxy's own answer (None: proxied) and the count of requests this process
    counted (written to Redis by then)."""
    running = counting_proxy(**options)
    proxy = running.proxy
    for i in range(before):
        await all_hooks(proxy, flow(f"/before/{i}"))
    answer = await all_hooks(proxy, f)
    counted = running.counter.ledger.counted
    await proxy.counting.done()
    return f, answer, counted


class TestEndpoint:
    async def test_get_is_prometheus_text(self, counting_proxy: MakeProxy) -> None:
        f, _, counted = await scrape(counting_proxy, flow("/metrics?debug=1"), before=3)
        assert f.response is not None and f.response.status_code == 200
        assert f.response.headers["content-type"] == TEXT_CONTENT_TYPE
        assert f.response.headers["cache-control"] == "no-store"
        samples = parse_text(f.response.get_text() or "")
        # This process's counts were written before the read: the same guarantee as /status.
        assert samples.value("counting_addon_shared_requests_total") == 3
        assert samples.value("counting_addon_pending_counts") == 0
        assert samples.value("counting_addon_redis_up") == 1
        assert counted == 3  # the scrape is not counted
        assert f.marked and f.comment == "answered by counting_addon"

    async def test_openmetrics_when_asked(self, counting_proxy: MakeProxy) -> None:
        accept = ((b"accept", PROMETHEUS_ACCEPT.encode()),)
        f, _, _ = await scrape(counting_proxy, flow("/metrics", headers=accept), before=2)
        assert f.response is not None and f.response.status_code == 200
        assert f.response.headers["content-type"].startswith("application/openmetrics-text;")
        text = f.response.get_text() or ""
        assert text.endswith("# EOF\n")
        assert parse_openmetrics(text).value("counting_addon_shared_requests_total") == 2

    async def test_head_has_the_head_of_a_get(self, counting_proxy: MakeProxy) -> None:
        f, _, _ = await scrape(counting_proxy, flow("/metrics", method="HEAD"))
        assert f.response is not None and f.response.status_code == 200
        assert f.response.raw_content == b""
        assert int(f.response.headers["content-length"]) > 1000
        assert f.response.headers["content-type"].startswith("text/plain")

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
    async def test_other_methods_405(self, counting_proxy: MakeProxy, method: str) -> None:
        f, _, counted = await scrape(counting_proxy, flow("/metrics", method=method))
        assert f.response is not None and f.response.status_code == 405
        assert f.response.headers["allow"] == "GET, HEAD"
        assert counted == 0

    async def test_custom_path(self, counting_proxy: MakeProxy) -> None:
        f, _, _ = await scrape(counting_proxy, flow("/prom"), counter_metrics_path="/prom")
        assert f.response is not None and f.response.status_code == 200
        g, answer, counted = await scrape(
            counting_proxy, flow("/metrics"), counter_metrics_path="/prom"
        )
        assert answer is None and not g.marked and counted == 1

    async def test_off_the_path_is_proxied_and_counted(self, counting_proxy: MakeProxy) -> None:
        f, answer, counted = await scrape(counting_proxy, flow("/metrics"), counter_metrics_path="")
        assert answer is None and f.error is None and not f.marked
        assert counted == 1

    async def test_outside_reverse_mode_the_path_is_proxied(
        self, counting_proxy: MakeProxy
    ) -> None:
        _, answer, counted = await scrape(counting_proxy, flow("/metrics", mode="regular"))
        assert answer is None and counted == 1

    async def test_redis_down_answers_200_without_shared_counts(
        self, counting_proxy: MakeProxy
    ) -> None:
        """Redis refusing connections: the writer has failed (the counter knows), so the scrape
        doesn't wait for Redis at all."""
        running = counting_proxy(counter_redis_url=unreachable_redis_url())
        proxy, counter = running.proxy, running.counter
        await all_hooks(proxy, flow("/proxied"))
        # As the writer, this read fails to write.
        await stays_pending(counter.read(), lambda: counter.problem is not None, "a failed write")
        f = flow("/metrics")
        await all_hooks(proxy, f)
        await counter.close(0.1)
        assert f.response is not None and f.response.status_code == 200
        samples = parse_text(f.response.get_text() or "")
        assert not SHARED & samples.names()
        assert samples.value("counting_addon_redis_up") == 0
        assert samples.value("counting_addon_pending_counts") == 1

    async def test_a_script_reload_scrapes_as_before(
        self, counting_proxy: MakeProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """A reload makes new addons; nothing is registered globally, so nothing twice."""
        redis_client.set("counter", 10)
        running = counting_proxy()
        first, tctx = running.proxy, running.tctx
        for proxy in (first, CountingProxy()):
            if proxy is not first:
                await first.counting.done()
                tctx.master.addons.remove(first)
                tctx.master.addons.add(proxy)
                tctx.configure(proxy.counting, counter_redis_url=redis_url)
            f = flow("/metrics")
            await all_hooks(proxy, f)
            assert f.response is not None and f.response.status_code == 200
            samples = parse_text(f.response.get_text() or "")
            assert samples.value("counting_addon_shared_requests_total") == 10
        await proxy.counting.done()
