"""In-process flows for the addons under mitmproxy's taddons, and their hooks called as
mitmproxy calls them."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from counting_addon import CountingProxy, Endpoints

REVERSE = "reverse:http://127.0.0.1:1"


def flow(
    path: str = "/path",
    method: str = "GET",
    mode: str = REVERSE,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    http_version: str = "HTTP/1.1",
) -> http.HTTPFlow:
    f = tflow.tflow(
        req=tutils.treq(
            path=path.encode(),
            method=method.encode(),
            headers=http.Headers(headers),
            http_version=http_version.encode(),
        )
    )
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    return f


async def request_hook(endpoints: Endpoints, f: http.HTTPFlow) -> None:
    """As mitmproxy calls it: awaiting what it returns, if anything."""
    if (answer := endpoints.request(f)) is not None:
        await answer


def all_hooks(proxy: CountingProxy, f: http.HTTPFlow) -> None:
    proxy.requestheaders(f)
