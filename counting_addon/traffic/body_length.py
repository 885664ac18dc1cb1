"""What a request's or response's head says about the length of its body."""

from __future__ import annotations

from typing import NamedTuple

from mitmproxy import http

# The protocols whose frames, not the head, delimit a body: an HTTP/2 or 3 request without
# Content-Length may have a body of unknown length, which carries no Transfer-Encoding either.
FRAMED = frozenset({b"HTTP/2.0", b"HTTP/3"})


class Head(NamedTuple):
    """What a request's head says of its body, read once per request for every part that
    asks (proxy.py)."""

    length: bytes | None  # the Content-Length, b"" if repeated
    transfer_encoding: bool
    unknown: bool  # HTTP/2 or 3 without Content-Length (unknown_length)


def framing(headers: http.Headers) -> tuple[bytes | None, bool]:
    """The Content-Length (b"" if repeated) and whether there is a Transfer-Encoding.

    One pass over the raw fields: each `in` or `get` on Headers decodes every field anew, which
    made these checks most of the addon's per-request cost.
    """
    length: bytes | None = None
    transfer_encoding = False
    for name, value in headers.fields:
        name = name.lower()
        if name == b"content-length":
            length = value if length is None else b""
        elif name == b"transfer-encoding":
            transfer_encoding = True
    return length, transfer_encoding


def request_head(request: http.Request) -> Head:
    length, transfer_encoding = framing(request.headers)
    return Head(length, transfer_encoding, length is None and request.data.http_version in FRAMED)


def unknown_length(request: http.Request) -> bool:
    """An HTTP/2 or 3 request without Content-Length: it may have a body of unknown length,
    which, unlike in HTTP/1, carries no Transfer-Encoding either."""
    # HTTP/1 first: its head is not read at all.
    return request.data.http_version in FRAMED and request_head(request).unknown
