"""A mitmproxy addon that counts proxied requests in Redis and answers /status."""

from __future__ import annotations

from counting_addon.body_framing import FrameUnknownLengthBodies
from counting_addon.commands import CounterCommands
from counting_addon.counting import CountRequests
from counting_addon.status import StatusEndpoint
from counting_addon.streaming import StreamBodies

__all__ = [
    "CountRequests",
    "CounterCommands",
    "CountingProxy",
    "FrameUnknownLengthBodies",
    "StatusEndpoint",
    "StreamBodies",
]


class CountingProxy:
    """The whole addon: status endpoint, request and response counter, the counter's
    commands, body streaming and the framing of HTTP/2 bodies of unknown length, each by
    name."""

    def __init__(self) -> None:
        self.counting = CountRequests()
        self.status = StatusEndpoint(self.counting)
        self.streaming = StreamBodies()
        self.framing = FrameUnknownLengthBodies()
        self.commands = CounterCommands(self.counting)
        # Order matters: the status endpoint marks its flows before the others skip them.
        # The commands come last: they have no hooks for mitmproxy to walk past per request.
        self.addons = [self.status, self.counting, self.streaming, self.framing, self.commands]
