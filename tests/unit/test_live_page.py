"""The live page as the addon answers it under mitmproxy's taddons: to a browser's Accept the page,
to every other the JSON of before; the page one self-contained document within its budget."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib.resources import files

import pytest
from mitmproxy import http

from counting_addon.endpoints.live_page import UPLOT, inlined, page
from tests.support.flows import all_hooks, flow
from tests.support.http_client import (
    ACCEPT_CHROMIUM,
    ACCEPT_FIREFOX,
    ACCEPT_SAFARI,
    assert_status_fields,
)
from tests.support.in_process import MakeProxy

# The whole page, everything inlined (issue 21).
BUDGET = 150 * 1024
HOSTILE = "<img src=x onerror=alert(1)>"


async def answer(counting_proxy: MakeProxy, f: http.HTTPFlow, **options: str) -> http.Response:
    proxy = counting_proxy(**options).proxy
    assert await all_hooks(proxy, f) is not None, "answered by the proxy itself"
    await proxy.counting.done()
    assert f.response is not None
    return f.response


def accepting(accept: str | None, method: str = "GET", path: str = "/status") -> http.HTTPFlow:
    headers = () if accept is None else ((b"accept", accept.encode()),)
    return flow(path, method, headers=headers)


@pytest.mark.parametrize("accept", [ACCEPT_CHROMIUM, ACCEPT_FIREFOX, ACCEPT_SAFARI])
async def test_a_browser_gets_the_page(counting_proxy: MakeProxy, accept: str) -> None:
    response = await answer(counting_proxy, accepting(accept))
    assert response.status_code == 200
    assert response.content == page().html
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["vary"] == "Accept"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == page().policy


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "text/html;q=0", "text/html, application/json"]
)
async def test_other_clients_get_the_json(counting_proxy: MakeProxy, accept: str | None) -> None:
    response = await answer(counting_proxy, accepting(accept))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"
    assert_status_fields(json.loads(response.content or b""))


@pytest.mark.parametrize(
    ("lines", "page_expected"),
    [
        (("application/json;q=0.5", "text/html"), True),
        (("text/html", "application/json"), False),  # a tie over two lines: JSON
        (("text/html;q=0.5", "application/json"), False),
    ],
)
async def test_several_accept_lines_are_read_as_one_list(
    counting_proxy: MakeProxy, lines: tuple[str, ...], page_expected: bool
) -> None:
    f = flow("/status", headers=tuple((b"accept", line.encode()) for line in lines))
    response = await answer(counting_proxy, f)
    assert (response.content == page().html) is page_expected
    assert response.headers["vary"] == "Accept"


async def test_the_page_is_served_at_the_configured_status_path(
    counting_proxy: MakeProxy,
) -> None:
    response = await answer(
        counting_proxy,
        accepting(ACCEPT_CHROMIUM, path="/health?x=1"),
        counter_status_path="/health",
    )
    assert response.content == page().html


async def test_head_gets_the_pages_headers_and_no_body(counting_proxy: MakeProxy) -> None:
    response = await answer(counting_proxy, accepting(ACCEPT_CHROMIUM, "HEAD"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(page().html))
    assert response.raw_content == b""


async def test_while_redis_is_down_a_browser_still_gets_the_page_and_json_the_503(
    counting_proxy: MakeProxy,
) -> None:
    down = "redis://127.0.0.1:1/0"
    assert (
        await answer(counting_proxy, accepting(ACCEPT_CHROMIUM), counter_redis_url=down)
    ).content == (page().html)
    response = await answer(counting_proxy, accepting("*/*"), counter_redis_url=down)
    assert response.status_code == 503
    assert response.headers["vary"] == "Accept"


async def test_the_page_never_reflects_the_request(counting_proxy: MakeProxy) -> None:
    f = flow(
        f"/status?{HOSTILE}",
        headers=(
            # Still a browser's: the hostile part a parameter that matches neither type.
            (b"accept", f'{ACCEPT_CHROMIUM},text/plain;x="{HOSTILE}"'.encode()),
            (b"x-a", HOSTILE.encode()),
        ),
    )
    response = await answer(counting_proxy, f)
    assert response.content == page().html
    assert HOSTILE.encode() not in response.content
    assert all(HOSTILE not in v for v in response.headers.values())


async def test_methods_and_the_fence_apply_before_the_page(counting_proxy: MakeProxy) -> None:
    refused = await answer(counting_proxy, accepting(ACCEPT_CHROMIUM, "POST"))
    assert refused.status_code == 405
    forbidden = await answer(
        counting_proxy, accepting(ACCEPT_CHROMIUM), counter_allow_from="10.0.0.0/8"
    )
    assert forbidden.status_code == 403
    assert json.loads(forbidden.content or b"") == {"error": "forbidden"}


def test_the_page_is_within_its_budget() -> None:
    assert len(page().html) <= BUDGET, len(page().html)


def test_the_page_asks_for_nothing_outside_itself() -> None:
    html = page().html.decode()
    # Every src and href: none a URL of its own (http:, https:, //host, a path); the icon
    # a data: URL.
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html)
    assert references == [references[0]] and references[0].startswith("data:image/png;base64,")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html)
    # No element that would load anything: scripts and styles are inline, no link but the icon.
    assert not re.search(r"<script[^>]*\bsrc|<link(?![^>]*rel=\"icon\")|<img|<iframe|@import", html)
    # The polling asks the page's own path, whatever it is configured as, for JSON, taking
    # the counts in Redis as they are (max-stale) rather than waiting on this proxy's writes.
    assert "fetch(location.pathname" in html
    assert '{ Accept: "application/json", "Cache-Control": "max-stale" }' in html


def test_the_policy_names_exactly_the_inline_scripts_and_styles() -> None:
    made = page()
    html = made.html.decode()
    for kind in ("script", "style"):
        inline = re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.DOTALL)
        assert len(inline) == 2, kind
        digests = [
            "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
            for text in inline
        ]
        assert f"{kind}-src {' '.join(digests)};" in made.policy
    assert made.policy.startswith("default-src 'none';")
    assert "connect-src 'self'" in made.policy and "'unsafe-inline'" not in made.policy


def test_the_vendored_uplot_is_inlined_whole_with_its_version() -> None:
    version = (UPLOT / "VERSION").read_text(encoding="utf-8").strip()
    js = (UPLOT / "uPlot.iife.min.js").read_text(encoding="utf-8")
    assert js.startswith(f"/*! https://github.com/leeoniya/uPlot (v{version}) */")
    assert js in page().html.decode()
    assert f"`uplot` {version} (npm)" in (UPLOT / "README.md").read_text(encoding="utf-8")
    assert "MIT License" in (UPLOT / "LICENSE").read_text(encoding="utf-8")
    # The page's own files too, each as it is in the package.
    assets = files("counting_addon.endpoints") / "page"
    for name in ("page.js", "page.css"):
        assert (assets / name).read_text(encoding="utf-8") in page().html.decode()


@pytest.mark.parametrize("text", ["a</script>b", "a</STYLE >b", "'</script'"])
def test_an_asset_that_would_end_its_element_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="closing tag"):
        inlined("page.js", text)
