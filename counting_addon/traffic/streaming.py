"""Streams request and response bodies so that memory stays flat whatever their size."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.net.http.http1 import expected_http_body_size

from counting_addon.options import parse_size, parsed, reported_cleanly
from counting_addon.traffic.body_bytes import stream_counting
from counting_addon.traffic.body_length import Head, framing, request_head


class StreamBodies:
    """Streams every body that is large or of unknown length; buffers small declared ones.

    Buffered bodies show up in mitmweb, and small messages skip streaming's per-chunk cost.
    A streamed body's bytes are counted as they pass (body_bytes.py). Sees proxied flows only
    (proxy.py).
    """

    def __init__(self) -> None:
        self.threshold = 0

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_stream_threshold",
            str,
            "1m",
            "Bodies with a declared length up to this size are buffered (and visible in "
            "mitmweb); larger bodies and bodies of unknown length are streamed. Bytes, or "
            "with a k/m/g suffix. 0 streams everything.",
        )

    @reported_cleanly
    def configure(self, updated: set[str]) -> None:
        if "counter_stream_threshold" in updated:
            self.threshold = parsed("counter_stream_threshold", parse_size)

    def _should_stream(self, request: http.Request, response: http.Response | None) -> bool:
        try:
            size = expected_http_body_size(request, response)
        except ValueError:
            # mitmproxy rejects such messages itself; don't get in its way.
            return False
        if size == 0:
            return False
        return size is None or size < 0 or size > self.threshold

    def requestheaders(self, flow: http.HTTPFlow, head: Head | None = None) -> None:
        """`head`: the request's, if already read (proxy.py)."""
        request = flow.request
        if head is None:
            head = request_head(request)
        if request.stream is True or head.unknown:
            # True: mitmproxy's own stream_large_bodies streams it already (its
            # check_body_size runs before this hook): streamed the same, counting its bytes.
            # Unknown length: streamed only if a body does follow (mitmproxy knows, an addon
            # can't yet).
            stream_counting(request)
            return
        # Most requests have no body: skip the full check, which costs more than everything
        # else the addon does per request.
        if head.length is None and not head.transfer_encoding:
            return
        if self._should_stream(request, None):
            stream_counting(request)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response
        if flow.response.stream is True:  # stream_large_bodies, as for a request
            stream_counting(flow.response)
            return
        # The common case, a small declared length, is buffered whatever else is true of it.
        length, transfer_encoding = framing(flow.response.headers)
        if (
            length is not None
            and length.isdigit()
            and int(length) <= self.threshold
            and not transfer_encoding
        ):
            return
        if self._should_stream(flow.request, flow.response):
            stream_counting(flow.response)
