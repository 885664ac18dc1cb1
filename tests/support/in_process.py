"""The in-process tier's harness: a CountingProxy under mitmproxy's test harness (taddons),
and the short bounds the tests give the product where they would wait out its real ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mitmproxy.test import taddons

from counting_addon import CountingProxy
from counting_addon.store.counter import RedisCounter

# Shutdown's two waits (traffic/counting.py: 2 s and 3 s): for the flows in flight, none once
# every hook ran (flows.all_hooks); and for the last counts, which the tests' Redis takes in
# milliseconds.
DRAIN_TIMEOUT = 0.1
CLOSE_TIMEOUT = 1.0
# A counter's longest wait between failed writes (store/lifecycle.py: 5 s), and WAIT's for
# replicas (store/client.py: 1 s): tests that fail writes on purpose retry within this.
BACKOFF_CAP = 0.2
WAIT_TIMEOUT = 0.2


@dataclass
class InProcessProxy:
    """A CountingProxy under taddons, configured (the `counting_proxy` fixture makes it)."""

    proxy: CountingProxy
    tctx: taddons.context

    @property
    def counter(self) -> RedisCounter:
        counter = self.proxy.counting.counter
        assert counter is not None, "configure() made one"
        return counter

    def configure(self, **options: Any) -> None:
        """Options changed, as `--set` or the options editor would."""
        self.tctx.configure(self.proxy, **options)


class MakeProxy(Protocol):
    """The `counting_proxy` fixture (tests/unit/conftest.py)."""

    def __call__(self, **options: object) -> InProcessProxy: ...
