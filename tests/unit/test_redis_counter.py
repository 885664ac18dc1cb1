"""The Redis counter's write loop, against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import redis.retry

from counting_addon.embedded_redis import EmbeddedRedis
from counting_addon.failures import FailureKind
from counting_addon.redis_counter import (
    APPLY_BATCH,
    WRITE_INTERVAL,
    CounterUnavailable,
    RedisCounter,
    client_options,
)
from tests.support.processes import free_port, wait_for
from tests.support.redis_admin import script_calls
from tests.support.relay import Relay


async def test_counts_reach_redis_and_read_back(redis_url: str, redis_client: redis.Redis) -> None:
    counter = RedisCounter(redis_url, "counter")
    for _ in range(7):
        counter.add()
    assert await counter.read() == 7
    assert await counter.close(1.0) == 0
    assert redis_client.get("counter") == b"7"


async def test_counts_made_at_once_go_in_one_write(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = script_calls(redis_client)
    counter = RedisCounter(redis_url, "counter")
    for _ in range(500):
        counter.add()
    assert await counter.read() == 500
    assert await counter.close(1.0) == 0
    # One batch; a second call only if the script had to be loaded first.
    assert script_calls(redis_client) - before <= 2


def test_the_write_script_applies_each_sequence_number_once(redis_client: redis.Redis) -> None:
    apply = redis_client.register_script(APPLY_BATCH)
    writer = "counter:writer:test"
    assert apply(["counter", writer], [1, 5, 60]) == b"5"
    assert apply(["counter", writer], [1, 5, 60]) == b"5"  # the same batch resent: not applied
    assert apply(["counter", writer], [2, 3, 60]) == b"8"
    assert apply(["counter", writer], [1, 5, 60]) == b"8"
    assert redis_client.get("counter") == b"8"
    assert 0 < redis_client.ttl(writer) <= 60


def test_writers_are_independent(redis_client: redis.Redis) -> None:
    apply = redis_client.register_script(APPLY_BATCH)
    apply(["counter", "counter:writer:a"], [1, 5, 60])
    apply(["counter", "counter:writer:b"], [1, 2, 60])
    assert redis_client.get("counter") == b"7"


async def test_close_writes_what_is_pending(redis_url: str, redis_client: redis.Redis) -> None:
    counter = RedisCounter(redis_url, "counter")
    for _ in range(3):
        counter.add()
    # No await before: the background task never got to write.
    assert await counter.close(2.0) == 0
    assert redis_client.get("counter") == b"3"


async def test_close_resends_a_batch_whose_reply_was_lost(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Redis applied the batch but the reply never came: resending must not count it twice."""

    counter = RedisCounter(redis_url, "counter")
    counter.add()
    counter.add()
    batch = counter.ledger.next_batch()
    assert batch is not None
    keys, args = counter._args(batch)
    redis_client.register_script(APPLY_BATCH)(keys, args)  # applied, reply "lost"
    counter.add()
    assert await counter.close(2.0) == 0
    assert redis_client.get("counter") == b"3"


async def test_unreachable_redis_keeps_counts_pending() -> None:
    counter = RedisCounter(f"redis://127.0.0.1:{free_port()}/0", "counter")
    counter.add()
    counter.add()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await counter.read()
    assert counter.problem is not None and counter.problem.kind is FailureKind.UNREACHABLE
    assert str(counter.problem).startswith("Redis unreachable")
    assert counter.unwritten == 2
    assert await counter.close(0.5) == 2


