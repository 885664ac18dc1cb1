"""End to end: large bodies stream through the proxy intact, with flat memory.

Bodies with a declared length up to `counter_stream_threshold` are buffered, all others are
streamed; either way they must arrive byte for byte.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.support.bodies import MiB, check_pattern_download, echo, numbered_chunks, report
from tests.support.http_client import counter_of
from tests.support.processes import Proxy, ProxyFactory
from tests.support.procfs import RssSampler
from tests.support.upstream import PATTERN

KiB = 1024
BIG = 256 * MiB
# Chunked transfers are checked the same way; a smaller size keeps the file quick.
CHUNKED_DOWNLOAD = 64 * MiB
TRANSFER_TIMEOUT = httpx.Timeout(60.0)
SMALL_SIZES = [0, 1, 1023, 1024, 1025, 100 * KiB]


def warm_up(client: httpx.Client, proxy: Proxy) -> None:
    """One small streamed exchange each way first, so the baseline includes lazy set-up."""
    r = client.post(f"{proxy.url}/warmup", content=iter([b"x" * 100]))
    assert echo(r)["body_len"] == 100
    with client.stream("GET", f"{proxy.url}/download?size={2 * MiB}&chunked=1") as r:
        assert check_pattern_download(r, 2 * MiB) == 2 * MiB


@pytest.mark.parametrize(
    ("size", "chunked"),
    [(BIG, False), (CHUNKED_DOWNLOAD, True)],
    ids=["content-length-256MiB", "chunked-64MiB"],
)
def test_large_download_streams_intact_with_flat_memory(
    proxy: Proxy, size: int, chunked: bool
) -> None:
    with httpx.Client(timeout=TRANSFER_TIMEOUT) as client:
        warm_up(client, proxy)
        query = f"size={size}" + ("&chunked=1" if chunked else "")
        with RssSampler(proxy.pid) as sampler:
            start = time.monotonic()
            with client.stream("GET", f"{proxy.url}/download?{query}") as r:
                if chunked:
                    assert r.headers.get("transfer-encoding") == "chunked"
                    assert "content-length" not in r.headers
                else:
                    assert r.headers["content-length"] == str(size)
                received = check_pattern_download(r, size)
            seconds = time.monotonic() - start
    assert received == size
    report(f"download ({'chunked' if chunked else 'Content-Length'})", size, seconds, sampler)
    sampler.check(f"a {size / MiB:.0f} MiB download")
    # Streaming doesn't get in the way of counting: warm-up (2) + the download.
    assert counter_of(proxy.url, timeout=5) == 3


@pytest.mark.parametrize(
    ("size", "chunked"),
    [(BIG, True), (CHUNKED_DOWNLOAD, False)],
    ids=["chunked-256MiB", "content-length-64MiB"],
)
def test_large_upload_streams_intact_with_flat_memory(
    proxy: Proxy, size: int, chunked: bool
) -> None:
    piece = MiB
    assert size % piece == 0
    digest = hashlib.sha256()
    headers = {} if chunked else {"Content-Length": str(size)}
    with httpx.Client(timeout=TRANSFER_TIMEOUT) as client:
        warm_up(client, proxy)
        with RssSampler(proxy.pid) as sampler:
            start = time.monotonic()
            r = client.post(
                f"{proxy.url}/upload",
                content=numbered_chunks(size // piece, piece, digest),
                headers=headers,
            )
            seconds = time.monotonic() - start
    got = echo(r)
    sent_headers = {k.lower(): v for k, v in got["headers"]}  # type: ignore[attr-defined]
    if chunked:
        assert sent_headers.get("transfer-encoding") == "chunked"
    else:
        assert sent_headers.get("content-length") == str(size)
    assert got["body_len"] == size
    assert got["body_sha256"] == digest.hexdigest()
    report(f"upload ({'chunked' if chunked else 'Content-Length'})", size, seconds, sampler)
    sampler.check(f"a {size / MiB:.0f} MiB upload")
    assert counter_of(proxy.url, timeout=5) == 3


def check_small_bodies(proxy: Proxy) -> None:
    """Bodies around the threshold, both ways, declared and chunked, come through intact."""
    with httpx.Client(timeout=10) as client:
        for size in SMALL_SIZES:
            body = random.Random(size).randbytes(size)
            sha = hashlib.sha256(body).hexdigest()
            # Upload with Content-Length.
            got = echo(client.put(f"{proxy.url}/up/{size}", content=body))
            assert (got["body_len"], got["body_sha256"]) == (size, sha), f"upload of {size}"
            # Upload chunked (unknown length: always streamed).
            got = echo(client.put(f"{proxy.url}/up/{size}", content=iter([body[:7], body[7:]])))
            assert (got["body_len"], got["body_sha256"]) == (size, sha), f"chunked upload {size}"
            for chunked in (False, True):
                query = f"size={size}" + ("&chunked=1" if chunked else "")
                r = client.get(f"{proxy.url}/download?{query}")
                assert r.status_code == 200
                expected = (PATTERN * (size // len(PATTERN) + 1))[:size]
                assert r.content == expected, f"download of {size}, chunked={chunked}"
                if not chunked:
                    assert r.headers["content-length"] == str(size)


@pytest.mark.parametrize("threshold", ["0", "1k", "1m"])
def test_bodies_around_threshold_pass_intact(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, threshold: str
) -> None:
    proxy = start_proxy(upstream, redis_url, "--set", f"counter_stream_threshold={threshold}")
    check_small_bodies(proxy)
    # 6 sizes x (2 uploads + 2 downloads), all counted.
    assert counter_of(proxy.url, timeout=5) == len(SMALL_SIZES) * 4


def test_stream_large_bodies_and_zero_threshold_together(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """mitmproxy's own stream_large_bodies and ours at once: bodies still pass intact."""
    proxy = start_proxy(
        upstream,
        redis_url,
        "--set",
        "counter_stream_threshold=0",
        "--set",
        "stream_large_bodies=1",
    )
    check_small_bodies(proxy)
    assert counter_of(proxy.url, timeout=5) == len(SMALL_SIZES) * 4


def test_status_with_body_is_never_forwarded_under_stream_large_bodies(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """A /status request whose body exceeds stream_large_bodies (but not the 64 KiB status
    body limit) must be answered by the proxy or refused, never streamed to the upstream.
    """
    proxy = start_proxy(upstream, redis_url, "--set", "stream_large_bodies=1k")
    body_size = 2 * KiB
    try:
        r = httpx.request("GET", f"{proxy.url}/status", content=b"x" * body_size, timeout=5)
    except httpx.HTTPError:
        return  # refused by closing the connection: acceptable, nothing was forwarded
    body = r.json()
    assert "body_len" not in body, (
        f"/status with a {body_size}-byte body was forwarded to the upstream, which answered "
        f"{r.status_code} {body}"
    )
    assert r.status_code == 200
    assert body["counter"] == 0


@pytest.mark.parametrize("value", ["-1", "lots", "1x"])
def test_invalid_threshold_is_refused(
    tmp_path: Path, upstream: str, redis_url: str, value: str
) -> None:
    """An invalid threshold stops mitmdump at start-up with a message naming the option."""
    proxy = Proxy(tmp_path / "p", upstream, redis_url, "--set", f"counter_stream_threshold={value}")
    try:
        proxy.popen.wait(30)
    finally:
        proxy.stop()
    assert proxy.popen.returncode != 0
    assert "counter_stream_threshold" in proxy.output()
