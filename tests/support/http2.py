"""Real HTTP/2 clients for the proxy: httpx over TLS offering h2 alone, and cleartext h2."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import h2.connection
import h2.events
import httpx

from tests.support.processes import Proxy


class H2Only(ssl.SSLContext):
    """Offers h2 alone in ALPN. httpx offers http/1.1 first whatever it is told, and
    mitmproxy takes the client's first choice: such a client would speak HTTP/1.1."""

    def set_alpn_protocols(self, protocols: Any) -> None:
        super().set_alpn_protocols(["h2"])


def h2_options(proxy: Proxy) -> dict[str, Any]:
    """httpx.Client's or AsyncClient's arguments for HTTP/2 over TLS to `proxy`."""
    context = H2Only(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(proxy.ca_cert)
    base_url = f"https://localhost:{proxy.port}"
    return {"base_url": base_url, "http1": False, "http2": True, "verify": context}


def h2_client(proxy: Proxy, **kwargs: Any) -> httpx.Client:
    return httpx.Client(**h2_options(proxy), **kwargs)


def h2c_prior_knowledge(port: int, path: str, timeout: float = 10.0) -> list[h2.events.Event]:
    """A GET over cleartext HTTP/2 with prior knowledge (what `curl --http2-prior-knowledge`
    sends); the events received until the server closes the connection or `timeout` passes."""
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", path)],
        end_stream=True,
    )
    received: list[h2.events.Event] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            try:
                received += conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                break  # mitmproxy answers in HTTP/1, which is not HTTP/2
    return received
