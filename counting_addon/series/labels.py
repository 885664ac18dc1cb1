"""The labels a request is counted under (counter_by), and their values for one request.

    route           the first counter_routes template matching the path, else (unmatched)
    method          the method as sent
    client          the client's IP address (an IPv4-mapped IPv6 one as IPv4)
    header:NAME     the request header's first value, else (none); cut to 100 characters
(bytes that are not UTF-8, in a method or a header, become '?')

A header whose value is a secret (Authorization, Proxy-Authorization, Cookie) is refused: the
values show in /status and /metrics.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http

from counting_addon.clients import client_address
from counting_addon.series.routes import Routes

# The value of a header label when the request has no such header.
NONE = "(none)"
LONGEST_VALUE = 100
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")
# RFC 9110's token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class LabelKind(enum.Enum):
    ROUTE = "route"
    METHOD = "method"
    CLIENT = "client"
    HEADER = "header"


@dataclass(frozen=True, slots=True)
class Label:
    """One label of counter_by; `header` is the header's name for a HEADER label."""

    kind: LabelKind
    header: str = ""

    def __str__(self) -> str:
        """As configured, and as /status names it: `route`, `header:X-Client-Id`."""
        return f"header:{self.header}" if self.kind is LabelKind.HEADER else self.kind.value

    @property
    def metric_label(self) -> str:
        return metric_label(str(self))


def metric_label(label: str) -> str:
    """A label's Prometheus label name: `header:X-Client-Id` is `header_x_client_id`."""
    return re.sub(r"[^a-z0-9]", "_", label.lower())


def parse_label(text: str) -> Label:
    kind, colon, header = text.partition(":")
    if colon:
        if kind != LabelKind.HEADER.value or not _TOKEN.fullmatch(header):
            raise ValueError(f"{text!r} is not a label: header:NAME takes a header's name")
        if header.lower() in SECRET_HEADERS:
            raise ValueError(
                f"{text!r}: its values are secrets (credentials, session cookies), and labels "
                "show in /status and /metrics; label a consumer id header instead"
            )
        return Label(LabelKind.HEADER, header)
    if text in (LabelKind.ROUTE.value, LabelKind.METHOD.value, LabelKind.CLIENT.value):
        return Label(LabelKind(text))
    raise ValueError(f"{text!r} is not a label: route, method, client or header:NAME")


def parse_max_series(value: int) -> int:
    if value < 1:
        raise ValueError(f"{value} must be 1 or more")
    return value


def check_routes_for(labels: tuple[Label, ...], routes: Routes) -> None:
    """The route label needs templates to match."""
    if Label(LabelKind.ROUTE) in labels and not routes.templates:
        raise ValueError("the route label needs counter_routes: the path templates to match")


def parse_by(value: str) -> tuple[Label, ...]:
    """counter_by: comma-separated labels, spaces allowed around each; empty for none."""
    if not value.strip():
        return ()
    labels: list[Label] = []
    for entry in value.split(","):
        label = parse_label(entry.strip())
        if any(str(label).lower() == str(seen).lower() for seen in labels):
            raise ValueError(f"{str(label)!r} is repeated")
        labels.append(label)
    return tuple(labels)


@functools.lru_cache(maxsize=4096)
def _client(host: str) -> str:
    address = client_address((host, 0))
    return host if address is None else str(address)


def _client_of(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return _client(peer[0]) if peer else NONE


def _cut(value: str) -> str:
    """At most LONGEST_VALUE characters, every one text: mitmproxy hands bytes that are not
    UTF-8 on as lone surrogates, which neither Redis's client nor /metrics could encode: they
    become '?'."""
    return value[:LONGEST_VALUE].encode("utf-8", "replace").decode("utf-8")


class Labeller:
    """A request's label values, in counter_by's order."""

    def __init__(self, labels: tuple[Label, ...], routes: Routes) -> None:
        self.labels = labels
        self.routes = routes
        self._values = tuple(self._value_of(label, routes) for label in labels)

    @staticmethod
    def _value_of(label: Label, routes: Routes) -> Callable[[http.HTTPFlow], str]:
        if label.kind is LabelKind.ROUTE:
            return lambda flow: routes.route(flow.request.path)
        if label.kind is LabelKind.METHOD:
            return lambda flow: _cut(flow.request.method)
        if label.kind is LabelKind.CLIENT:
            return lambda flow: (
                _client(flow.client_conn.peername[0]) if flow.client_conn.peername else NONE
            )
        name = label.header
        return lambda flow: _cut(next(iter(flow.request.headers.get_all(name)), NONE))

    def values(self, flow: http.HTTPFlow) -> tuple[str, ...]:
        # A list comprehension, inlined since Python 3.12: no generator made per request.
        return tuple([value(flow) for value in self._values])
