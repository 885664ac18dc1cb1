"""Body bytes as they travel: what a client sent in its request body and got in its response
body, counted without reading or holding a streamed body.

"As they travel" is what mitmproxy hands on: the body without HTTP/1.1's chunked framing or
HTTP/2 and HTTP/3 frame headers (its HTTP layers strip those before the data reaches a
stream or a buffer), in its content encoding (a gzip body counts its compressed length).

- A buffered body counts its `raw_content` once complete: the request's before it goes up, the
  response's just before it goes to the client (the response hook).
- A streamed body (streaming.py) has a `Passing` as its stream: mitmproxy calls it with each
  chunk as it passes (proxy/layers/http/__init__.py, `state_stream_request_body` and
  `state_stream_response_body`) and sends on what it returns, the chunk unchanged. A client
  that aborts mid-body counts the chunks that passed.
  A body mitmproxy's own `stream_large_bodies` streams gets a `Passing` too (streaming.py).
- A request body cut short while buffered counts 0: none of it went on. mitmproxy's own error
  answers (a 502 after an upstream failure) are not proxied bodies and count nothing; nor
  does a body another addon streams through a function of its own (it can't be seen).
"""

from __future__ import annotations

from mitmproxy import http


class Passing:
    """A streamed body's stream callable: each chunk passes unchanged, its bytes counted."""

    __slots__ = ("passed",)

    def __init__(self) -> None:
        self.passed = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.passed += len(chunk)
        return chunk


def stream_counting(message: http.Message) -> None:
    """Stream `message`'s body, counting what passes."""
    message.stream = Passing()


def passed(message: http.Message | None, complete: bool) -> int:
    """The body bytes of `message` that went on: those that streamed past, else, if `complete`
    (its hook came), its buffered body's; 0 for none."""
    if message is None:
        return 0
    stream = message.stream
    if isinstance(stream, Passing):
        return stream.passed
    if not complete or stream:  # cut short while buffered; or streamed by another addon
        return 0
    raw = message.raw_content
    return len(raw) if raw else 0