async def test_non_integer_value_is_reported_and_not_overwritten(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("counter", "not a number")

    counter = RedisCounter(redis_url, "counter")
    with pytest.raises(CounterUnavailable, match="not an integer") as refused:
        await counter.read()
    assert refused.value.failure.kind is FailureKind.NOT_AN_INTEGER
    counter.add()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await counter.read()
    assert counter.problem is not None and counter.problem.kind is FailureKind.NOT_AN_INTEGER
    assert "not an integer" in str(counter.problem)
    assert counter.unwritten == 1
    assert redis_client.get("counter") == b"not a number"
    assert await counter.close(0.5) == 1


class CountsTwiceOnResend(RedisCounter):
    """The write path without its sequence check: a plain INCRBY, as the predecessor did."""

    apply_batch = "return redis.call('INCRBY', KEYS[1], ARGV[2])"


async def count_through_lost_reply(counter: RedisCounter, relay: Relay) -> int:
    relay.lose_next_write_reply(then="drop")
    for _ in range(5):
        counter.add()
    async with asyncio.timeout(10):
        value = await counter.read()
    assert relay.lost_replies == 1
    assert await counter.close(1.0) == 0
    return value


@pytest.fixture
def relay(redis_server: EmbeddedRedis, redis_url: str) -> Iterator[Relay]:
    """A relay to the test Redis (emptied by redis_url)."""
    relay = Relay(redis_server.port)
    relay.start()
    yield relay
    relay.stop()


@pytest.mark.parametrize(
    ("counter_class", "expected"),
    [
        (RedisCounter, 5),
        # Proves the relay really loses an applied write's reply: the naive write doubles it.
        (CountsTwiceOnResend, 10),
    ],
)
async def test_a_lost_reply_is_resent_and_counted_once(
    relay: Relay, redis_client: redis.Redis, counter_class: type[RedisCounter], expected: int
) -> None:
    counter = counter_class(f"redis://127.0.0.1:{relay.port}/0", "counter")
    assert await count_through_lost_reply(counter, relay) == expected
    assert redis_client.get("counter") == str(expected).encode()


async def test_counts_wait_while_redis_is_down_and_land_when_it_is_back(
    counts_pending: tuple[EmbeddedRedis, RedisCounter],
) -> None:
    server, counter = counts_pending
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await counter.read()
    assert counter.problem is not None and counter.problem.kind is FailureKind.UNREACHABLE
    assert counter.unwritten == 4
    server.start()  # same port, same data directory
    async with asyncio.timeout(15):
        assert await counter.read() == 5
    assert counter.problem is None
    assert await counter.close(1.0) == 0


async def test_a_reader_writes_the_counts_itself(redis_url: str, redis_client: redis.Redis) -> None:
    """read() writes without the background writer: waking it costs /status two trips through
    a busy event loop."""
    counter = RedisCounter(redis_url, "counter")
    counter.add()
    assert counter._task is not None
    counter._task.cancel()
    counter.add()
    async with asyncio.timeout(5):
        assert await counter.read() == 2
    assert redis_client.get("counter") == b"2"
    assert await counter.close(1.0) == 0


def test_the_clients_never_retry_on_their_own(redis_url: str) -> None:
    """redis-py retries by default, re-sending a write whose reply was lost: the writer
    resends itself, knowing it is the same batch."""
    counter = RedisCounter(redis_url, "counter")
    connection = counter._client.connection_pool.make_connection()
    assert connection.retry.get_retries() == 0
    with redis.Redis.from_url(redis_url, **client_options(redis.retry.Retry)) as client:
        assert client.connection_pool.make_connection().retry.get_retries() == 0


async def test_under_steady_load_writes_come_at_most_every_interval(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = script_calls(redis_client)
    counter = RedisCounter(redis_url, "counter")
    started = time.monotonic()
    for _ in range(100):  # a count every 5 ms, for half a second or more
        counter.add()
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    assert await counter.read() == 100
    assert await counter.close(1.0) == 0
    writes = script_calls(redis_client) - before
    # One write per interval, plus the one for read() and a script load; one a count without.
    assert writes <= elapsed / WRITE_INTERVAL + 3


async def test_a_lone_count_is_written_without_being_asked(
    redis_url: str, redis_client: redis.Redis
) -> None:
    counter = RedisCounter(redis_url, "counter")
    counter.add()
    # Polled from a thread: the writer needs this event loop.
    await asyncio.to_thread(
        wait_for, lambda: redis_client.get("counter") == b"1", 5, "the count in Redis"
    )
    assert await counter.close(1.0) == 0


@pytest.mark.parametrize(
    "start",
    [
        2**53 + 1,  # a double's integers run out: 2^53 + 3 would come back as 2^53 + 4
        2**63 - 10,  # near Redis's largest integer, which a double rounds up past it
    ],
)
async def test_the_value_comes_back_exactly_however_large(
    redis_url: str, redis_client: redis.Redis, start: int
) -> None:
    redis_client.set("counter", start)
    counter = RedisCounter(redis_url, "counter")
    counter.add()
    counter.add()
    assert await counter.read() == start + 2  # the value the write script returned
    for _ in range(4):
        counter.add()
    assert await counter.read() == start + 6
    assert await counter.close(1.0) == 0
    assert redis_client.get("counter") == str(start + 6).encode()


async def test_counting_past_the_largest_integer_is_an_error_and_loses_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    largest = 2**63 - 1
    redis_client.set("counter", largest)
    counter = RedisCounter(redis_url, "counter")
    counter.add()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await counter.read()
    assert counter.problem is not None and counter.problem.kind is FailureKind.ERROR
    assert "overflow" in str(counter.problem)
    assert counter.unwritten == 1
    assert redis_client.get("counter") == str(largest).encode()
    redis_client.set("counter", 0)  # someone resets the key: the count lands
    async with asyncio.timeout(10):
        assert await counter.read() == 1
    assert await counter.close(1.0) == 0
