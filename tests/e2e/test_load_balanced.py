"""End to end: the recipe of docs/deployment/: Debian's nginx, with the very config users copy
(docs/deployment/nginx.conf, its ports rewritten), in front of two mitmdumps counting into one
Redis key.

Requests through nginx reach both processes and are counted once, in one shared count that
/status answers alike through nginx and on each process; large bodies stream through both
layers intact, and a WebSocket passes. One process stopped under load: drained through nginx
first (marked down, nginx reloaded), then SIGTERM, the count stays exact; SIGTERMed without a
drain, the stopping process refuses new requests unread, nginx resends them to the other
process, every request is answered, and the count is exact too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.bodies import MiB, check_pattern_download, echo, numbered_chunks
from tests.support.http_client import (
    concurrent_gets,
    counter_is,
    counter_of,
    poll_status,
)
from tests.support.load import Load
from tests.support.metrics import scrape
from tests.support.nginx import Nginx, missing_nginx
from tests.support.processes import Proxy, ProxyFactory, free_port, wait_until_serving

# Requests in the burst, and how many at once: enough that least_conn gives each process a
# share, whatever the machine's other load.
REQUESTS = 400
CONNECTIONS = 20
BURST_TIMEOUT = 120.0
# Bounds every wait on a process: generous for a busy 2-core machine, never reached when well.
TIMEOUT = 30.0
# The transfers: enough to cross every buffer of nginx and mitmdump many times over.
DOWNLOAD = 64 * MiB
UPLOAD = 64 * MiB
TRANSFER_TIMEOUT = httpx.Timeout(120.0)
# The load while a process is stopped: clients at once, requests before and after the stop.
CONCURRENCY = 8
BEFORE_STOP = 300
AFTER_STOP = 300
LOAD_REQUESTS = 20_000
LOAD_SECONDS = 120.0
# What nginx's reload does to a keep-alive client: an old worker closes the client connections
# idle at that moment, and a request the client sent on one just then gets no answer. It never
# reached a mitmdump (nor is it counted); a client that resends idempotent requests on such a
# connection, as RFC 9112 section 9.3.1 allows and browsers do, never sees it. httpx doesn't.
RELOAD_CLOSED = "RemoteProtocolError('Server disconnected without sending a response.')"
# What a stopping mitmdump logs for counts it could not write to Redis.
UNWRITTEN = re.compile(r"(\d+) counts could not be written to Redis")
# nginx's error line for a request it sent to a mitmdump that closed (or reset) the connection
# before answering, which it resends to the other one: a stopping mitmdump refuses them unread,
# uncounted.
CUT_BEFORE_ANSWER = "while reading response header from upstream"


@pytest.fixture(scope="module")
def nginx_binary() -> None:
    why = missing_nginx()
    if why is not None:
        pytest.skip(why)


class Balanced:
    """Two mitmdumps on the shared test Redis, nginx in front."""

    def __init__(self, proxies: list[Proxy], nginx: Nginx) -> None:
        self.proxies = proxies
        self.nginx = nginx
        self.url = nginx.url

    def statuses(self) -> list[int]:
        """The counter as /status answers it through nginx (twice: least_conn takes turns
        when idle) and on each process directly."""
        urls = [self.url, self.url, *(p.url for p in self.proxies)]
        return [counter_of(url, timeout=TIMEOUT) for url in urls]

    def wait_count(self, expected: int) -> None:
        """Until every process has written its counts (each /status writes that process's own
        pending counts, not the other's), then every /status answers `expected`."""
        for proxy in self.proxies:
            if proxy.popen.poll() is None:
                poll_status(proxy.url, counter_is(expected), TIMEOUT, f"the count {expected}")
        assert self.statuses() == [expected] * (2 + len(self.proxies))


@pytest.fixture
def balanced(
    nginx_binary: None, start_proxy: ProxyFactory, upstream: str, redis_url: str, tmp_path: Path
) -> Iterator[Balanced]:
    """Requested after start_proxy: nginx stops before the proxies do."""
    proxies = [start_proxy(upstream, redis_url) for _ in range(2)]
    nginx = Nginx(tmp_path / "nginx", free_port(), [p.port for p in proxies])
    try:
        wait_until_serving(nginx, nginx.url, TIMEOUT)
        yield Balanced(proxies, nginx)
    finally:
        nginx.stop()


def requests_total(proxy: Proxy) -> int:
    """The requests this one process counted, from its own /metrics."""
    return int(scrape(proxy.url).value("counting_addon_requests_total"))


def test_both_processes_serve_and_every_status_answers_the_shared_count(
    balanced: Balanced,
) -> None:
    responses = concurrent_gets(balanced.url, REQUESTS, CONNECTIONS, BURST_TIMEOUT)
    assert [r.status_code for r in responses] == [200] * REQUESTS
    shares = [requests_total(p) for p in balanced.proxies]
    print(f"\n{REQUESTS} requests through nginx, per process: {shares}")
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == REQUESTS
    balanced.wait_count(REQUESTS)


def test_forwarded_headers_and_websocket_pass(balanced: Balanced) -> None:
    """The origin learns the client's address; a WebSocket through nginx (the config's
    Upgrade/Connection map) is echoed, and counted once like any request."""
    got = echo(httpx.get(f"{balanced.url}/headers", timeout=TIMEOUT))
    headers = {k.lower(): v for k, v in got["headers"]}  # type: ignore[attr-defined]
    assert headers.get("x-forwarded-for") == "127.0.0.1", headers
    assert headers.get("x-forwarded-proto") == "http", headers
    ws_url = f"ws://127.0.0.1:{balanced.nginx.port}/ws"
    with connect(ws_url, proxy=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        messages: list[str | bytes] = ["hello", b"\x00\x01" * 1000, "x" * 100_000]
        for message in messages:
            ws.send(message)
            assert ws.recv(timeout=TIMEOUT) == message
    balanced.wait_count(2)


def test_large_bodies_stream_through_intact(balanced: Balanced) -> None:
    """A download with Content-Length and a chunked upload, each through nginx and a mitmdump,
    byte for byte; the upload arrives chunked, as sent (nginx passes it on as it comes, with
    proxy_request_buffering off, rather than spooling it whole and sending a length)."""
    with httpx.Client(timeout=TRANSFER_TIMEOUT) as client:
        with client.stream("GET", f"{balanced.url}/download?size={DOWNLOAD}") as r:
            assert r.headers["content-length"] == str(DOWNLOAD)
            assert check_pattern_download(r, DOWNLOAD) == DOWNLOAD
        digest = hashlib.sha256()
        r = client.post(
            f"{balanced.url}/upload", content=numbered_chunks(UPLOAD // MiB, MiB, digest)
        )
    got = echo(r)
    assert (got["body_len"], got["body_sha256"]) == (UPLOAD, digest.hexdigest())
    sent = {k.lower(): v for k, v in got["headers"]}  # type: ignore[attr-defined]
    assert sent.get("transfer-encoding") == "chunked", sent
    balanced.wait_count(2)


def load_through(balanced: Balanced) -> Load:
    return Load(balanced.url, CONCURRENCY, max_requests=LOAD_REQUESTS, max_seconds=LOAD_SECONDS)


def test_drained_then_stopped_process_leaves_the_count_exact(balanced: Balanced) -> None:
    """The way to stop one process: mark it `down` in the config, reload nginx (returns once
    nginx's old workers have finished what they had in flight), then SIGTERM it. Nothing
    reaches it after the reload, so it writes everything it counted before it exits."""
    first, second = balanced.proxies
    with load_through(balanced) as load:
        load.wait_for_more(BEFORE_STOP)
        balanced.nginx.reconfigure(down=[first.port])
        served_before = requests_total(first)
        assert first.stop() == 0
        load.wait_for_more(AFTER_STOP)
    results = load.results
    print(
        f"\ndrained stop: {results.ok} answered, the stopped process took {served_before}, "
        f"{len(results.failed)} closed by nginx's reload"
    )
    assert set(results.failed) <= {RELOAD_CLOSED}, results.failed[:5]
    assert len(results.failed) <= CONCURRENCY, results.failed  # one per client connection
    assert served_before > 0
    assert not UNWRITTEN.search(first.output()), first.output()[-2000:]
    balanced.proxies = [second]
    balanced.wait_count(results.ok)


def test_sigterm_without_drain_answers_all_and_counts_exactly(balanced: Balanced) -> None:
    """A process SIGTERMed under load, nginx not told. mitmproxy goes on serving while the
    addon shuts down, so the addon refuses new requests unread from then on (nginx resends
    them to the other process: proxy_next_upstream), lets those in flight end, and only then
    writes its last counts. Every GET is answered and the shared count is exact: nothing
    answered after the last write, nothing cut short and resent to be counted twice.
    (Before this drain, the count came out one or two off either way.)"""
    first, second = balanced.proxies
    with load_through(balanced) as load:
        load.wait_for_more(BEFORE_STOP)
        assert first.stop() == 0
        load.wait_for_more(AFTER_STOP)
    results = load.results
    assert results.failed == [], results.failed[:5]
    resent = sum(
        1
        for line in balanced.nginx.output().splitlines()
        if CUT_BEFORE_ANSWER in line and f'upstream: "http://127.0.0.1:{first.port}/' in line
    )
    balanced.proxies = [second]
    count = counter_of(second.url, timeout=TIMEOUT)
    print(
        f"\nSIGTERM without a drain: {results.ok} answered, shared count {count}; nginx resent "
        f"{resent} that the stopping process refused"
    )
    assert UNWRITTEN.findall(first.output()) == [], first.output()
    assert count == results.ok
    assert counter_of(balanced.url, timeout=TIMEOUT) == count
