"""The counted requests still in flight, so that shutdown lets them end before the last write.

On SIGTERM mitmproxy goes on serving while the addons' shutdown runs. A request arriving then
would be counted after the last write (lost), and one cut short at exit would be answered by
nobody: behind a load balancer it is resent to another proxy, which counts it again. So, once
shutdown begins, new requests are refused unread (a balancer resends them elsewhere), and the
ones in flight get a short while to end before the counts are written for the last time.
"""

from __future__ import annotations

import asyncio
import contextlib


class InFlight:
    """Flows counted at their headers and not yet ended by `response` or `error`."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self.closing = False
        self._empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ids)

    def started(self, flow_id: str) -> None:
        self._ids.add(flow_id)

    def ended(self, flow_id: str) -> None:
        self._ids.discard(flow_id)
        if self.closing and not self._ids:
            self._empty.set()

    async def close(self, within: float) -> int:
        """Refuse new flows from now on; wait up to `within` s for those in flight to end.
        Returns how many have not."""
        self.closing = True
        if self._ids:
            self._empty.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._empty.wait()
        return len(self._ids)
