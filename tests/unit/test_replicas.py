"""counter_redis_replicas: a batch is acknowledged only once WAIT confirms that many replicas
have it, against a real primary and replica (redis-server processes of their own).

The failovers it is for are in tests/e2e/test_redis_sentinel.py and test_redis_cluster.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.counter import RedisCounter
from counting_addon.store.failures import FailureKind
from counting_addon.store.url import parse
from tests.support.in_process import BACKOFF_CAP, WAIT_TIMEOUT, MakeProxy
from tests.support.processes import logged, poll, start_redis, stays_pending
from tests.support.redis_admin import admin_of, script_calls

# A few of WAIT's timeouts and the retries between them, on a busy machine.
SHORTFALL_SEEN = 20.0
TOO_FEW = "fewer replicas than counter_redis_replicas=1"


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path / "primary")
    yield server
    server.stop()


def start_replica(directory: Path, primary: EmbeddedRedis) -> EmbeddedRedis:
    # Without an AOF: after its first sync a replica rewrites it, and refuses SIGTERM until
    # that is done ("Writing initial AOF, can't exit"), so that stopping it took 10 s.
    return start_redis(
        directory, "--replicaof", "127.0.0.1", str(primary.port), "--appendonly", "no"
    )


def counter_of(primary: EmbeddedRedis, replicas: int) -> RedisCounter:
    """A counter whose WAIT and retries are short: the tests wait them out."""
    return RedisCounter(
        parse(primary.url),
        "counter",
        replicas,
        backoff_cap=BACKOFF_CAP,
        wait_timeout=WAIT_TIMEOUT,
    )


def replicated(replica: EmbeddedRedis, expected: bytes) -> bool:
    with admin_of(replica, timeout=5) as client:
        return bool(client.get("counter") == expected)


async def test_with_a_replica_counts_are_acknowledged_once_it_has_them(
    primary: EmbeddedRedis, tmp_path: Path
) -> None:
    replica = start_replica(tmp_path / "replica", primary)
    try:
        counter = counter_of(primary, replicas=1)
        for _ in range(5):
            counter.add()
        async with asyncio.timeout(10):
            assert await counter.read() == 5
        # Acknowledged means on the replica already, not merely on its way there.
        assert replicated(replica, b"5")
        assert counter.problem is None and counter.unwritten == 0
        assert await counter.close(1.0) == 0
    finally:
        replica.stop()


async def test_without_enough_replicas_counts_wait_and_land_once_one_is_back(
    primary: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No replica: the batch is applied on the primary, but WAIT confirms none, so it is not
    acknowledged: it stays pending, is resent (without counting twice), and the reads say
    why. A replica comes: the batch is acknowledged and the count is exact."""
    caplog.set_level(logging.INFO)
    with admin_of(primary) as admin:
        counter = counter_of(primary, replicas=1)
        for _ in range(3):
            counter.add()
        await poll(lambda: script_calls(admin) >= 3, SHORTFALL_SEEN, "the batch resent")
        assert counter.problem is not None
        assert counter.problem.kind is FailureKind.TOO_FEW_REPLICAS
        assert TOO_FEW in str(counter.problem)
        assert counter.unwritten == 3
        assert counter.latest is None, "values from a batch no replica has are not shown"
        # Applied on the primary once, however often it was sent.
        assert admin.get("counter") == b"3"
        sent = script_calls(admin)
        await stays_pending(
            counter.read(), lambda: script_calls(admin) >= sent + 2, "the batch resent twice"
        )
        assert len(logged(caplog, TOO_FEW)) == 1, caplog.text

        replica = start_replica(tmp_path / "replica", primary)
        try:
            counter.add()
            async with asyncio.timeout(30):
                assert await counter.read() == 4
            assert counter.problem is None and counter.unwritten == 0
            assert admin.get("counter") == b"4"
            assert replicated(replica, b"4")
            assert len(logged(caplog, "Redis is back to accepting counts")) == 1, caplog.text
            assert await counter.close(1.0) == 0
        finally:
            replica.stop()


async def test_an_option_change_applies_to_the_batch_in_flight(primary: EmbeddedRedis) -> None:
    """counter_redis_replicas lowered to 0 while a batch waits for a replica that isn't there:
    the next attempt is acknowledged by the primary alone."""
    with admin_of(primary) as admin:
        counter = counter_of(primary, replicas=1)
        counter.add()
        await poll(lambda: counter.problem is not None, SHORTFALL_SEEN, "the shortfall")
        counter.replicas = 0
        async with asyncio.timeout(30):
            assert await counter.read() == 1
        assert admin.get("counter") == b"1"
        assert await counter.close(1.0) == 0


async def test_a_script_missing_from_the_cache_is_sent_whole(primary: EmbeddedRedis) -> None:
    """A promoted replica has no script cache: EVALSHA gets NOSCRIPT, and EVAL with the source
    takes its place in the pipeline with WAIT."""
    with admin_of(primary) as admin:
        counter = counter_of(primary, replicas=0)
        counter.add()
        async with asyncio.timeout(10):
            assert await counter.read() == 1
        admin.script_flush()
        counter.replicas = 1
        # No replica here: WAIT confirms none, but the script ran, from its source.
        counter.add()
        await poll(lambda: counter.problem is not None, SHORTFALL_SEEN, "the shortfall")
        assert admin.get("counter") == b"2"
        assert counter.problem is not None
        assert counter.problem.kind is FailureKind.TOO_FEW_REPLICAS
        assert int(admin.info("commandstats")["cmdstat_eval"]["calls"]) >= 1
        sent = script_calls(admin)
        await stays_pending(
            counter.read(), lambda: script_calls(admin) >= sent + 2, "the batch resent twice"
        )
        await counter.close(0.5)


def test_the_option_is_0_or_more_and_applies_in_place(
    counting_proxy: MakeProxy, primary: EmbeddedRedis
) -> None:
    running = counting_proxy(counter_redis_url=primary.url, counter_redis_replicas=1)
    counter = running.counter
    assert counter.replicas == 1
    with pytest.raises(exceptions.OptionsError, match="counter_redis_replicas: -1"):
        running.configure(counter_redis_replicas=-1)
    running.configure(counter_redis_replicas=2)
    assert running.counter is counter, "the same counter, its batches in order"
    assert counter.replicas == 2
