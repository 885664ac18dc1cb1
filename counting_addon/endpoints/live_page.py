"""The live page: what /status answers a browser (negotiation.py decides who is one).

One self-contained HTML document, made once from the package's files (page/): the page's own
HTML, CSS and JS, and the vendored uPlot's JS and CSS (page/vendor/uplot/), inlined, with an
inline icon so the browser asks for no favicon. The only request the page then makes is its
polling of the same path for JSON: nothing it needs comes from the upstream or the internet.

The page holds no figure and nothing from the request: the same bytes for every client, so
nothing a client sends is ever reflected. The scripts it may run are named by their digests in
its Content-Security-Policy.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

from mitmproxy import http

ASSETS = files("counting_addon.endpoints") / "page"
UPLOT = ASSETS / "vendor" / "uplot"
# {{name}} in page.html: where each asset goes.
_SLOT = re.compile(r"\{\{([a-z.]+)\}\}")
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    """The page's bytes and the Content-Security-Policy that lets exactly its inline scripts
    and styles run."""

    html: bytes
    policy: str


def inlined(name: str, text: str) -> str:
    """An asset's text, checked to stay inside its <script> or <style> element: the HTML
    parser ends either at the first `</script` or `</style`, whatever the quotes around it."""
    if re.search(r"</(script|style)", text, re.IGNORECASE):
        raise ValueError(f"{name} holds a closing tag and can't be inlined")
    return text


def digest(text: str) -> str:
    """A CSP hash source (CSP Level 3, 'sha256-...') for an inline element's content."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def policy(html: str) -> str:
    """Nothing may load but the page's own inline scripts and styles (by digest), its data:
    icon, and the polling fetch of its own origin; no frame may hold it, no form post."""
    sources: dict[str, list[str]] = {"script": [], "style": []}
    for element in _INLINE.finditer(html):
        sources[element[1]].append(digest(element[2]))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(sources["script"]),
            # uPlot sizes its elements through element.style, which CSP does not govern.
            "style-src " + " ".join(sources["style"]),
            "img-src data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@functools.cache
def page() -> Page:
    """The page, assembled from the package's files on first use and kept."""
    assets = {
        "uplot.js": (UPLOT / "uPlot.iife.min.js").read_text(encoding="utf-8"),
        "uplot.css": (UPLOT / "uPlot.min.css").read_text(encoding="utf-8"),
        "uplot.version": (UPLOT / "VERSION").read_text(encoding="utf-8").strip(),
        "page.js": (ASSETS / "page.js").read_text(encoding="utf-8"),
        "page.css": (ASSETS / "page.css").read_text(encoding="utf-8"),
    }
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    html = _SLOT.sub(lambda m: inlined(m[1], assets[m[1]]), template)
    return Page(html.encode(), policy(html))


def page_response() -> http.Response:
    """The page, as /status answers it. `Vary: Accept`: the same URL answers JSON to others."""
    made = page()
    return http.Response.make(
        200,
        made.html,
        {
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            "Vary": "Accept",
            "Content-Security-Policy": made.policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
