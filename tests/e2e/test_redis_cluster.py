"""End to end: counting in a real Redis Cluster (3 primaries, 3 replicas of Debian's
redis-server 7) through `redis+cluster://` seed URLs.

Counting is exact wherever the counter's slot lies (a key on each primary, a `{tag}`-ed key),
and every key the product writes lies beside the counter on its node, the counts by series too
(exact, summing to the count, every list of them cleared by `counter.reset`); a database other
than 0 is refused at start-up; and the count stays exact, with every proxied request answered,
through a SIGKILL of the primary that owns the counter's slot, a `redis-cli --cluster reshard`
of that slot, and a hand-made migration of just that slot held in each of its intermediate
states.

Skipped, saying why, without Debian's redis-server and redis-cli (`.ci/run` installs them).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from counting_addon.store.keys import (
    responses_key,
    series_key,
    series_lists_key,
    window_key,
    writer_key,
)
from tests.support.http_client import (
    counter_is,
    counter_of,
    gets_all_ok,
    poll_status,
    status_of,
)
from tests.support.load import Load, Results, ms
from tests.support.mitmweb import start_web
from tests.support.processes import (
    Process,
    Proxy,
    ProxyFactory,
    free_port,
    proxy_command,
    wait_for,
)
from tests.support.redis_cluster import Cluster, slot_of
from tests.support.series import series_of, series_options
from tests.support.tls import ServerIdentity

pytestmark = pytest.mark.topology

# Proxied requests in a counting test, over this many connections, so that the counts reach
# Redis in several batches.
REQUESTS = 200
CONNECTIONS = 10
BURST_TIMEOUT = 60.0
# Load through a fault: a few clients, bounded in count and time.
CLIENTS = 4
LOAD_REQUESTS = 30_000
LOAD_SECONDS = 120.0
# Requests sent before a fault, during it, and after it.
BEFORE = 200
AFTER = 200
# Measured ~2 s from SIGKILL to the promoted replica (cluster-node-timeout 1000 ms); generous
# for a busy 2-core machine.
FAILOVER_TIMEOUT = 30.0
# From the end of a fault until the proxy has written what waited and /status says so.
RECOVERY = 30.0
# mitmdump's start-up and exit on a refused option, on a busy machine.
EXIT_TIMEOUT = 30.0
KEY = "counter"


@pytest.fixture(scope="module")
def shared_cluster(
    debian_redis: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One cluster for the tests that only count (each with a key of its own)."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# --- helpers -----------------------------------------------------------------------------------


def send_concurrently(url: str, count: int = REQUESTS) -> None:
    gets_all_ok(f"{url}/cluster", count, CONNECTIONS, BURST_TIMEOUT)


def assert_stored_beside(cluster: Cluster, key: str, expected: int) -> None:
    """`key` holds `expected` on the primary that owns its slot, and so do its responses
    (every one a 2xx), its hour buckets (all of today's requests: windows.py) and at least
    one writer key, all on that node, none elsewhere; the admin client (following the
    cluster's topology) reads the same."""
    owner = cluster.owner_of(key)
    writers = writer_key(key, "*")
    hours = window_key(key, "h", 0).removesuffix("0") + "*"  # every hour bucket
    with cluster.node_client(owner) as node:
        assert node.get(key) == str(expected)
        assert node.hgetall(responses_key(key)) == {"2xx": str(expected)}
        found = list(node.scan_iter(match=writers, count=1000))
        buckets = list(node.scan_iter(match=hours, count=1000))
        assert sum(int(node.get(bucket) or 0) for bucket in buckets) == expected
    assert found, f"no {writers} on port {owner}, the owner of {key!r}"
    assert {slot_of(k) for k in found + buckets} == {slot_of(key)}, found + buckets
    for port in cluster.primary_ports():
        if port != owner:
            with cluster.node_client(port) as other:
                found_there = list(other.scan_iter(match=writers, count=1000))
                found_there += list(other.scan_iter(match=hours, count=1000))
                found_there += list(other.scan_iter(match=responses_key(key), count=1000))
                assert found_there == [], (port, found_there)
    with cluster.admin() as admin:
        assert admin.get(key) == str(expected).encode()


def assert_exact_after_load(proxy: Proxy, cluster: Cluster, results: Results) -> None:
    """Every request of the load was answered 200; once the proxy has written what waited,
    /status and the cluster both hold exactly that many."""
    assert results.failed == [], results.failed[:10]
    poll_status(proxy.url, counter_is(results.ok), RECOVERY, f"counter == {results.ok}")
    assert_stored_beside(cluster, KEY, results.ok)


def bounded_load(url: str) -> Load:
    return Load(url, CLIENTS, max_requests=LOAD_REQUESTS, max_seconds=LOAD_SECONDS)


def wait_writing(proxy: Proxy) -> float:
    """Until /status answers 200 (the proxy reads Redis again); how long that took."""
    start = time.monotonic()
    poll_status(proxy.url, lambda code, _: code == 200, RECOVERY, "/status 200")
    return time.monotonic() - start


# --- counting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("primary", [0, 1, 2], ids=["first", "second", "third"])
def test_counts_exactly_with_the_key_on_each_primary(
    shared_cluster: Cluster, start_proxy: ProxyFactory, upstream: str, primary: int
) -> None:
    """A counter key (no hash tag) whose slot lies on each primary in turn; the URL names the
    first two nodes only, so the third primary is reached by following the topology."""
    port = shared_cluster.primary_ports()[primary]
    key = shared_cluster.key_on(port, f"hits{primary}")
    p = start_proxy(upstream, shared_cluster.url(), "--set", f"counter_key={key}")
    send_concurrently(p.url)
    assert counter_of(p.url) == REQUESTS
    print(f"\n  key {key!r}: slot {slot_of(key)} on port {port} ({shared_cluster.url()})")
    assert_stored_beside(shared_cluster, key, REQUESTS)


def test_counts_exactly_with_a_tagged_key(
    shared_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """A key with its own hash tag: the keys beside it take that tag, not the whole key. The
    tag's slot is on the third primary; the URL names database 0, which a cluster has."""
    tag = shared_cluster.key_on(shared_cluster.primary_ports()[2], "tenant")
    key = f"{{{tag}}}:requests"
    p = start_proxy(upstream, shared_cluster.url(path="/0"), "--set", f"counter_key={key}")
    send_concurrently(p.url)
    assert counter_of(p.url) == REQUESTS
    assert responses_key(key) == f"{key}:responses"
    assert_stored_beside(shared_cluster, key, REQUESTS)


def series_keys(cluster: Cluster, key: str) -> dict[int, set[str]]:
    """The keys of counts by series beside counter `key` (`{key}:by` and `{key}:by:<list>`), by
    the port of the primary holding them."""
    lists = series_lists_key(key)
    found: dict[int, set[str]] = {}
    for port in cluster.primary_ports():
        with cluster.node_client(port) as node:
            keys = set(node.scan_iter(match=f"{lists}:*", count=1000))
            keys |= set(node.scan_iter(match=lists, count=1000))
            if keys:
                found[port] = keys
    return found


SERIES_LABELS = ["route", "method"]
SERIES = series_options(",".join(SERIES_LABELS), "/cluster/*")


def send_methods(url: str, requests: dict[tuple[str, str], int]) -> None:
    """{(method, path): how many}, one after another, each answered 200."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for (method, path), count in requests.items():
            for _ in range(count):
                assert client.request(method, path).status_code == 200


@pytest.mark.parametrize("primary", [0, 1, 2], ids=["first", "second", "third"])
def test_series_sum_to_the_exact_count_with_the_key_on_each_primary(
    shared_cluster: Cluster, start_proxy: ProxyFactory, upstream: str, primary: int
) -> None:
    """counter_by=route,method with the counter's slot on each primary in turn: the count is
    exact, the series are exactly what was sent and sum to it, and their keys lie beside the
    counter on its primary, nowhere else."""
    port = shared_cluster.primary_ports()[primary]
    key = shared_cluster.key_on(port, f"series{primary}")
    p = start_proxy(upstream, shared_cluster.url(), "--set", f"counter_key={key}", *SERIES)
    send_concurrently(p.url)
    send_methods(p.url, {("POST", "/cluster/form"): 5, ("DELETE", "/elsewhere"): 3})
    total = REQUESTS + 5 + 3
    expected = {("/cluster/*", "GET"): REQUESTS, ("/cluster/*", "POST"): 5,
                ("(unmatched)", "DELETE"): 3}  # fmt: skip
    assert series_of(p.url, SERIES_LABELS) == (total, expected)
    assert_stored_beside(shared_cluster, key, total)
    hash_key = series_key(key, "route,method")
    assert series_keys(shared_cluster, key) == {port: {series_lists_key(key), hash_key}}
    assert slot_of(hash_key) == slot_of(series_lists_key(key)) == slot_of(key)
    with shared_cluster.node_client(port) as node:
        assert sum(map(int, node.hvals(hash_key))) == total


def test_reset_clears_every_series_list_in_the_cluster(
    shared_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """A proxy counting by method, then a mitmweb counting by route and method on the same
    counter (on the third primary): two series lists. counter.reset, through mitmweb's command
    API, deletes both (the batch script finds them in the set of lists, keys it was not given)
    and the set; what is counted afterwards starts the new list's series from nothing."""
    port = shared_cluster.primary_ports()[2]
    key = shared_cluster.key_on(port, "reset")
    url = shared_cluster.url()
    by_method = start_proxy(upstream, url, "--set", f"counter_key={key}", *series_options("method"))
    send_methods(by_method.url, {("GET", "/before"): 4, ("POST", "/before"): 2})
    assert series_of(by_method.url, ["method"]) == (6, {("GET",): 4, ("POST",): 2})
    with start_web(start_proxy, upstream, url, "--set", f"counter_key={key}", *SERIES) as web:
        send_methods(web.proxy.url, {("GET", "/cluster/x"): 3})
        # A list set after 6 requests were counted: its series hold only what came since.
        assert series_of(web.proxy.url, SERIES_LABELS, whole=False) == (
            9,
            {("/cluster/*", "GET"): 3},
        )
        lists = {series_lists_key(key), series_key(key, "method"), series_key(key, "route,method")}
        assert series_keys(shared_cluster, key) == {port: lists}

        assert web.command("counter.reset") is None
        with shared_cluster.node_client(port) as node:

            def reset() -> bool:
                return node.get(key) == "0" and not series_keys(shared_cluster, key)

            try:
                wait_for(reset, RECOVERY, f"{key!r} and every series list reset")
            except AssertionError as e:
                raise AssertionError(
                    f"{e}: {node.get(key)!r}, {series_keys(shared_cluster, key)}\n"
                    f"{web.proxy.output()[-3000:]}"
                ) from None

        send_methods(web.proxy.url, {("GET", "/cluster/y"): 2, ("DELETE", "/z"): 1})
        after = {("/cluster/*", "GET"): 2, ("(unmatched)", "DELETE"): 1}
        assert series_of(web.proxy.url, SERIES_LABELS) == (3, after)
        assert series_keys(shared_cluster, key) == {
            port: {series_lists_key(key), series_key(key, "route,method")}
        }
    # The earlier list starts from nothing too: nothing was counted under it since.
    _, body = poll_status(by_method.url, counter_is(3), RECOVERY, "counter == 3")
    assert body["by"] == [], body


@pytest.mark.parametrize("database", ["/1", "/0?db=1"])
def test_database_other_than_0_is_refused(
    shared_cluster: Cluster, tmp_path: Path, upstream: str, database: str
) -> None:
    """A cluster has only database 0: mitmdump refuses the URL at start-up, naming the option
    and the database, and exits nonzero."""
    url = shared_cluster.url(path=database)
    command = proxy_command(
        "mitmdump",
        upstream,
        free_port(),
        tmp_path / "confdir",
        "--set",
        f"counter_redis_url={url}",
    )
    proc = Process(command, tmp_path / "mitmdump.log")
    try:
        code = proc.popen.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"mitmdump kept running with {url}:\n{proc.output()}") from None
    finally:
        proc.stop()
    output = proc.output()
    refusal = [line for line in output.splitlines() if "counter_redis_url" in line]
    print(f"\n  {url}: exit {code}: {refusal}")
    assert code != 0, output
    assert "counter_redis_url" in output, output
    # The reason, not the URL quoted in it (which says db=1 itself).
    assert re.search(r"database|\bdb\b", output.replace(url, ""), re.IGNORECASE), output
    assert "Traceback" not in output, output


# --- faults under load -------------------------------------------------------------------------


def test_primary_of_the_counter_killed_under_load(
    start_cluster: Callable[..., Cluster],
    redis_tls: ServerIdentity | None,
    start_proxy: ProxyFactory,
    upstream: str,
) -> None:
    """SIGKILL of the primary that owns the counter's slot (the first of the URL's two seeds)
    while clients keep sending; later it comes back as a replica. Every proxied request is
    answered 200, and the count is exact. Over plain TCP, and TLS-only (`rediss+cluster://`:
    the promoted replica, no seed, is found by following the topology at the TLS port it
    announces, hostnames checked)."""
    cluster = start_cluster(tls=redis_tls)
    victim = cluster.owner_of(KEY)
    url = cluster.url(seeds=[victim, cluster.primary_ports()[0]])
    assert url.startswith("rediss+cluster://" if redis_tls else "redis+cluster://")
    p = start_proxy(upstream, url)
    with bounded_load(p.url) as load:
        load.wait_for_more(BEFORE)
        killed_at = time.monotonic()
        cluster.kill(victim)
        promoted = cluster.wait_new_primary(KEY, victim, FAILOVER_TIMEOUT)
        failover = time.monotonic() - killed_at
        load.wait_for_more(AFTER)
        writing = wait_writing(p)
        load.wait_for_more(AFTER)
        restarted_at = time.monotonic()
        cluster.restart(victim)
        rejoined = time.monotonic() - restarted_at
        load.wait_for_more(AFTER)
    results = load.results
    print(
        f"\n  {results.ok} requests, {len(results.failed)} failed; port {victim} killed, "
        f"slot {slot_of(KEY)} on port {promoted} after {failover:.2f}s; /status 200 "
        f"{writing:.2f}s later; the killed node back as a replica in {rejoined:.2f}s; "
        f"latency median {ms(results.median())}, worst {ms(results.worst())}"
    )
    assert cluster.owner_of(KEY) == promoted
    assert_exact_after_load(p, cluster, results)


def test_with_wait_counts_wait_for_the_promoted_primary_to_have_a_replica(
    redis_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """counter_redis_replicas=1, SIGKILL of the counter's primary under load: the promoted
    replica has no replica of its own, so WAIT confirms nothing and counts wait (/status 503
    says why) while every request is answered; the killed node comes back as its replica and
    the count is exact."""
    cluster = redis_cluster
    victim = cluster.owner_of(KEY)
    url = cluster.url(seeds=[victim, cluster.primary_ports()[0]])
    p = start_proxy(upstream, url, "--set", "counter_redis_replicas=1")
    with bounded_load(p.url) as load:
        load.wait_for_more(BEFORE)
        cluster.kill(victim)
        promoted = cluster.wait_new_primary(KEY, victim, FAILOVER_TIMEOUT)
        load.wait_for_more(AFTER)
        _, body = poll_status(
            p.url,
            lambda code, body: code == 503 and "fewer replicas" in str(body.get("error")),
            RECOVERY,
            "/status 503 naming the missing replica",
        )
        waiting = body["pending"]
        cluster.restart(victim)
        load.wait_for_more(AFTER)
    results = load.results
    print(
        f"\n  {results.ok} requests, {len(results.failed)} failed; slot {slot_of(KEY)} on port "
        f"{promoted}; while it had no replica: {body}"
    )
    assert isinstance(waiting, int) and waiting > 0
    assert cluster.owner_of(KEY) == promoted
    assert_exact_after_load(p, cluster, results)


def test_counter_slot_resharded_under_load(
    redis_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """`redis-cli --cluster reshard` moves the counter's slot (last of the slots it moves) to
    another primary while clients keep sending: every request answered, the count exact, and
    the keys beside the counter moved with it."""
    cluster = redis_cluster
    p = start_proxy(upstream, cluster.url())
    source = cluster.owner_of(KEY)
    target = next(port for port in cluster.primary_ports() if port != source)
    with bounded_load(p.url) as load:
        load.wait_for_more(BEFORE)
        start = time.monotonic()
        moved = cluster.reshard(slot_of(KEY), target)
        took = time.monotonic() - start
        load.wait_for_more(AFTER)
    results = load.results
    print(
        f"\n  {results.ok} requests; {moved} slots (slot {slot_of(KEY)} last) moved from port "
        f"{source} to {target} in {took:.2f}s; worst latency {ms(results.worst())}"
    )
    assert cluster.owner_of(KEY) == target
    assert_exact_after_load(p, cluster, results)


def test_counter_slot_held_mid_migration_under_load(
    redis_cluster: Cluster, start_proxy: ProxyFactory, upstream: str
) -> None:
    """Just the counter's slot migrates by hand, and stays in each intermediate state while
    requests go on: first with the counter's keys split between the two nodes (the batch
    script gets TRYAGAIN until the split ends), then with every key moved but the slot not yet
    handed over (ASK). Every request answered; the count exact afterwards."""
    cluster = redis_cluster
    p = start_proxy(upstream, cluster.url())
    source = cluster.owner_of(KEY)
    target = next(port for port in cluster.primary_ports() if port != source)
    held: dict[str, tuple[int, str]] = {}
    with bounded_load(p.url) as load:
        load.wait_for_more(BEFORE)

        def hold(state: str) -> None:
            load.wait_for_more(BEFORE)
            r = status_of(p.url, timeout=30)
            held[state] = (r.status_code, r.text[:200])

        cluster.migrate_slot(slot_of(KEY), target, hold)
        load.wait_for_more(AFTER)
    results = load.results
    print(f"\n  {results.ok} requests; /status while the slot was held: {held}")
    assert set(held) == {"split", "moved"}
    assert cluster.owner_of(KEY) == target
    assert_exact_after_load(p, cluster, results)
