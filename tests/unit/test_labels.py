"""counter_by's labels (series/labels.py): what is accepted, what is refused and why, and the
values a request gets."""

from __future__ import annotations

import pytest
from mitmproxy import http

from counting_addon.series.labels import (
    NONE,
    Label,
    LabelKind,
    Labeller,
    parse_by,
)
from counting_addon.series.routes import UNMATCHED, Routes
from tests.support.flows import flow


@pytest.mark.parametrize(
    ("value", "labels"),
    [
        ("", ()),
        ("  ", ()),
        ("route", (Label(LabelKind.ROUTE),)),
        (
            "route, method,client",
            (Label(LabelKind.ROUTE), Label(LabelKind.METHOD), Label(LabelKind.CLIENT)),
        ),
        ("header:X-Client-Id", (Label(LabelKind.HEADER, "X-Client-Id"),)),
    ],
)
def test_counter_by_lists_labels(value: str, labels: tuple[Label, ...]) -> None:
    assert parse_by(value) == labels


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("path", "'path' is not a label: route, method, client or header:NAME"),
        ("Route", "is not a label"),
        ("route,,method", "'' is not a label"),
        ("route,route", "'route' is repeated"),
        ("header:X-Id,header:x-id", "'header:x-id' is repeated"),  # header names ignore case
        ("header:", "header:NAME takes a header's name"),
        ("header:X Id", "header:NAME takes a header's name"),
        ("query:page", "header:NAME takes a header's name"),
        ("header:Authorization", "its values are secrets"),
        ("header:proxy-authorization", "its values are secrets"),
        ("header:COOKIE", "its values are secrets"),
    ],
)
def test_a_bad_label_is_refused_saying_why(value: str, says: str) -> None:
    with pytest.raises(ValueError) as refusal:
        parse_by(value)
    assert says in str(refusal.value)


@pytest.mark.parametrize(
    ("label", "shown", "metric_label"),
    [
        ("route", "route", "route"),
        ("client", "client", "client"),
        ("header:X-Client-Id", "header:X-Client-Id", "header_x_client_id"),
        ("header:x.api~key", "header:x.api~key", "header_x_api_key"),
    ],
)
def test_each_label_has_its_name_and_its_metric_label(
    label: str, shown: str, metric_label: str
) -> None:
    (parsed,) = parse_by(label)
    assert (str(parsed), parsed.metric_label) == (shown, metric_label)


def request(
    path: str = "/users/7?x=1",
    method: str = "GET",
    peer: str = "127.0.0.2",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> http.HTTPFlow:
    f = flow(path, method, headers=headers)
    f.client_conn.peername = (peer, 50000)
    return f


LABELLER = Labeller(
    parse_by("route,method,client,header:X-Client-Id"), Routes(["/users/{id}", "/static/*"])
)


@pytest.mark.parametrize(
    ("f", "values"),
    [
        (request(), ("/users/{id}", "GET", "127.0.0.2", NONE)),
        (
            request("/nowhere", "POST", "::1", ((b"x-client-id", b"acme"),)),
            (UNMATCHED, "POST", "::1", "acme"),
        ),
        # A dual-stack listener's view of an IPv4 client.
        (request(peer="::ffff:10.1.2.3"), ("/users/{id}", "GET", "10.1.2.3", NONE)),
        # The first of repeated headers; a long value cut to 100 characters.
        (
            request(headers=((b"X-Client-Id", b"first"), (b"x-client-id", b"second"))),
            ("/users/{id}", "GET", "127.0.0.2", "first"),
        ),
        (
            request(headers=((b"X-Client-Id", b"k" * 300),)),
            ("/users/{id}", "GET", "127.0.0.2", "k" * 100),
        ),
        (request(method="PURGE"), ("/users/{id}", "PURGE", "127.0.0.2", NONE)),
        # Bytes that are not UTF-8 (mitmproxy's lone surrogates) can't reach Redis or /metrics.
        (
            request(headers=((b"X-Client-Id", b"a\xffb"),)),
            ("/users/{id}", "GET", "127.0.0.2", "a?b"),
        ),
    ],
)
def test_a_request_gets_its_values_in_counter_bys_order(
    f: http.HTTPFlow, values: tuple[str, ...]
) -> None:
    assert LABELLER.values(f) == values
