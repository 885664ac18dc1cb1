"""Fixtures of both tiers: a shared redis-server, a test's own one, the upstream server and
mitmdump. The helpers behind them are in tests/support/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from counting_addon.embedded_redis import EmbeddedRedis
from tests.support.debian_redis import missing_binaries
from tests.support.processes import (
    Proxy,
    ProxyFactory,
    start_redis,
    start_upstream,
)
from tests.support.redis_cluster import Cluster
from tests.support.redis_sentinel import Sentinels
from tests.support.tls import Certificates, make_certificates


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The shared test Redis, emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, free to stop, restart, pause and reconfigure without
    leaking that state into other tests.

    Requested before `start_proxy`, so it is stopped after the proxies have written their last
    counts.
    """
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA, and certificates for servers and clients (tests/support/tls.py)."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tests' upstream HTTP server (tests/support/upstream.py); its base URL."""
    proc, url = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def https_upstream(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[str]:
    """The same upstream over TLS (HTTP/1.1 by ALPN), its certificate from `certs.ca`."""
    identity = certs.server
    proc, url = start_upstream(
        tmp_path_factory.mktemp("https-upstream"), identity.cert_file, identity.key_file
    )
    yield url
    proc.stop()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Starts proxies (waiting until /status answers); stops them after the test.

    A proxy that logged a traceback fails the test: the addon must never raise.
    """
    started: list[Proxy] = []

    def start(upstream: str, redis_url: str | None, *args: str, **kwargs: object) -> Proxy:
        proxy = Proxy(tmp_path / f"proxy{len(started)}", upstream, redis_url, *args, **kwargs)  # type: ignore[arg-type]
        started.append(proxy)
        proxy.wait_ready()
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
    for proxy in started:
        assert "Traceback" not in proxy.output(), proxy.output()


@pytest.fixture
def proxy(start_proxy: ProxyFactory, upstream: str, redis_url: str) -> Proxy:
    """One mitmdump with the addon, defaults otherwise, in front of the test upstream."""
    return start_proxy(upstream, redis_url)


# --- Redis Cluster and Sentinel (Debian's redis-server and redis-cli) --------------------------


@pytest.fixture(scope="session")
def debian_redis() -> None:
    """Skips the test, saying why, without Debian's /usr/bin/redis-server and redis-cli."""
    why = missing_binaries()
    if why is not None:
        pytest.skip(why)


@pytest.fixture
def start_cluster(debian_redis: None, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Starts Redis Clusters (`Cluster`'s arguments; ready when returned); stops every node
    after the test. Request it before `start_proxy`, so the proxies stop first."""
    started: list[Cluster] = []

    def start(**kwargs: object) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def redis_cluster(start_cluster: Callable[..., Cluster]) -> Cluster:
    """A Redis Cluster of this test's own: 3 primaries, 3 replicas, ready (tests/support/
    redis_cluster.py); free to kill, restart and reshard."""
    return start_cluster()


@pytest.fixture
def start_sentinels(debian_redis: None, tmp_path: Path) -> Iterator[Callable[..., Sentinels]]:
    """Starts Sentinel set-ups (`Sentinels`' arguments: passwords, a replication delay...;
    ready when returned); stops them after the test. Request it before `start_proxy`."""
    started: list[Sentinels] = []

    def start(**kwargs: object) -> Sentinels:
        sentinels = Sentinels(tmp_path / f"sentinels{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(sentinels)
        sentinels.start()
        return sentinels

    yield start
    for sentinels in started:
        sentinels.stop()


@pytest.fixture
def redis_sentinels(start_sentinels: Callable[..., Sentinels]) -> Sentinels:
    """A primary, a replica and three sentinels of this test's own, without passwords, ready
    (tests/support/redis_sentinel.py); free to kill and restart."""
    return start_sentinels()
