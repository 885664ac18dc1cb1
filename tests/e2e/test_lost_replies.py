"""End to end: Redis killed outright while writes are in flight; the count, the responses by
class and the counts by series stay exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.keys import series_key
from tests.support.http_client import counter_of, status_of
from tests.support.load import Load, Results
from tests.support.processes import Proxy, ProxyFactory, start_redis, wait_for
from tests.support.relay import Relay
from tests.support.series import series_of, series_options, status_by

KILLS = 3
CLIENTS = 8


@contextmanager
def killed_mid_write(
    tmp_path: Path,
    start_proxy: ProxyFactory,
    upstream: str,
    *args: str,
    after_restart: Callable[[Proxy], object] = lambda proxy: None,
) -> Iterator[tuple[Proxy, EmbeddedRedis, Results]]:
    """A proxy (with `args`) under load while Redis (AOF, fsync always) is SIGKILLed KILLS
    times just after it applied a batch whose reply is still on its way: the proxy never hears
    of it and resends the batch to the restarted Redis.

    The relay between proxy and Redis holds that reply back, so every kill loses one for
    certain (tests/unit/test_redis_counter.py shows a writer that numbers each send anew
    counting it twice, requests and classes). `after_restart` runs once /status is back to 200
    after each restart. Yields, once /status says every request answered was counted, the
    proxy, Redis, and the load's results (every request answered 200); stops Redis after.
    """
    server = start_redis(tmp_path / "redis", "--appendfsync", "always")
    relay = Relay(server.port)
    relay.start()
    try:
        proxy = start_proxy(upstream, f"redis://127.0.0.1:{relay.port}/0", *args)
        with Load(proxy.url, concurrency=CLIENTS, max_requests=100_000, max_seconds=150) as load:
            for _ in range(KILLS):
                load.wait_for_more(300)
                relay.lose_next_write_reply(then="hold")
                wait_for(relay.reply_held.is_set, 30, "an applied write's reply to hold back")
                assert server.process is not None
                server.process.kill()
                server.process.wait()
                load.wait_for_more(300)  # the proxy serves on without Redis
                server.start()
                # The lost batch has been resent (and skipped) before the relay is armed again.
                wait_for(lambda: status_of(proxy.url).status_code == 200, 30, "/status back to 200")
                after_restart(proxy)
            load.wait_for_more(300)
        results = load.results
        assert results.failed == []
        assert relay.lost_replies == KILLS
        wait_for(lambda: counter_of(proxy.url) == results.ok, 30, f"counter == {results.ok}")
        yield proxy, server, results
    finally:
        relay.stop()
        server.stop()


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
