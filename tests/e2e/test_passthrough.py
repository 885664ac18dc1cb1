"""End to end: requests and responses pass through the proxy unchanged."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.processes import Proxy


def echo(response: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = json.loads(response.content)
    return body


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_and_bodies_pass_through(proxy: Proxy, method: str) -> None:
    body = b"" if method in ("GET", "OPTIONS") else b"payload \x00\xff" * 100
    r = httpx.request(method, f"{proxy.url}/some/path?q=1&q=2", content=body)
    assert r.status_code == 200
    got = echo(r)
    assert got["method"] == method
    assert got["path"] == "/some/path?q=1&q=2"
    assert got["body_len"] == len(body)


def test_duplicate_request_headers_keep_order(proxy: Proxy) -> None:
    headers = [("X-Dup", "one"), ("Cookie", "a=1"), ("X-Dup", "two"), ("x-dup", "three")]
    r = httpx.get(f"{proxy.url}/h", headers=headers)
    sent = [(k.lower(), v) for k, v in echo(r)["headers"]]  # type: ignore[attr-defined]
    assert [h for h in sent if h[0] in ("x-dup", "cookie")] == [
        ("x-dup", "one"),
        ("cookie", "a=1"),
        ("x-dup", "two"),
        ("x-dup", "three"),
    ]


def test_duplicate_response_headers_keep_order(proxy: Proxy) -> None:
    r = httpx.get(f"{proxy.url}/respheaders")
    got = [
        (k.lower(), v) for k, v in r.headers.multi_items() if k.lower() in ("set-cookie", "x-dup")
    ]
    assert got == [("set-cookie", "a=1"), ("x-dup", "one"), ("set-cookie", "b=2"), ("x-dup", "two")]


@pytest.mark.parametrize("code", [200, 201, 204, 301, 304, 400, 404, 418, 500, 503])
def test_status_codes_pass_through(proxy: Proxy, code: int) -> None:
    r = httpx.get(f"{proxy.url}/code/{code}", follow_redirects=False)
    assert r.status_code == code
