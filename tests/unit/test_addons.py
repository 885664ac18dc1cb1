"""The addons inside mitmproxy's test harness (taddons, tflow), counting into a real Redis."""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis
from mitmproxy import exceptions, hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.flow import Error
from mitmproxy.test import taddons, tutils

from counting_addon import CountingProxy, StreamBodies
from counting_addon.code_class import CodeClass, no_responses
from counting_addon.process import PROCESS
from tests.support.flows import REVERSE, all_hooks, flow, request_hook, requestheaders_only
from tests.support.http_client import STATUS_FIELDS
from tests.support.in_process import MakeProxy
from tests.support.processes import unreachable_redis_url


class TestOptions:
    def test_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("REDIS_URL", raising=False)
        with taddons.context(Proxyserver(), CountingProxy()) as tctx:
            assert tctx.options.counter_redis_url == "redis://localhost:6379/0"
            assert tctx.options.counter_key == "counter"
            assert tctx.options.counter_status_path == "/status"
            assert tctx.options.counter_stream_threshold == "1m"
            assert tctx.options.counter_websocket_history == "256k"
            assert tctx.options.counter_metrics_path == "/metrics"
            assert tctx.options.counter_allow_from == ""

    def test_redis_url_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6380/2")
        with taddons.context(Proxyserver(), CountingProxy()) as tctx:
            assert tctx.options.counter_redis_url == "redis://elsewhere:6380/2"

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("counter_redis_url", "http://localhost:6379"),
            ("counter_redis_url", "localhost:6379"),
            ("counter_redis_url", "redis://localhost:notaport/0"),
            ("counter_redis_url", "redis://localhost:6379/notadb"),
            # redis-py passes an argument it doesn't know on as text, and fails oddly with it.
            ("counter_redis_url", "redis://:pw@localhost:6379/0?retry=0"),
            ("counter_key", ""),
            ("counter_key", "bad\nkey"),
            ("counter_key", "a}b"),  # no key beside it could share its Cluster slot
            ("counter_status_path", "status"),
            ("counter_status_path", "/status?x=1"),
            ("counter_status_path", "/sta tus"),
            ("counter_status_path", ""),
            ("counter_stream_threshold", "lots"),
            ("counter_stream_threshold", "-1"),
            ("counter_stream_threshold", ""),
            ("counter_websocket_history", "lots"),
            ("counter_websocket_history", "-1"),
            ("counter_metrics_path", "metrics"),
            ("counter_metrics_path", "/metrics?x"),
            ("counter_metrics_path", " "),
            ("counter_metrics_path", "/status"),  # the status path's
            ("counter_status_path", "/metrics"),  # the metrics path's
            ("counter_allow_from", "10.0.0.256"),
            ("counter_allow_from", "10.0.0.1/8"),
            ("counter_allow_from", "127.0.0.1,,::1"),
            ("counter_allow_from", "localhost"),
        ],
    )
    def test_bad_values_name_the_option(self, option: str, value: str) -> None:
        proxy = CountingProxy()
        with taddons.context(Proxyserver(), proxy) as tctx:
            before = getattr(tctx.options, option)
            with pytest.raises(exceptions.OptionsError, match=f"^{option}: "):
                tctx.configure(proxy.status, **{option: value})
            assert getattr(tctx.options, option) == before  # rolled back

    def test_bad_value_while_the_script_loads_is_one_clean_line(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """mitmproxy would print the traceback of an error raised while it loads a script."""
        with taddons.context(Proxyserver()) as tctx:
            tctx.options.set("counter_key=", defer=True)  # --set, before the script adds it
            proxy = CountingProxy()
            tctx.master.addons.add(proxy)
            with caplog.at_level(logging.ERROR):
                # What mitmproxy's script loader does right after loading the script.
                tctx.master.addons.invoke_addon_sync(
                    proxy, hooks.ConfigureHook(set(tctx.options.keys()))
                )
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == [
            "counter_key: '' must be a non-empty printable string"
        ]
        assert errors[0].exc_info is None

    def test_password_never_in_the_error(self) -> None:
        proxy = CountingProxy()
        with taddons.context(Proxyserver(), proxy) as tctx:
            with pytest.raises(exceptions.OptionsError) as e:
                tctx.configure(proxy.counting, counter_redis_url="redis://:s3cret@h:port/0")
            assert "s3cret" not in str(e.value)
            assert "***" in str(e.value)

    def test_values_survive_a_script_reload(self) -> None:
        """A reload re-adds the options; mitmproxy keeps values only if nothing differs."""
        first = CountingProxy()
        with taddons.context(Proxyserver(), first) as tctx:
            tctx.options.update(
                counter_key="mine",
                counter_stream_threshold="5k",
                counter_metrics_path="",
                counter_allow_from="10.0.0.0/8",
            )
            tctx.master.addons.remove(first)
            tctx.master.addons.add(CountingProxy())
            assert tctx.options.counter_key == "mine"
            assert tctx.options.counter_stream_threshold == "5k"
            assert tctx.options.counter_metrics_path == ""
            assert tctx.options.counter_allow_from == "10.0.0.0/8"

    @pytest.mark.parametrize(("size", "expected"), [("0", 0), ("1k", 1024), ("65536", 65536)])
    def test_threshold_sizes(self, size: str, expected: int) -> None:
        proxy = CountingProxy()
        with taddons.context(Proxyserver(), proxy) as tctx:
            tctx.configure(proxy.streaming, counter_stream_threshold=size)
            assert proxy.streaming.threshold == expected

    def test_reverse_mode_connects_lazily(self) -> None:
        proxy = CountingProxy()
        with taddons.context(Proxyserver(), proxy) as tctx:
            tctx.configure(proxy.endpoints, mode=["regular"])
            assert tctx.options.connection_strategy == "eager"
            tctx.configure(proxy.endpoints, mode=[REVERSE])
            assert tctx.options.connection_strategy == "lazy"


class TestCounting:
    async def test_counts_proxied_requests_not_status(
        self, counting_proxy: MakeProxy, redis_client: redis.Redis
    ) -> None:
        running = counting_proxy()
        for path in ["/a", "/status", "/status?x", "/statusx", "/status/", "/b"]:
            await all_hooks(running.proxy, flow(path))
        counter = running.counter
        assert counter.ledger.counted == 4
        assert await counter.read() == 4
        await counter.close(1.0)
        assert redis_client.get("counter") == b"4"

    async def test_flows_mitmproxy_rejected_are_not_counted(
        self, counting_proxy: MakeProxy
    ) -> None:
        running = counting_proxy()
        f = flow()
        f.error = Error("Received an invalid request")  # as check_invalid() does
        await all_hooks(running.proxy, f)
        assert running.counter.ledger.counted == 0

    @pytest.mark.parametrize(
        ("method", "path", "http_version", "counted"),
        [
            # The preface of cleartext HTTP/2 with prior knowledge, which mitmproxy kills.
            ("PRI", "*", "HTTP/2.0", 0),
            ("PRI", "/x", "HTTP/1.1", 1),  # any method token is proxied, and counted
            ("GET", "*", "HTTP/2.0", 1),
        ],
    )
    async def test_cleartext_http2_preface_is_not_counted(
        self, counting_proxy: MakeProxy, method: str, path: str, http_version: str, counted: int
    ) -> None:
        running = counting_proxy()
        await all_hooks(running.proxy, flow(path, method=method, http_version=http_version))
        assert running.counter.ledger.counted == counted
        await running.proxy.counting.done()

    async def test_status_path_is_proxied_and_counted_outside_reverse_mode(
        self, counting_proxy: MakeProxy
    ) -> None:
        running = counting_proxy()
        assert await all_hooks(running.proxy, flow("/status", mode="regular")) is None
        assert running.counter.ledger.counted == 1

    async def test_done_writes_pending_counts(
        self, counting_proxy: MakeProxy, redis_client: redis.Redis
    ) -> None:
        proxy = counting_proxy().proxy
        for _ in range(3):
            await all_hooks(proxy, flow())
        await proxy.counting.done()
        assert redis_client.get("counter") == b"3"

    async def test_changing_the_key_writes_pending_counts_to_the_old_one(
        self, counting_proxy: MakeProxy, redis_client: redis.Redis
    ) -> None:
        running = counting_proxy()
        await all_hooks(running.proxy, flow())
        running.configure(counter_key="other")
        await all_hooks(running.proxy, flow())
        await running.proxy.counting.done()
        assert redis_client.mget("counter", "other") == [b"1", b"1"]


class TestResponses:
    async def test_each_counted_flow_adds_its_class_once_and_this_process_figures(
        self, counting_proxy: MakeProxy, redis_client: redis.Redis
    ) -> None:
        before = (
            PROCESS.stats.requests,
            dict(PROCESS.stats.responses),
            sum(PROCESS.stats.request_duration.counts),
        )
        running = counting_proxy()
        proxy = running.proxy
        ok, upstream_down, status, refused = flow(), flow(), flow("/status"), flow()
        refused.error = Error("Received an invalid request")  # as check_invalid() does
        for f in (ok, upstream_down, status, refused):
            requestheaders_only(proxy, f)
        ok.response = tutils.tresp(status_code=204)
        ok.response.timestamp_end = ok.request.timestamp_start + 0.02
        proxy.response(ok)
        upstream_down.error = Error("Connect call failed")
        proxy.error(upstream_down)
        await request_hook(proxy.endpoints, status)
        proxy.response(status)
        proxy.error(refused)
        shared = await running.counter.read_shared()
        await proxy.counting.done()
        assert shared.requests == 2
        assert shared.responses == no_responses() | {CodeClass.C2XX: 1, CodeClass.C5XX: 1}
        assert redis_client.hgetall("{counter}:responses") == {b"2xx": b"1", b"5xx": b"1"}
        assert PROCESS.stats.requests - before[0] == 2
        assert {c: PROCESS.stats.responses[c] - before[1][c] for c in CodeClass} == shared.responses
        assert sum(PROCESS.stats.request_duration.counts) - before[2] == 2


class TestStatus:
    async def answer(
        self, counting_proxy: MakeProxy, f: http.HTTPFlow, **options: str
    ) -> http.Response:
        proxy = counting_proxy(**options).proxy
        await all_hooks(proxy, f)
        await proxy.counting.done()
        assert f.response is not None
        return f.response

    async def test_get(self, counting_proxy: MakeProxy, redis_client: redis.Redis) -> None:
        redis_client.set("counter", 41)
        f = flow("/status?verbose=1")
        response = await self.answer(counting_proxy, f)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        body = json.loads(response.content or b"")
        assert body["counter"] == 41
        assert isinstance(body["uptime"], int) and body["uptime"] >= 0
        assert f.marked and f.comment  # visible as the proxy's own answer in mitmweb

    async def test_status_adds_the_windows_the_bytes_and_the_responses(
        self, counting_proxy: MakeProxy
    ) -> None:
        running = counting_proxy()
        for body in (b"", b"12345"):
            f = flow("/up", "POST")
            f.request.content = body
            f.request.timestamp_start = time.time()
            await all_hooks(running.proxy, f)  # tresp(): a 7-byte body, "message"
        status = flow("/status")
        await all_hooks(running.proxy, status)
        await running.proxy.counting.done()
        assert status.response is not None
        body = json.loads(status.response.content or b"")
        assert list(body) == list(STATUS_FIELDS)
        assert {k: v for k, v in body.items() if k != "uptime"} == {
            "counter": 2,
            "last_minute": 2,
            "last_hour": 2,
            "last_day": 2,
            "request_bytes": 5,
            "response_bytes": 14,
            "responses": {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 0},
        }

    async def test_other_methods(self, counting_proxy: MakeProxy) -> None:
        response = await self.answer(counting_proxy, flow("/status", method="POST"))
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"

    async def test_custom_path(self, counting_proxy: MakeProxy) -> None:
        f = flow("/health")
        response = await self.answer(counting_proxy, f, counter_status_path="/health")
        assert response.status_code == 200

    async def test_redis_unavailable(self, counting_proxy: MakeProxy) -> None:
        f = flow("/status")
        response = await self.answer(counting_proxy, f, counter_redis_url=unreachable_redis_url())
        assert response.status_code == 503
        body = json.loads(response.content or b"")
        assert set(body) == {"error", "uptime", "pending"}

    @pytest.mark.parametrize(
        ("headers", "stream_large_bodies"),
        [
            (((b"content-length", b"10000000"),), None),
            (((b"transfer-encoding", b"chunked"),), None),
            # mitmproxy would stream this one while reading it, and a streamed request
            # can't be answered.
            (((b"content-length", b"2048"),), "1k"),
        ],
    )
    async def test_large_or_unknown_body_is_refused_not_buffered(
        self,
        counting_proxy: MakeProxy,
        headers: tuple[tuple[bytes, bytes], ...],
        stream_large_bodies: str | None,
    ) -> None:
        proxy = counting_proxy(stream_large_bodies=stream_large_bodies).proxy
        f = flow("/status", method="POST", headers=headers)
        await all_hooks(proxy, f)
        assert f.error is not None and f.error.msg == Error.KILLED_MESSAGE

    @pytest.mark.parametrize(
        ("method", "http_version", "killed"),
        [
            # HTTP/2 and 3 without Content-Length: a body of unknown length may follow.
            ("POST", "HTTP/2.0", True),
            ("PUT", "HTTP/3", True),
            ("GET", "HTTP/2.0", False),
            ("HEAD", "HTTP/3", False),
            ("POST", "HTTP/1.1", False),  # no Content-Length in HTTP/1: no body; 405
        ],
    )
    async def test_unknown_length_over_http2_and_3(
        self, counting_proxy: MakeProxy, method: str, http_version: str, killed: bool
    ) -> None:
        proxy = counting_proxy().proxy
        f = flow("/status", method=method, http_version=http_version)
        await all_hooks(proxy, f)
        assert (f.error is not None) is killed
        assert not f.request.stream

    async def test_small_body_is_answered(self, counting_proxy: MakeProxy) -> None:
        f = flow("/status", headers=((b"content-length", b"1024"),))
        response = await self.answer(counting_proxy, f, stream_large_bodies="1k")
        assert response.status_code == 200


class TestStreaming:
    @pytest.mark.parametrize(
        ("threshold", "headers", "streamed", "http_version"),
        [
            ("1m", (), False, "HTTP/1.1"),
            ("1m", ((b"content-length", b"1048576"),), False, "HTTP/1.1"),
            ("1m", ((b"content-length", b"1048577"),), True, "HTTP/1.1"),
            ("1m", ((b"transfer-encoding", b"chunked"),), True, "HTTP/1.1"),
            ("0", ((b"content-length", b"1"),), True, "HTTP/1.1"),
            ("0", (), False, "HTTP/1.1"),
            # HTTP/2 and 3 without Content-Length: mitmproxy streams only if a body follows.
            ("1m", (), True, "HTTP/2.0"),
            ("1m", (), True, "HTTP/3"),
            ("1m", ((b"content-length", b"10"),), False, "HTTP/2.0"),
            ("1m", (), False, "HTTP/1.0"),
        ],
    )
    async def test_requests(
        self,
        threshold: str,
        headers: tuple[tuple[bytes, bytes], ...],
        streamed: bool,
        http_version: str,
    ) -> None:
        addon = StreamBodies()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, counter_stream_threshold=threshold)
            f = flow(headers=headers, http_version=http_version)
            addon.requestheaders(f)
            assert bool(f.request.stream) is streamed

    @pytest.mark.parametrize(
        ("method", "headers", "streamed"),
        [
            ("GET", ((b"content-length", b"10"),), False),
            ("GET", ((b"content-length", b"2000000"),), True),
            ("GET", (), True),  # no length: read until the connection closes
            ("GET", ((b"transfer-encoding", b"chunked"),), True),
            ("HEAD", ((b"content-length", b"2000000"),), False),
        ],
    )
    async def test_responses(
        self, method: str, headers: tuple[tuple[bytes, bytes], ...], streamed: bool
    ) -> None:
        addon = StreamBodies()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, counter_stream_threshold="1m")
            f = flow(method=method)
            f.response = tutils.tresp(headers=http.Headers(headers))
            addon.responseheaders(f)
            assert bool(f.response.stream) is streamed
