"""mitmproxy commands on the shared counter: counter.get, counter.reset, counter.flush.

mitmproxy calls a command synchronously on its event loop and uses its return value at once,
so none of them waits on Redis: each reads what this process already knows, or hands the work
to the counter's writer, which does it in order with its batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mitmproxy import command

from counting_addon.store.shared import largest_first

if TYPE_CHECKING:
    from counting_addon.store.counter import RedisCounter
    from counting_addon.traffic.counting import CountRequests

F = TypeVar("F", bound=Callable[..., Any])


def declared(name: str) -> Callable[[F], F]:
    """mitmproxy's `@declared(name)`, typed (mitmproxy's decorator is not)."""
    return cast(Callable[[F], F], command.command(name))


# What counter.get answers while no write or read has brought a value back.
UNKNOWN = -1


class CounterCommands:
    """The commands, as methods of the one addon mitmproxy sees (CountingProxy): as a child
    addon they would cost a walk on every hook mitmproxy calls, for every request."""

    counting: CountRequests

    def _counter(self) -> RedisCounter:
        counter = self.counting.counter
        assert counter, "configure() runs before any command"
        return counter

    @declared("counter.get")
    def get(self) -> int:
        """The shared request count as of this process's latest write to Redis or read of it
        (/status, /metrics; every write brings it back; the command never waits on Redis, so
        it may lag behind other proxies' counts and this process's last ~100 ms). -1 until a
        first write or read brings a value back."""
        latest = self._counter().latest
        return UNKNOWN if latest is None else latest.requests

    @declared("counter.top")
    def top(self, n: int) -> Sequence[str]:
        """The n largest series of counter_by, a line each: the count, then each label's
        value. From the latest values this process has seen (a /status or /metrics read, or
        counter.flush), without waiting on Redis; none without counter_by or before any."""
        counter = self._counter()
        labels = counter.series.labels
        largest = largest_first(counter.latest_series or {})[: max(n, 0)]
        return [
            "  ".join([str(count), *(f"{k}={v}" for k, v in zip(labels, values, strict=True))])
            for values, count in largest
        ]

    @declared("counter.reset")
    def reset(self) -> None:
        """DESTRUCTIVE: sets the shared request count and every shared response class in
        Redis back to 0, for every proxy sharing the key. This process's counts not yet
        written are dropped with them; later ones count from 0. Runs in the background, in
        order with the writes (retried while Redis is away)."""
        self._counter().reset()

    @declared("counter.flush")
    def flush(self) -> None:
        """Writes this process's pending counts to Redis now rather than within ~100 ms, in
        the background (the command returns at once)."""
        self._counter().flush()
