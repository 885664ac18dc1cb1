"""Who gets the live page: RFC 9110's Accept with weights and specificity, HTML only when a client
weighs it above JSON."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counting_addon.endpoints.negotiation import MediaRange, parse_accept, prefers_html
from tests.support.http_client import ACCEPT_CHROMIUM, ACCEPT_FIREFOX, ACCEPT_SAFARI

# curl's, and a browser's fetch() without an Accept of its own.
ANYTHING = "*/*"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (ACCEPT_CHROMIUM, True),
        (ACCEPT_FIREFOX, True),
        (ACCEPT_SAFARI, True),
        # A tie: JSON.
        (ANYTHING, False),
        ("text/html, application/json", False),
        ("application/json", False),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0.9, application/json;q=0.8", True),
        (None, False),
        ("", False),
        # Any text, nothing else: only the page is acceptable at all.
        ("text/*;q=0.5", True),
        ("text/*;q=0.5, */*;q=0.5", False),
        ("text/html;q=0", False),
        ("text/html;q=0, */*", False),
        # The most specific range decides: text/html's own 0.1 beats text/*'s 1.
        ("text/*, text/html;q=0.1, application/json;q=0.2", False),
        ("*/*;q=0.1, application/*;q=0.2, text/html;q=0.3", True),
        # A range's parameters must match: the page is UTF-8, in any case of the name.
        ("text/html;charset=UTF-8, application/json;q=0.5", True),
        ("text/html;charset=latin1, application/json;q=0.5", False),
        ('text/html;charset="utf-8";q=1, application/json;q=0.5', True),
        ("TEXT/HTML, application/json;q=0.5", True),
        ("text/html;Q=0.6, application/json;q=0.5", True),
        # Malformed: JSON, whatever else the header says.
        ("garbage", False),
        ("text/html;q=1.5", False),
        ("text/html;q=0.1234", False),
        ("text/html;q=abc", False),
        ("text/html;q=", False),
        ("*/html", False),
        ("text/html q=1", False),
        ("text/html;;q=1", False),
        ("<script>", False),
        ("text/html, application/json;q=0.5, \x00", False),
    ],
)
def test_who_gets_the_page(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


@pytest.mark.parametrize(
    ("accept", "ranges"),
    [
        ("*/*", [MediaRange("*", "*")]),
        (
            " text/html ;level=1 ; q=0.5 ;ext=x , application/json",
            [MediaRange("text", "html", {"level": "1"}, 0.5), MediaRange("application", "json")],
        ),
        ('a/b;p="x,\\"y";q=1.000', [MediaRange("a", "b", {"p": 'x,"y'}, 1.0)]),
        ("a/b,,c/d,", [MediaRange("a", "b"), MediaRange("c", "d")]),
        ("text/*;q=0", [MediaRange("text", "*", {}, 0.0)]),
    ],
)
def test_parse_accept(accept: str, ranges: list[MediaRange]) -> None:
    assert parse_accept(accept) == ranges


@pytest.mark.parametrize(
    "accept", ["text", "text/", "/html", "text/html;q=2", "text/html;level", "a/b c/d", "é/b"]
)
def test_parse_accept_refuses(accept: str) -> None:
    with pytest.raises(ValueError):
        parse_accept(accept)


@given(st.text(max_size=200))
def test_any_header_gets_an_answer(accept: str) -> None:
    """No header, however odd, raises: it gets the page or JSON."""
    assert prefers_html(accept) in (True, False)
