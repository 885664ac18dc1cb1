"""End to end with mitmweb: flows, marks and bodies as its web API shows them.

Bodies with a declared length up to counter_stream_threshold are buffered, so mitmweb has
them; streamed bodies are not kept unless store_streamed_bodies is set.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from mitmproxy.utils.emoji import emoji

from tests.support.http_client import counter_of
from tests.support.mitmweb import Web, start_web
from tests.support.processes import ProxyFactory, wait_for
from tests.support.upstream import PATTERN

KiB = 1024
MiB = 1024 * KiB


def pattern(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


@pytest.fixture
def web(start_proxy: ProxyFactory, upstream: str, redis_url: str) -> Iterator[Web]:
    with start_web(start_proxy, upstream, redis_url) as w:
        yield w


def test_proxied_and_status_flows_show_in_mitmweb(web: Web) -> None:
    proxy = web.proxy
    r = httpx.get(f"{proxy.url}/download?size=300", timeout=10)
    assert r.status_code == 200 and r.content == pattern(300)
    # The query string is ignored by /status; it makes this flow ours, not a readiness probe's.
    s = httpx.get(f"{proxy.url}/status?mine=1", timeout=10)
    assert s.status_code == 200
    assert s.json()["counter"] == 1

    proxied = web.finished_flow("/download?size=300")
    status = web.finished_flow("/status?mine=1")

    # The proxied flow: forwarded to the upstream, not marked, its small body buffered.
    assert proxied["response"]["status_code"] == 200
    assert proxied["marked"] == ""
    assert proxied["comment"] == ""
    assert proxied["response"]["contentLength"] == 300
    assert proxied["response"]["contentHash"] == hashlib.sha256(pattern(300)).hexdigest()
    assert web.content(proxied, "response") == pattern(300)
    assert proxied["server_conn"]["peername"] is not None

    # The status flow: answered by the addon itself, marked and commented as such.
    assert status["response"]["status_code"] == 200
    assert status["marked"] == emoji[":bar_chart:"]
    assert status["comment"] == "answered by counting_addon"
    body = json.loads(web.content(status, "response"))
    assert body["counter"] == 1
    assert isinstance(body["uptime"], int)
    # Never forwarded: no connection to the upstream was opened for it.
    assert status["server_conn"]["peername"] is None
    # /metrics is marked and answered the same way.
    assert httpx.get(f"{proxy.url}/metrics?mine=1", timeout=10).status_code == 200
    metrics = web.finished_flow("/metrics?mine=1")
    assert metrics["marked"] == emoji[":bar_chart:"]
    assert metrics["comment"] == "answered by counting_addon"
    assert metrics["server_conn"]["peername"] is None
    # So are the proxy's readiness probes, and only the endpoints' flows are marked.
    for flow in web.flows():
        is_endpoint = flow["request"]["path"].partition("?")[0] in ("/status", "/metrics")
        assert (flow["marked"] != "") == is_endpoint, flow


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes | None = None  # the request body, if any
    chunked_upload: bool = False
    chunked_download: bool = False


def cases(threshold: int) -> list[Case]:
    """Requests with request and response bodies at and around `threshold`."""
    out: list[Case] = []
    for n in sorted({0, 1, threshold, threshold + 1}):
        body = random.Random(n).randbytes(n)
        out += [
            Case("GET", f"/download?size={n}"),
            Case("GET", f"/download?size={n}&chunked=1", chunked_download=True),
            Case("PUT", f"/upload/{n}", body),
            Case("PUT", f"/upload/{n}?chunked", body, chunked_upload=True),
        ]
    return out


@pytest.mark.parametrize("threshold", ["0", "1k", "default"])
def test_bodies_up_to_threshold_are_buffered_larger_ones_streamed(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, threshold: str
) -> None:
    """Declared length <= threshold: buffered, so mitmweb has the body. Larger, or of unknown
    length (chunked): streamed, so mitmweb has none (store_streamed_bodies is off).
    """
    args = () if threshold == "default" else ("--set", f"counter_stream_threshold={threshold}")
    limit = {"0": 0, "1k": KiB, "default": MiB}[threshold]
    with start_web(start_proxy, upstream, redis_url, *args) as web:
        with httpx.Client(base_url=web.proxy.url, timeout=30) as client:
            for case in cases(limit):
                if case.body is None:
                    r = client.request(case.method, case.path)
                elif case.chunked_upload:
                    r = client.request(case.method, case.path, content=iter([case.body]))
                else:
                    r = client.request(case.method, case.path, content=case.body)
                assert r.status_code == 200, r.text
                sent = case.body or b""
                if case.body is not None:
                    assert r.json()["body_sha256"] == hashlib.sha256(sent).hexdigest()
                else:
                    assert r.content == pattern(len(r.content))

                flow = web.finished_flow(case.path)
                what = f"{case.method} {case.path} with threshold {threshold}"
                request, response = flow["request"], flow["response"]
                if not case.chunked_upload and len(sent) <= limit:
                    assert request["contentLength"] == len(sent), f"request body of {what}"
                    assert web.content(flow, "request") == sent
                else:
                    assert request["contentLength"] is None, f"request of {what} was buffered"
                if not case.chunked_download and len(r.content) <= limit:
                    assert response["contentLength"] == len(r.content), f"response of {what}"
                    assert web.content(flow, "response") == r.content
                else:
                    assert response["contentLength"] is None, f"response of {what} was buffered"


def test_streamed_bodies_are_kept_with_store_streamed_bodies(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    size = 200 * KiB
    upload = random.Random(7).randbytes(size)
    with start_web(
        start_proxy,
        upstream,
        redis_url,
        "--set",
        "store_streamed_bodies=true",
        "--set",
        "counter_stream_threshold=0",
    ) as web:
        proxy = web.proxy
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            d = client.get(f"/download?size={size}")
            c = client.get(f"/download?size={size}&chunked=1")
            u = client.post("/upload", content=iter([upload[:1000], upload[1000:]]))
        assert d.content == c.content == pattern(size)
        assert u.json()["body_sha256"] == hashlib.sha256(upload).hexdigest()

        for path in (f"/download?size={size}", f"/download?size={size}&chunked=1"):
            flow = web.finished_flow(path)
            assert flow["response"]["contentLength"] == size
            assert web.content(flow, "response") == pattern(size)
        flow = web.finished_flow("/upload")
        assert flow["request"]["contentLength"] == size
        assert web.content(flow, "request") == upload
        # The mitmproxy log says these were streamed, not buffered.
        assert proxy.output().count("Streaming response from") >= 3
        assert "Streaming request to" in proxy.output()


def test_counter_commands_through_mitmwebs_command_api(web: Web, redis_client: redis.Redis) -> None:
    """counter.get answers what the latest write brought back, counter.flush writes at once,
    counter.reset zeroes the shared counts: as mitmweb's command bar calls them."""
    proxy = web.proxy
    # Nothing written yet: the value the readiness polls of /status read (one read path).
    assert web.command("counter.get") == 0
    for code in (200, 404, 200):
        assert httpx.get(f"{proxy.url}/code/{code}", timeout=10).status_code == code
    assert web.command("counter.flush") is None
    wait_for(lambda: web.command("counter.get") == 3, 15, "counter.get == 3")
    wait_for(
        lambda: redis_client.hgetall("{counter}:responses") == {b"2xx": b"2", b"4xx": b"1"},
        15,
        "the classes in Redis",
    )
    assert web.command("counter.reset") is None
    wait_for(lambda: redis_client.get("counter") == b"0", 15, "the counter reset to 0")
    assert redis_client.exists("{counter}:responses") == 0
    # The reset's reply reaches the proxy a moment after Redis applied it.
    wait_for(lambda: web.command("counter.get") == 0, 15, "counter.get == 0 after the reset")
    assert httpx.get(f"{proxy.url}/after", timeout=10).status_code == 200
    assert counter_of(proxy.url) == 1
    assert redis_client.hgetall("{counter}:responses") == {b"2xx": b"1"}
