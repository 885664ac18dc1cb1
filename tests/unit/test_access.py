"""counter_allow_from, in process: the parser, the client address, and the endpoints' 403."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from mitmproxy import connection
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.flow import Error
from mitmproxy.test import taddons

from counting_addon import CountingProxy
from counting_addon.clients import client_address
from counting_addon.endpoints.access import parse_allow_from
from tests.support.flows import all_hooks, flow, request_hook
from tests.support.in_process import MakeProxy
from tests.support.processes import unreachable_redis_url


@pytest.mark.parametrize(
    ("value", "networks"),
    [
        ("", []),
        ("   ", []),
        ("127.0.0.1", ["127.0.0.1/32"]),
        ("10.0.0.0/8", ["10.0.0.0/8"]),
        (" 127.0.0.1 , 10.0.0.0/8,::1,  2001:db8::/32 ", [
            "127.0.0.1/32", "10.0.0.0/8", "::1/128", "2001:db8::/32",
        ]),
        ("0.0.0.0/0", ["0.0.0.0/0"]),
        ("::/0", ["::/0"]),
    ],
)  # fmt: skip
def test_parse_allow_from(value: str, networks: list[str]) -> None:
    assert parse_allow_from(value) == tuple(map(ipaddress.ip_network, networks))


@pytest.mark.parametrize(
    "value",
    [
        "localhost",  # names are not resolved
        "10.0.0.256",
        "10.0.0.1/8",  # host bits set: which was meant?
        "10.0.0.0/33",
        "127.0.0.1,",
        ",127.0.0.1",
        "127.0.0.1,,::1",
        "127.0.0.1 ::1",  # entries are separated by commas
        "127.0.0.1;::1",
        "[::1]",
    ],
)
def test_parse_allow_from_refuses(value: str) -> None:
    with pytest.raises(ValueError, match=r"^'"):
        parse_allow_from(value)


@pytest.mark.parametrize(
    ("peername", "address"),
    [
        (("127.0.0.1", 5000), "127.0.0.1"),
        (("::1", 5000, 0, 0), "::1"),
        # A dual-stack listener sees an IPv4 client this way: it is that IPv4 client.
        (("::ffff:10.1.2.3", 5000, 0, 0), "10.1.2.3"),
        (("fe80::1%lo", 5000, 0, 1), "fe80::1%lo"),
        (("not an address", 5000), None),
        (None, None),
    ],
)
def test_client_address(peername: connection.Address | None, address: str | None) -> None:
    expected = None if address is None else ipaddress.ip_address(address)
    assert client_address(peername) == expected


@pytest.mark.parametrize(
    ("allow_from", "client", "allowed"),
    [
        ("", "203.0.113.9", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8", "10.255.0.1", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.0.0.0/8", "::ffff:10.0.0.7", True),
        ("10.0.0.0/8", "::ffff:11.0.0.7", False),
        ("::1", "::1", True),
        ("::1", "127.0.0.1", False),
        ("127.0.0.1", "::1", False),
        ("2001:db8::/32, 192.0.2.0/24", "2001:db8:1::5", True),
        ("2001:db8::/32, 192.0.2.0/24", "192.0.2.200", True),
        ("2001:db8::/32, 192.0.2.0/24", "2001:db9::5", False),
        ("fe80::/10", "fe80::1%lo", True),
        ("127.0.0.1", "garbage", False),
    ],
)
async def test_who_gets_an_answer(
    counting_proxy: MakeProxy, allow_from: str, client: str, allowed: bool
) -> None:
    """Through every hook, as mitmproxy calls them: the allowed client gets /status's and
    /metrics's answers, any other a JSON 403 whatever the method; never counted either way."""
    running = counting_proxy(counter_allow_from=allow_from)
    proxy = running.proxy
    for path, method in [
        ("/status", "GET"),
        ("/metrics?x=1", "GET"),
        ("/status", "HEAD"),
        ("/metrics", "DELETE"),
    ]:
        f = flow(path, method=method)
        f.client_conn.peername = (client, 40000)
        await all_hooks(proxy, f)
        assert f.response is not None, (path, method)
        if allowed:
            assert f.response.status_code == (405 if method == "DELETE" else 200)
        else:
            assert f.response.status_code == 403, (path, method)
            assert f.response.headers["content-type"] == "application/json"
            assert f.response.headers["cache-control"] == "no-store"
            body = b"" if method == "HEAD" else b'{"error": "forbidden"}'
            assert f.response.raw_content == body
    # Other paths are proxied for everyone, and counted.
    f = flow("/status/")
    f.client_conn.peername = (client, 40000)
    assert await all_hooks(proxy, f) is None
    assert running.counter.ledger.counted == 1
    await proxy.counting.done()


async def test_a_body_it_would_not_read_is_refused_unread_before_any_403(
    counting_proxy: MakeProxy,
) -> None:
    """A stranger's endpoint request with a body of unknown length is refused like anyone's:
    the proxy never reads it to say 403."""
    proxy = counting_proxy(
        counter_redis_url=unreachable_redis_url(), counter_allow_from="10.0.0.0/8"
    ).proxy
    f = flow("/metrics", method="POST", headers=((b"transfer-encoding", b"chunked"),))
    await all_hooks(proxy, f)
    assert f.error is not None and f.error.msg == Error.KILLED_MESSAGE
    await request_hook(proxy.endpoints, f)
    assert f.response is None


def test_one_log_line_per_change(caplog: pytest.LogCaptureFixture) -> None:
    proxy = CountingProxy()
    with taddons.context(Proxyserver(), proxy) as tctx, caplog.at_level(logging.INFO):
        for value in ["10.0.0.0/8, ::1", "10.0.0.0/8,::1", "", ""]:
            tctx.configure(proxy.access, counter_allow_from=value)
    lines = [r.getMessage() for r in caplog.records if r.name == "counting_addon.endpoints.access"]
    assert lines == [
        "counting_addon: the proxy's own endpoints answer 10.0.0.0/8, ::1/128",
        "counting_addon: the proxy's own endpoints answer any client",
    ]
