"""HTTP/2 request bodies of unknown length, framed for HTTP/1.1 upstreams.

In HTTP/2 (and 3) a body of unknown length carries neither Content-Length nor
Transfer-Encoding: frames delimit it. mitmproxy 12 passes such an HTTP/2 request on to an
HTTP/1.1 upstream with neither header, so the upstream reads no body, answers, and the client
gets a 2xx with its data lost. Bound for an HTTP/1.1 upstream, such a request gets
`Transfer-Encoding: chunked` (mitmproxy then chunk-encodes the body); bound for an HTTP/2
upstream, it is left alone, as Transfer-Encoding is forbidden there. (mitmproxy forwards
HTTP/3 over HTTP/3 only.)

An addon can't tell in requestheaders whether a body follows, nor which protocol a connection
not yet made will speak. So:
- where the upstream's protocol is known (plain http://, or a connection this client already
  made to that upstream), the header is added at once;
- otherwise the request waits for `tls_established_server`, which mitmproxy calls after the
  handshake and before it sends the request's head;
- a request that turns out to have no body is buffered, and its `request` hook comes before
  anything is sent upstream: the header comes off again and the request goes up untouched.
"""

from __future__ import annotations

from mitmproxy import connection, http, tls

from counting_addon.traffic.body_length import Head, request_head

# Set on the flows that got the header from us, for the `request` hook to take it off again.
CHUNKED_BY_US = "counting_addon.chunked"
HTTP1 = (b"http/1.1", b"http/1.0", b"", None)

Upstream = tuple[str, tuple[str, int]]  # the client connection's id, the upstream's address


class UpstreamProtocols:
    """Which upstreams speak HTTP/1, per client connection, and which requests wait to know.

    Per client connection because mitmproxy offers an upstream the protocols its client
    offered: an HTTP/1.1-only client's connection says nothing about an HTTP/2 client's.
    """

    def __init__(self) -> None:
        self._http1: dict[Upstream, bool] = {}
        self._waiting: dict[Upstream, list[http.HTTPFlow]] = {}

    def http1(self, upstream: Upstream) -> bool | None:
        """Whether `upstream` speaks HTTP/1; None while no connection to it is made."""
        return self._http1.get(upstream)

    def wait(self, upstream: Upstream, flow: http.HTTPFlow) -> None:
        self._waiting.setdefault(upstream, []).append(flow)

    def settle(self, upstream: Upstream, http1: bool) -> list[http.HTTPFlow]:
        """Note what `upstream` speaks; the requests that waited to know."""
        self._http1[upstream] = http1
        return self._waiting.pop(upstream, [])

    def forget_flow(self, upstream: Upstream, flow: http.HTTPFlow) -> None:
        waiting = self._waiting.get(upstream, [])
        if flow in waiting:
            waiting.remove(flow)
            if not waiting:
                del self._waiting[upstream]

    def forget_client(self, client_id: str) -> None:
        for table in (self._http1, self._waiting):
            for upstream in [u for u in table if u[0] == client_id]:
                del table[upstream]


def upstream_of(flow: http.HTTPFlow) -> Upstream:
    return flow.client_conn.id, (flow.request.host, flow.request.port)


def chunk(flow: http.HTTPFlow) -> None:
    flow.request.headers["transfer-encoding"] = "chunked"
    flow.metadata[CHUNKED_BY_US] = True


class FrameUnknownLengthBodies:
    """Frames HTTP/2 request bodies of unknown length for HTTP/1.1 upstreams; sees proxied
    flows only (proxy.py)."""

    def __init__(self) -> None:
        self.protocols = UpstreamProtocols()

    def requestheaders(self, flow: http.HTTPFlow, head: Head | None = None) -> None:
        """`head`: the request's, if already read (proxy.py)."""
        if not (request_head(flow.request) if head is None else head).unknown:
            return
        # HTTP/3 is only ever forwarded over HTTP/3, where frames delimit the body.
        if flow.request.is_http3:
            return
        if flow.request.scheme == "http":  # mitmproxy speaks no cleartext HTTP/2 upstream
            chunk(flow)
            return
        upstream = upstream_of(flow)
        http1 = self.protocols.http1(upstream)
        if http1 is None:
            self.protocols.wait(upstream, flow)
        elif http1:
            chunk(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if not flow.request.is_http2:
            return
        # Buffered (bodiless), nothing is sent yet; streamed, the head is long sent: either way
        # nothing is left to settle.
        self.protocols.forget_flow(upstream_of(flow), flow)
        if flow.request.raw_content == b"" and flow.metadata.pop(CHUNKED_BY_US, False):
            # Bodiless after all: it goes upstream as it came.
            del flow.request.headers["transfer-encoding"]

    def tls_established_server(self, data: tls.TlsData) -> None:
        server = data.conn
        assert isinstance(server, connection.Server) and server.address
        upstream = (data.context.client.id, (server.address[0], server.address[1]))
        http1 = server.alpn in HTTP1
        for flow in self.protocols.settle(upstream, http1):
            if http1:
                chunk(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.protocols.forget_flow(upstream_of(flow), flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self.protocols.forget_client(client.id)
