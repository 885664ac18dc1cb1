"""HTTP/2 bodies of unknown length framed for HTTP/1.1 upstreams, in process: the
bookkeeping alone, then the addon's hooks in the order mitmproxy calls them."""

from __future__ import annotations

import pytest
from mitmproxy import http, tls
from mitmproxy.options import Options
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow, tutils

from counting_addon.traffic.chunking import FrameUnknownLengthBodies, UpstreamProtocols

UPSTREAM = ("client-1", ("upstream.example", 443))


def h2_flow(scheme: str = "https", headers: tuple[tuple[bytes, bytes], ...] = ()) -> http.HTTPFlow:
    f = tflow.tflow(
        req=tutils.treq(
            scheme=scheme.encode(),
            host="upstream.example",
            port=443,
            http_version=b"HTTP/2.0",
            headers=http.Headers(headers),
            content=None,
        )
    )
    f.client_conn.id = "client-1"
    return f


def handshake(alpn: bytes | None, client_id: str = "client-1") -> tls.TlsData:
    """What tls_established_server gets for a connection to the upstream."""
    server = tflow.tserver_conn()
    server.address = ("upstream.example", 443)
    server.alpn = alpn
    client = tflow.tclient_conn()
    client.id = client_id
    # Options alone: a taddons.context() made here would leave its own event loop unclosed.
    return tls.TlsData(server, Context(client, Options()))


def chunked(f: http.HTTPFlow) -> bool:
    return f.request.headers.get("transfer-encoding") == "chunked"


class TestUpstreamProtocols:
    def test_unknown_until_settled_then_known(self) -> None:
        protocols = UpstreamProtocols()
        a, b = h2_flow(), h2_flow()
        assert protocols.http1(UPSTREAM) is None
        protocols.wait(UPSTREAM, a)
        protocols.wait(UPSTREAM, b)
        assert protocols.settle(UPSTREAM, http1=True) == [a, b]
        assert protocols.http1(UPSTREAM) is True
        assert protocols.settle(UPSTREAM, http1=True) == []  # each waiting flow settled once

    def test_a_forgotten_flow_is_not_settled(self) -> None:
        protocols = UpstreamProtocols()
        a, b = h2_flow(), h2_flow()
        protocols.wait(UPSTREAM, a)
        protocols.wait(UPSTREAM, b)
        protocols.forget_flow(UPSTREAM, a)
        protocols.forget_flow(UPSTREAM, a)  # twice: harmless
        assert protocols.settle(UPSTREAM, http1=False) == [b]

    def test_a_client_gone_takes_its_knowledge_along(self) -> None:
        protocols = UpstreamProtocols()
        other = ("client-2", UPSTREAM[1])
        protocols.settle(UPSTREAM, http1=True)
        protocols.settle(other, http1=False)
        protocols.wait(UPSTREAM, h2_flow())
        protocols.forget_client("client-1")
        assert protocols.http1(UPSTREAM) is None
        assert protocols.settle(UPSTREAM, http1=True) == []
        assert protocols.http1(other) is False


class TestFraming:
    def test_plain_http_upstream_is_http1_at_once(self) -> None:
        addon = FrameUnknownLengthBodies()
        f = h2_flow(scheme="http")
        addon.requestheaders(f)
        assert chunked(f)

    @pytest.mark.parametrize(
        ("alpn", "expected"),
        [(b"http/1.1", True), (None, True), (b"", True), (b"h2", False), (b"h3", False)],
    )
    def test_https_upstream_waits_for_the_handshake(
        self, alpn: bytes | None, expected: bool
    ) -> None:
        addon = FrameUnknownLengthBodies()
        first, later = h2_flow(), h2_flow()
        addon.requestheaders(first)
        assert not chunked(first)  # not known yet
        addon.tls_established_server(handshake(alpn))
        assert chunked(first) is expected
        addon.requestheaders(later)  # known now
        assert chunked(later) is expected

    def test_another_clients_handshake_settles_nothing(self) -> None:
        addon = FrameUnknownLengthBodies()
        f = h2_flow()
        addon.requestheaders(f)
        addon.tls_established_server(handshake(b"http/1.1", client_id="client-2"))
        assert not chunked(f)
        addon.tls_established_server(handshake(b"http/1.1"))
        assert chunked(f)

    def test_a_request_without_body_goes_up_untouched(self) -> None:
        """Buffered, as no body followed: its `request` hook comes before anything is sent."""
        addon = FrameUnknownLengthBodies()
        sent, waiting = h2_flow(scheme="http"), h2_flow()
        for f in (sent, waiting):
            addon.requestheaders(f)
            f.request.content = b""
            addon.request(f)
            assert not chunked(f)
        addon.tls_established_server(handshake(b"http/1.1"))
        assert not chunked(waiting)  # no longer waiting

    def test_a_streamed_body_keeps_its_framing(self) -> None:
        """Streamed: its `request` hook comes at the end, the head long sent."""
        addon = FrameUnknownLengthBodies()
        f = h2_flow(scheme="http")
        addon.requestheaders(f)
        f.request.stream = True
        addon.request(f)  # content None: not stored
        assert chunked(f)

    @pytest.mark.parametrize(
        ("http_version", "headers"),
        [
            (b"HTTP/1.1", ()),  # HTTP/1 says what follows itself
            (b"HTTP/2.0", ((b"content-length", b"5"),)),  # declared: mitmproxy passes it on
            (b"HTTP/3", ()),  # forwarded over HTTP/3 only
        ],
    )
    def test_left_alone(
        self, http_version: bytes, headers: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        addon = FrameUnknownLengthBodies()
        f = h2_flow(scheme="http", headers=headers)
        f.request.http_version = http_version.decode()
        addon.requestheaders(f)
        assert "transfer-encoding" not in f.request.headers

    def test_failed_flows_and_gone_clients_are_forgotten(self) -> None:
        addon = FrameUnknownLengthBodies()
        failed, other = h2_flow(), h2_flow()
        addon.requestheaders(failed)
        addon.requestheaders(other)
        addon.error(failed)
        addon.client_disconnected(other.client_conn)
        addon.tls_established_server(handshake(b"http/1.1"))
        assert not chunked(failed) and not chunked(other)
