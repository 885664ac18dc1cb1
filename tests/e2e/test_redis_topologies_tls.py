"""End to end: counting in a Redis Cluster and through Redis Sentinel that speak TLS only
(`rediss+cluster://`, `rediss+sentinel://`), Debian's redis-server 7 with the test CA's
certificate for 127.0.0.1.

A cluster's nodes talk TLS on the cluster bus and announce their TLS ports, which the proxy
reaches with the URL's `ssl_ca_certs` (hostname checking on: the certificate names
127.0.0.1); sentinels talk TLS to the proxy, to the data nodes and to each other, and the
proxy reaches the sentinels and the data nodes with the same `ssl_*` arguments. Counting is
exact through both, with the sentinels' own password too; and through a SIGKILL of the
counter's primary (in the cluster, and behind the sentinels) every request is answered and
the count exact.

The cluster nodes use `certs.node`, which serves as a client certificate too: on the cluster
bus Redis checks the peer's certificate whatever tls-auth-clients says, and refuses one made
for servers only.

Skipped, saying why, without Debian's redis-server (built with TLS) and redis-cli.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from counting_addon.keys import responses_key
from tests.support.debian_redis import missing_tls
from tests.support.http_client import concurrent_gets, counter_is, counter_of, poll_status
from tests.support.load import Load, ms
from tests.support.processes import ProxyFactory
from tests.support.redis_cluster import Cluster, slot_of
from tests.support.redis_sentinel import Sentinels
from tests.support.tls import Certificates

pytestmark = pytest.mark.topology

REQUESTS = 200
CONNECTIONS = 10
BURST_TIMEOUT = 60.0
CLIENTS = 4
LOAD_REQUESTS = 30_000
LOAD_SECONDS = 120.0
BEFORE = 200
AFTER = 200
# Measured 1.6-2.8 s from SIGKILL to the promoted replica (cluster-node-timeout and
# down-after-milliseconds 1000); generous for a busy 2-core machine.
FAILOVER_TIMEOUT = 40.0
RECOVERY = 30.0
KEY = "counter"
SENTINEL_PASSWORD = "sentinel-tls-s3cret-2718"


@pytest.fixture(scope="module")
def tls_topologies() -> None:
    """Skips the test, saying why, without a TLS-capable Debian redis-server and redis-cli."""
    why = missing_tls()
    if why is not None:
        pytest.skip(why)


@pytest.fixture(scope="module")
def tls_cluster(
    tls_topologies: None, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """3 primaries and 3 replicas, TLS only, for the tests that only count."""
    cluster = Cluster(tmp_path_factory.mktemp("tls-cluster"), tls=certs.node)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_tls_cluster(tls_topologies: None, certs: Certificates, tmp_path: Path) -> Iterator[Cluster]:
    """A TLS-only cluster of this test's own, free to kill. Request it before `start_proxy`,
    so the proxy stops first."""
    cluster = Cluster(tmp_path / "tls-cluster", tls=certs.node)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def start_tls_sentinels(
    tls_topologies: None, certs: Certificates, tmp_path: Path
) -> Iterator[Callable[..., Sentinels]]:
    """Starts TLS-only Sentinel set-ups (`Sentinels`' password arguments; ready when
    returned); stops them after the test. Request it before `start_proxy`."""
    started: list[Sentinels] = []

    def start(sentinel_password: str | None = None) -> Sentinels:
        sentinels = Sentinels(
            tmp_path / f"tls-sentinels{len(started)}",
            sentinel_password=sentinel_password,
            tls=certs.server,
        )
        started.append(sentinels)
        sentinels.start()
        return sentinels

    yield start
    for sentinels in started:
        sentinels.stop()


def send_concurrently(url: str, count: int = REQUESTS) -> None:
    """`count` proxied GETs, CONNECTIONS at a time; every one must get a 200."""
    responses = concurrent_gets(f"{url}/tls-topology", count, CONNECTIONS, BURST_TIMEOUT)
    codes = [r.status_code for r in responses]
    assert codes == [200] * count, sorted(set(codes))


def assert_in_cluster(cluster: Cluster, key: str, expected: int) -> None:
    """The node owning `key`'s slot, and the admin client (following the topology over TLS),
    both read `expected` under `key`, every response a 2xx."""
    with cluster.node_client(cluster.owner_of(key)) as node:
        assert node.get(key) == str(expected)
        assert node.hgetall(responses_key(key)) == {"2xx": str(expected)}
    with cluster.admin() as admin:
        assert admin.get(key) == str(expected).encode()


# --- counting ----------------------------------------------------------------------------------


def test_cluster_counts_exactly_over_tls(
    tls_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """`rediss+cluster://` naming two seeds, the counter on the third primary (reached by
    following the topology, at the TLS port it announces): exact."""
    port = tls_cluster.primary_ports()[2]
    key = tls_cluster.key_on(port, "tls-hits")
    url = tls_cluster.url()
    assert url.startswith("rediss+cluster://") and "ssl_ca_certs=" in url
    p = start_proxy(upstream, url, "--set", f"counter_key={key}")
    send_concurrently(p.url)
    assert counter_of(p.url) == REQUESTS
    print(f"\n  {url}: key {key!r} on port {port}")
    assert_in_cluster(tls_cluster, key, REQUESTS)


@pytest.mark.parametrize("sentinel_password", [None, SENTINEL_PASSWORD], ids=["open", "password"])
def test_sentinel_counts_exactly_over_tls(
    start_tls_sentinels: Callable[..., Sentinels],
    start_proxy: ProxyFactory,
    upstream: str,
    sentinel_password: str | None,
) -> None:
    """`rediss+sentinel://`: TLS to the sentinels and to the primary they name, with the same
    `ssl_ca_certs`; with `?sentinel_password=` too when the sentinels have one (which then
    shows nowhere in the proxy's output or /status). Exact."""
    sentinels = start_tls_sentinels(sentinel_password)
    url = sentinels.url()
    assert url.startswith("rediss+sentinel://") and "ssl_ca_certs=" in url
    p = start_proxy(upstream, url)
    send_concurrently(p.url)
    assert counter_of(p.url) == REQUESTS
    with sentinels.admin() as admin:
        assert admin.get(KEY) == str(REQUESTS).encode()
        assert admin.hgetall(responses_key(KEY)) == {b"2xx": str(REQUESTS).encode()}
    status = httpx.get(f"{p.url}/status", timeout=30).text
    p.stop()
    print(f"\n  {url}")
    if sentinel_password:
        assert sentinel_password not in p.output() + status


# --- a failover under TLS ------------------------------------------------------------------------


def test_cluster_primary_of_the_counter_killed_under_load_over_tls(
    own_tls_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """SIGKILL of the primary owning the counter's slot (one of the URL's two seeds) while
    clients keep sending; its replica takes over over TLS. Every request answered 200, the
    count exact."""
    cluster = own_tls_cluster
    victim = cluster.owner_of(KEY)
    p = start_proxy(upstream, cluster.url(seeds=[victim, cluster.primary_ports()[0]]))
    with Load(p.url, CLIENTS, max_requests=LOAD_REQUESTS, max_seconds=LOAD_SECONDS) as load:
        load.wait_for_more(BEFORE)
        killed_at = time.monotonic()
        cluster.kill(victim)
        promoted = cluster.wait_new_primary(KEY, victim, FAILOVER_TIMEOUT)
        failover = time.monotonic() - killed_at
        load.wait_for_more(AFTER)
        poll_status(p.url, lambda code, _: code == 200, RECOVERY, "/status 200")
        load.wait_for_more(AFTER)
    results = load.results
    print(
        f"\n  {results.ok} requests, {len(results.failed)} failed; port {victim} killed, slot "
        f"{slot_of(KEY)} on port {promoted} after {failover:.2f}s; latency median "
        f"{ms(results.median())}, worst {ms(results.worst())}"
    )
    assert results.failed == [], results.failed[:10]
    assert cluster.owner_of(KEY) == promoted
    poll_status(p.url, counter_is(results.ok), RECOVERY, f"counter == {results.ok}")
    assert_in_cluster(cluster, KEY, results.ok)


def test_sentinel_primary_killed_under_load_over_tls(
    start_tls_sentinels: Callable[..., Sentinels], start_proxy: ProxyFactory, upstream: str
) -> None:
    """SIGKILL of the primary while clients keep sending; the sentinels, talking TLS to each
    other and to the data nodes, promote the replica, which the proxy finds through them. Every
    request answered 200, the count exact."""
    sentinels = start_tls_sentinels()
    p = start_proxy(upstream, sentinels.url())
    with Load(p.url, CLIENTS, max_requests=LOAD_REQUESTS, max_seconds=LOAD_SECONDS) as load:
        load.wait_for_more(BEFORE)
        killed_at = time.monotonic()
        victim = sentinels.kill_primary()
        promoted = sentinels.wait_failover(victim, FAILOVER_TIMEOUT)
        failover = time.monotonic() - killed_at
        load.wait_for_more(AFTER)
        poll_status(p.url, lambda code, _: code == 200, RECOVERY, "/status 200")
        load.wait_for_more(AFTER)
    results = load.results
    print(
        f"\n  {results.ok} requests, {len(results.failed)} failed; primary {victim} killed, "
        f"{promoted} promoted after {failover:.2f}s; latency median {ms(results.median())}, "
        f"worst {ms(results.worst())}"
    )
    assert results.failed == [], results.failed[:10]
    assert sentinels.primary_port() == promoted
    poll_status(p.url, counter_is(results.ok), RECOVERY, f"counter == {results.ok}")
    with sentinels.admin() as admin:
        assert admin.get(KEY) == str(results.ok).encode()
