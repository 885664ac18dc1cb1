"""Fixtures of both tiers: a shared redis-server, a test's own one, the upstream server and
mitmdump. The helpers behind them are in tests/support/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.browser import Browser, missing_browser
from tests.support.debian_redis import missing_binaries, missing_tls
from tests.support.package import Installed, build_wheel, install
from tests.support.processes import (
    Process,
    Proxy,
    ProxyFactory,
    start_redis,
    start_upstream,
)
from tests.support.redis_cluster import Cluster
from tests.support.redis_sentinel import Sentinels
from tests.support.tls import Certificates, ServerIdentity, make_certificates


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
def recorded_upstream(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    """An upstream of this test's own that logs every request it receives (processes.py's
    reached_upstream); it and its base URL."""
    directory = tmp_path / "recorded-upstream"
    directory.mkdir()
    proc, url = start_upstream(directory, record=True)
    yield proc, url
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


# --- A real browser ------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium of this test's own (tests/support/browser.py); skipped, saying why,
    without Debian's chromium and chromium-driver."""
    why = missing_browser()
    if why is not None:
        pytest.skip(why)
    started = Browser(tmp_path / "browser")
    yield started
    started.quit()


# --- The installed package -----------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the repository (tests/support/package.py)."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel with the `embedded` extra and its dependencies, in a fresh venv outside the
    repository."""
    done = install(wheel, tmp_path_factory.mktemp("installed"))
    print(f"\nfresh venv with the wheel and its dependencies: {done.seconds:.1f}s")
    return done


# --- Redis Cluster and Sentinel (Debian's redis-server and redis-cli) --------------------------


@pytest.fixture(scope="session")
def debian_redis() -> None:
    """Skips the test, saying why, without Debian's /usr/bin/redis-server and redis-cli."""
    why = missing_binaries()
    if why is not None:
        pytest.skip(why)


class SetUp(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def started[S: SetUp](make: Callable[..., S], directory: Path) -> Iterator[Callable[..., S]]:
    """A factory fixture's body: `make(directory/kindN, **kwargs)`, started (ready when
    returned); every one stopped after the test."""
    set_ups: list[S] = []

    def start(**kwargs: object) -> S:
        set_up = make(directory / f"{make.__name__.lower()}{len(set_ups)}", **kwargs)
        set_ups.append(set_up)
        set_up.start()
        return set_up

    yield start
    for set_up in set_ups:
        set_up.stop()


@pytest.fixture
def start_cluster(debian_redis: None, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Starts Redis Clusters (`Cluster`'s arguments; ready when returned); stops every node
    after the test. Request it before `start_proxy`, so the proxies stop first."""
    yield from started(Cluster, tmp_path)


@pytest.fixture
def redis_cluster(start_cluster: Callable[..., Cluster]) -> Cluster:
    """A Redis Cluster of this test's own: 3 primaries, 3 replicas, ready (tests/support/
    redis_cluster.py); free to kill, restart and reshard."""
    return start_cluster()


@pytest.fixture
def start_sentinels(debian_redis: None, tmp_path: Path) -> Iterator[Callable[..., Sentinels]]:
    """Starts Sentinel set-ups (`Sentinels`' arguments: passwords, a replication delay...;
    ready when returned); stops them after the test. Request it before `start_proxy`."""
    yield from started(Sentinels, tmp_path)


@pytest.fixture(params=["plain", "tls"])
def redis_tls(request: pytest.FixtureRequest, certs: Certificates) -> ServerIdentity | None:
    """A test taking it runs twice: over plain TCP (None), and TLS-only (`rediss+` URLs) with
    this certificate, which cluster nodes also present to each other as clients. Skipped,
    saying why, without a TLS-capable Debian redis-server."""
    if request.param == "plain":
        return None
    why = missing_tls()
    if why is not None:
        pytest.skip(why)
    return certs.node
