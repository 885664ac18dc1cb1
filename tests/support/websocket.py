"""WebSocket clients through the proxy: websockets' sync client to the upstream's echo on /ws
(tests/support/upstream.py), over ws:// or wss:// (mitmproxy's own CA)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.sync.client import ClientConnection, connect

from tests.support.processes import Proxy

Message = str | bytes
# Bounds every wait on the proxy: generous for a busy 2-core machine, never reached when well.
TIMEOUT = 30.0


def ws_url(proxy: Proxy, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{proxy.port}/ws"


def mitmproxy_ca(proxy: Proxy) -> ssl.SSLContext:
    """A client context trusting only the CA mitmproxy made in the proxy's confdir."""
    return ssl.create_default_context(cafile=proxy.ca_cert)


@contextmanager
def websocket(proxy: Proxy, scheme: str = "ws") -> Iterator[ClientConnection]:
    """A WebSocket to the upstream's echo through `proxy`: no size limit, no keepalive pings,
    no queue limit (a test may send everything before reading), no proxy from the environment."""
    with connect(
        ws_url(proxy, scheme),
        ssl=mitmproxy_ca(proxy) if scheme == "wss" else None,
        proxy=None,
        max_size=None,
        max_queue=None,
        ping_interval=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as ws:
        yield ws


def echo(ws: ClientConnection, message: Message) -> None:
    ws.send(message)
    assert ws.recv(timeout=TIMEOUT) == message
