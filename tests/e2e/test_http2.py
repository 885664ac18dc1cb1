"""End to end over HTTP/2: a real h2 client (httpx offering h2 alone, h2load) through mitmdump
over TLS, to the tests' HTTP/1.1 upstream.

Bodies of unknown length (in HTTP/2 they carry neither Content-Length nor Transfer-Encoding)
stream through intact both ways with flat memory, chunk-encoded toward an HTTP/1.1 upstream and
left alone toward an HTTP/2 one; requests without a body go upstream untouched; /status follows
the same rules as over HTTP/1.1; multiplexed streams are counted exactly; cleartext HTTP/2,
which mitmproxy refuses, is not counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import time

import h2.events
import httpx
import pytest
import redis

from tests.support.bodies import MiB, check_pattern_download, echo, numbered_chunks, report
from tests.support.http2 import h2_client, h2_options, h2c_prior_knowledge
from tests.support.http_client import counter_of
from tests.support.processes import Proxy, ProxyFactory
from tests.support.procfs import RssSampler
from tests.support.tls import Certificates

BIG = 256 * MiB
TRANSFER_TIMEOUT = httpx.Timeout(60.0)
# Toward an HTTP/1.1 upstream, mitmproxy opens a connection upstream for every HTTP/2 stream:
# about 50 streams a second here, bare mitmdump alike.
STREAMS = 1000
CONNECTIONS = 4
STREAMS_AT_ONCE = 50  # per connection


def sent_headers(got: dict[str, object]) -> dict[str, str]:
    """The request headers the upstream received, names lowercased."""
    headers = got["headers"]
    assert isinstance(headers, list)
    return {name.lower(): value for name, value in headers}


def upload(client: httpx.Client, path: str, size: int) -> tuple[dict[str, object], str]:
    """POST `size` bytes of unknown length; the upstream's echo and the sha256 sent."""
    digest = hashlib.sha256()
    r = client.post(path, content=numbered_chunks(size // MiB, MiB, digest))
    assert r.http_version == "HTTP/2", r.http_version
    return echo(r), digest.hexdigest()


def test_upload_of_unknown_length_arrives_intact_with_flat_memory(proxy: Proxy) -> None:
    with h2_client(proxy, timeout=TRANSFER_TIMEOUT) as client:
        upload(client, "/warm-up", MiB)
        with RssSampler(proxy.pid) as sampler:
            start = time.monotonic()
            got, sha = upload(client, "/upload", BIG)
            seconds = time.monotonic() - start
    assert (got["body_len"], got["body_sha256"]) == (BIG, sha)
    # Chunk-encoded toward the HTTP/1.1 upstream: without it, the upstream reads no body.
    assert sent_headers(got).get("transfer-encoding") == "chunked"
    report("HTTP/2 upload of unknown length", BIG, seconds, sampler)
    sampler.check(f"a {BIG / MiB:.0f} MiB HTTP/2 upload")
    assert counter_of(proxy.url) == 2


def test_download_of_unknown_length_arrives_intact_with_flat_memory(proxy: Proxy) -> None:
    with h2_client(proxy, timeout=TRANSFER_TIMEOUT) as client:
        with client.stream("GET", f"/download?size={MiB}&chunked=1") as r:
            assert check_pattern_download(r, MiB) == MiB
        with RssSampler(proxy.pid) as sampler:
            start = time.monotonic()
            with client.stream("GET", f"/download?size={BIG}&chunked=1") as r:
                assert r.http_version == "HTTP/2"
                assert "content-length" not in r.headers
                received = check_pattern_download(r, BIG)
            seconds = time.monotonic() - start
    assert received == BIG
    report("HTTP/2 download of unknown length", BIG, seconds, sampler)
    sampler.check(f"a {BIG / MiB:.0f} MiB HTTP/2 download")
    assert counter_of(proxy.url) == 2


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS", "POST"])
def test_requests_without_a_body_go_upstream_untouched(proxy: Proxy, method: str) -> None:
    """No Transfer-Encoding added where no body came, and a declared length kept as it is."""
    with h2_client(proxy, timeout=10) as client:
        r = client.request(method, "/bodiless")
        assert r.http_version == "HTTP/2"
        got = echo(r)
        assert got["body_len"] == 0
        assert "transfer-encoding" not in sent_headers(got), got
        # As the client sent it: httpx declares a POST's empty body, the rest have none.
        assert sent_headers(got).get("content-length") == r.request.headers.get("content-length")
        declared = client.request(method, "/declared", content=b"x" * 1000)
        got = echo(declared)
        assert got["body_len"] == 1000
        assert sent_headers(got).get("content-length") == "1000", got
        assert "transfer-encoding" not in sent_headers(got), got
    assert counter_of(proxy.url) == 2


def test_status_rules_hold_over_http2(proxy: Proxy, redis_client: redis.Redis) -> None:
    with h2_client(proxy, timeout=10) as client:
        assert client.get("/counted").status_code == 200
        r = client.get("/status?verbose=1")
        assert (r.http_version, r.status_code) == ("HTTP/2", 200)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        assert r.json()["counter"] == 1
        head = client.head("/status")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        refused = client.post("/status", content=b"{}")  # a declared length: read, then 405
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        lookalike = client.get("/status/")
        assert lookalike.status_code == 200 and echo(lookalike)["path"] == "/status/"
        assert client.get("/status").json()["counter"] == 2
    assert redis_client.get("counter") == b"2"


def test_status_with_a_body_of_unknown_length_is_refused_unread(proxy: Proxy) -> None:
    """Over HTTP/1.1 such a request is refused by closing the connection; over HTTP/2 the
    stream is reset at once: never answered, never buffered, not counted. (The client may go
    on sending until it notices: mitmproxy drops what comes for a reset stream.)"""
    size = 128 * MiB
    with h2_client(proxy, timeout=30) as client:
        assert client.get("/before").status_code == 200
        with RssSampler(proxy.pid) as sampler:
            try:
                r = client.post(
                    "/status", content=numbered_chunks(size // MiB, MiB, hashlib.sha256())
                )
            except httpx.HTTPError as e:
                print(f"\nrefused: {e!r}")
            else:
                raise AssertionError(f"answered {r.status_code}: {r.text[:200]}")
        sampler.check(f"a /status request with {size / MiB:.0f} MiB of unknown length")
        # The connection carries on.
        assert client.get("/status").json()["counter"] == 1
    assert "Traceback" not in proxy.output()


def test_cleartext_http2_is_refused_and_not_counted(proxy: Proxy) -> None:
    """HTTP/2 with prior knowledge over plain TCP, which mitmproxy doesn't support: it closes
    the connection, and the upstream never sees the request."""
    assert httpx.get(f"{proxy.url}/before", timeout=10).status_code == 200
    for i in range(3):
        events = h2c_prior_knowledge(proxy.port, f"/h2c/{i}")
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events), events
    assert counter_of(proxy.url) == 1
    assert proxy.output().count("prior knowledge are currently not supported") == 3


def test_multiplexed_streams_are_counted_exactly(proxy: Proxy) -> None:
    """STREAMS requests over CONNECTIONS connections, STREAMS_AT_ONCE in flight on each."""

    async def connection(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(**h2_options(proxy), timeout=60) as client:
            at_once = asyncio.Semaphore(STREAMS_AT_ONCE)

            async def get(i: int) -> httpx.Response:
                async with at_once:
                    return await client.get(f"/mux/{n}/{i}")

            return await asyncio.gather(*(get(i) for i in range(STREAMS // CONNECTIONS)))

    async def run() -> list[httpx.Response]:
        async with asyncio.timeout(120):
            results = await asyncio.gather(*(connection(n) for n in range(CONNECTIONS)))
        return [r for responses in results for r in responses]

    responses = asyncio.run(run())
    assert len(responses) == STREAMS
    assert {(r.status_code, r.http_version) for r in responses} == {(200, "HTTP/2")}
    assert counter_of(proxy.url) == STREAMS


@pytest.mark.skipif(
    shutil.which("h2load") is None,
    reason="h2load not found: apt-get install nghttp2-client (.ci/run does, as root)",
)
def test_h2load_streams_are_counted_exactly(proxy: Proxy) -> None:
    """nghttp2's load generator: STREAMS requests, CONNECTIONS connections, STREAMS_AT_ONCE
    streams each at a time."""
    command = [
        "h2load", "-n", str(STREAMS), "-c", str(CONNECTIONS), "-m", str(STREAMS_AT_ONCE),
        f"https://127.0.0.1:{proxy.port}/h2load",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None, out
    assert done.groups() == (str(STREAMS),) * 3, out
    assert f"status codes: {STREAMS} 2xx" in out and "Application protocol: h2" in out, out
    assert counter_of(proxy.url) == STREAMS


def test_https_http1_upstream_gets_the_body_chunked(
    start_proxy: ProxyFactory, https_upstream: str, redis_url: str, certs: Certificates
) -> None:
    """An https:// upstream: which protocol it speaks is known only once the first connection
    is made, after the request's headers arrived. This one speaks HTTP/1.1."""
    p = start_proxy(
        https_upstream, redis_url, "--set", f"ssl_verify_upstream_trusted_ca={certs.ca}"
    )
    with h2_client(p, timeout=TRANSFER_TIMEOUT) as client:
        for path in ("/first", "/second"):  # the first waits to know, the second knows
            got, sha = upload(client, path, 8 * MiB)
            assert (got["body_len"], got["body_sha256"]) == (8 * MiB, sha)
            assert sent_headers(got).get("transfer-encoding") == "chunked"
        got = echo(client.get("/bodiless"))
        assert "transfer-encoding" not in sent_headers(got)
    assert counter_of(p.url) == 3


def test_http2_upstream_gets_the_body_as_it_came(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """Two proxies in a row, the first speaking HTTP/2 to the second: no Transfer-Encoding
    (forbidden in HTTP/2) toward the second, which frames the body for the HTTP/1.1 upstream."""
    second = start_proxy(upstream, redis_url, "--set", "counter_key=second")
    first = start_proxy(
        f"https://127.0.0.1:{second.port}",
        redis_url,
        "--set", "counter_key=first",
        "--set", f"ssl_verify_upstream_trusted_ca={second.ca_cert}",
    )  # fmt: skip
    with h2_client(first, timeout=TRANSFER_TIMEOUT) as client:
        for path in ("/first", "/second"):
            got, sha = upload(client, path, 8 * MiB)
            assert (got["body_len"], got["body_sha256"]) == (8 * MiB, sha)
    assert re.search(r"POST \S+/first HTTP/2\.0", second.output()), second.output()[-2000:]
    assert counter_of(first.url) == 2
    assert counter_of(second.url) == 2
