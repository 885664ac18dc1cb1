"""End to end: Redis killed outright while writes are in flight; the count, the responses by
class and the counts by series stay exact."""

from __future__ import annotations

from pathlib import Path

import redis

from counting_addon.store.keys import series_key
from tests.support.processes import ProxyFactory
from tests.support.redis_kills import CLIENTS, killed_mid_write
from tests.support.series import series_of, series_options, status_by


def test_redis_killed_mid_write_under_load_loses_and_doubles_nothing(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: str
) -> None:
    with killed_mid_write(tmp_path, start_proxy, upstream) as (_, server, results):
        with redis.Redis.from_url(server.url) as client:
            assert client.get("counter") == str(results.ok).encode()
            # Every response was a 200, in the same batches: exact too.
            assert client.hgetall("{counter}:responses") == {b"2xx": str(results.ok).encode()}


def test_series_stay_exact_and_sum_to_the_counter_through_redis_killed_mid_write(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: str
) -> None:
    """The same kills with counter_by=route,method, a route per load client (client N sends
    /load/N/...): every /status answer's series sum to its counter, after each restart too,
    and in the end each series holds exactly the requests its client had answered, in /status
    and in Redis."""
    routes = [f"/load/{n}/*" for n in range(CLIENTS)]
    with killed_mid_write(
        tmp_path,
        start_proxy,
        upstream,
        *series_options("route,method", *routes),
        after_restart=lambda proxy: status_by(proxy.url),
    ) as (proxy, server, results):
        expected = {(f"/load/{n}/*", "GET"): results.ok_by_client[n] for n in range(CLIENTS)}
        assert series_of(proxy.url, ["route", "method"]) == (results.ok, expected)
        with redis.Redis.from_url(server.url) as client:
            assert client.get("counter") == str(results.ok).encode()
            stored = client.hgetall(series_key("counter", "route,method"))
    assert {field: int(count) for field, count in stored.items()} == {
        f'["/load/{n}/*","GET"]'.encode(): results.ok_by_client[n] for n in range(CLIENTS)
    }
