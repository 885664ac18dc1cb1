"""A mitmproxy addon that counts proxied requests in Redis and answers /status."""

from __future__ import annotations

from counting_addon.body_framing import FrameUnknownLengthBodies
from counting_addon.counting import CountRequests
from counting_addon.status import StatusEndpoint
from counting_addon.streaming import StreamBodies

__all__ = [
    "CountRequests",
    "CountingProxy",
    "FrameUnknownLengthBodies",
    "StatusEndpoint",
    "StreamBodies",
]


class CountingProxy:
    """The whole addon: status endpoint, request counter, body streaming and the framing of
    HTTP/2 bodies of unknown length, each by name."""

    def __init__(self) -> None:
        self.counting = CountRequests()
        self.status = StatusEndpoint(self.counting)
        self.streaming = StreamBodies()
        self.framing = FrameUnknownLengthBodies()
        # Order matters: the status endpoint marks its flows before the others skip them.
        self.addons = [self.status, self.counting, self.streaming, self.framing]
