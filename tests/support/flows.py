"""In-process flows for the addons under mitmproxy's taddons, and their hooks called as
mitmproxy calls them."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.addons.disable_h2c import DisableH2C
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


async def all_hooks(proxy: CountingProxy, f: http.HTTPFlow) -> http.Response | None:
    """`f` from its headers to its end, through every hook, as mitmproxy's HTTP layer calls
    them (mitmproxy/proxy/layers/http): requestheaders; request, awaiting what it returns;
    then responseheaders and response, with the proxy's own answer or, for a flow it
    proxies, the upstream's (`tutils.tresp()`'s 200). A flow with an error after a hook
    (refused, killed) gets the error hook instead, and no more.

    Returns the proxy's own answer: None for a flow it proxied (or refused).

    The request hook runs mitmproxy's DisableH2C first, as mitmproxy does (a default addon,
    before the script's): it kills the cleartext HTTP/2 preface.
    """
    proxy.requestheaders(f)
    if ended_by_error(proxy, f):
        return None
    DisableH2C().request(f)
    if (pending := proxy.request(f)) is not None:
        await pending
    if ended_by_error(proxy, f):
        return None
    answer = f.response
    if answer is None:
        f.response = tutils.tresp()
    proxy.responseheaders(f)
    if not ended_by_error(proxy, f):
        proxy.response(f)
    return answer


def ended_by_error(proxy: CountingProxy, f: http.HTTPFlow) -> bool:
    """mitmproxy's check after each hook: a flow with an error (killed by an addon, or
    refused by mitmproxy before the first hook) gets the error hook, and no more."""
    if f.error is None:
        return False
    proxy.error(f)
    return True


def requestheaders_only(proxy: CountingProxy, f: http.HTTPFlow) -> None:
    """`f`'s first hook alone: a proxied flow is counted and stays in flight
    (traffic/in_flight.py) until the test calls its response or error hook itself."""
    proxy.requestheaders(f)
