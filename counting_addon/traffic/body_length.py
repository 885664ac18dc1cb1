"""What a request's or response's head says about the length of its body."""

from __future__ import annotations

from mitmproxy import http


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


def unknown_length(request: http.Request) -> bool:
    """An HTTP/2 or 3 request without Content-Length: it may have a body of unknown length,
    which, unlike in HTTP/1, carries no Transfer-Encoding either."""
    return (request.is_http2 or request.is_http3) and framing(request.headers)[0] is None
