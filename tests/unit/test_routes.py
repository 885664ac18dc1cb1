"""Route templates (series/routes.py): what they match, in order, and what is refused."""

from __future__ import annotations

import pytest

from counting_addon.series.routes import UNMATCHED, Routes, check_template

ROUTES = Routes(
    [
        "/users/{id}",
        "/users/{id}/orders/{order}",
        "/users/me",  # after /users/{id}: never reached, first match wins
        "/static/*",
        "/v1.0/items",
        "/",
    ]
)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/users/42", "/users/{id}"),
        ("/users/me", "/users/{id}"),
        ("/users/42/orders/7", "/users/{id}/orders/{order}"),
        ("/users/42?page=2", "/users/{id}"),  # the query string is not the path's
        ("/users/", UNMATCHED),  # a parameter is one non-empty segment
        ("/users//orders/7", UNMATCHED),
        ("/users/4/2", UNMATCHED),
        ("/static", "/static/*"),
        ("/static/", "/static/*"),
        ("/static/a/b.css", "/static/*"),
        ("/statics", UNMATCHED),
        ("/v1.0/items", "/v1.0/items"),
        ("/v1x0/items", UNMATCHED),  # literal: '.' is a dot
        ("/", "/"),
        ("", UNMATCHED),
        ("/USERS/42", UNMATCHED),  # paths are case-sensitive
    ],
)
def test_the_first_template_that_matches_is_the_route(path: str, route: str) -> None:
    assert ROUTES.route(path) == route


def test_no_templates_match_nothing() -> None:
    assert Routes([]).route("/anything") == UNMATCHED


def test_a_template_matching_everything_catches_what_no_other_does() -> None:
    routes = Routes(["/api/{name}", "/*"])
    assert [routes.route(p) for p in ("/api/x", "/api/x/y", "/")] == ["/api/{name}", "/*", "/*"]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("users", "starting with '/'"),
        ("/users?x=1", "no query"),
        ("/a b", "no query, fragment or spaces"),
        ("/users/{id", "a parameter is a whole segment"),
        ("/users/{}", "a parameter is a whole segment"),
        ("/users/x{id}", "a parameter is a whole segment"),
        ("/users/{1d}", "a parameter is a whole segment"),
        ("/static/*/x", "'*' may only end a template"),
        ("/static*", "'*' may only end a template"),
        ("/a/{id}/b/{id}", "names id twice"),
        ("/tab\there", "starting with '/'"),
    ],
)
def test_a_malformed_template_is_refused_saying_why(template: str, says: str) -> None:
    with pytest.raises(ValueError) as refusal:
        check_template(template)
    assert str(refusal.value).startswith(repr(template)) and says in str(refusal.value)
