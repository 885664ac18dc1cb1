"""End to end: what a SIGKILL of the proxy can lose: the counts it had not yet written."""

from __future__ import annotations

import signal
import time

import redis

from counting_addon.store.counter import WRITE_INTERVAL
from tests.support.load import Load
from tests.support.processes import ProxyFactory

CONCURRENCY = 8


def test_sigkill_loses_at_most_one_unwritten_batch(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """Unwritten are the batch in flight and the counts gathered since: about WRITE_INTERVAL
    of traffic. A writer that fell behind would lose far more."""
    lost: list[int] = []
    for round in range(3):
        redis_client.delete("counter")
        proxy = start_proxy(upstream, redis_url)
        started = time.monotonic()
        with Load(proxy.url, concurrency=CONCURRENCY, max_seconds=60) as load:
            load.wait_for_more(500 * (round + 1))
            proxy.stop(signal.SIGKILL)
        rate = load.results.ok / (time.monotonic() - started)
        counted = int(redis_client.get("counter") or 0)
        # Requests in flight at the kill may have been counted without an answer.
        assert counted <= load.results.ok + CONCURRENCY
        lost.append(load.results.ok - counted)
        # Three intervals' worth: the batch in flight, the one gathering, and slack for a
        # write that was slow to come back on a busy machine.
        assert lost[-1] <= rate * 3 * WRITE_INTERVAL + CONCURRENCY, (lost, rate)
    print(f"counts lost to SIGKILL per round: {lost} (at about {rate:.0f} requests/s)")
