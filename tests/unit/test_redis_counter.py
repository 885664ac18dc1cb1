"""The Redis counter's write loop, against a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.retry

from counting_addon.code_class import CodeClass, no_responses
from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.batch import APPLY_BATCH, BatchKeys, ScriptCall
from counting_addon.store.client import client_options
from counting_addon.store.counter import (
    WRITE_INTERVAL,
    CounterUnavailable,
    RedisCounter,
)
from counting_addon.store.failures import FailureKind
from counting_addon.store.ledger import Batch, Ledger
from counting_addon.store.shared import Shared
from counting_addon.store.url import parse
from tests.support.in_process import BACKOFF_CAP
from tests.support.processes import poll, start_redis, stays_pending, unreachable_redis_url
from tests.support.redis_admin import admin_of, script_calls
from tests.support.relay import Relay

# What keeps a read waiting in the tests below: the write of its counts failed.
FAILED = "a failed write"


async def test_counts_reach_redis_and_read_back(redis_url: str, redis_client: redis.Redis) -> None:
    counter = RedisCounter(parse(redis_url), "counter")
    for _ in range(7):
        counter.add()
    assert await counter.read() == 7
    assert await counter.close(1.0) == 0
    assert redis_client.get("counter") == b"7"


async def test_counts_made_at_once_go_in_one_write(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = script_calls(redis_client)
    counter = RedisCounter(parse(redis_url), "counter")
    for _ in range(500):
        counter.add()
    assert await counter.read() == 500
    assert await counter.close(1.0) == 0
    # One batch; a second call only if the script had to be loaded first.
    assert script_calls(redis_client) - before <= 2


WRITER = "{counter}:writer:test"
RESPONSES = "{counter}:responses"
# The counter, the writer's key, the classes, the series of the (empty) counter_by list, the
# set of series lists, the bytes.
KEYS = ["counter", WRITER, RESPONSES, "{counter}:by:", "{counter}:by", "{counter}:bytes"]
Reply = list[bytes | int | None]


def apply_batch(
    client: redis.Redis,
    seq: int,
    requests: int,
    *responses: int,
    reset: bool = False,
    writer: str = "test",
) -> Reply:
    """The script applied to a batch (batch.py lays out its call): its sequence number and
    counts (the five classes 1xx first, missing ones 0), the reset flag, a writer key living
    60 s. The reply's counter and classes."""
    batch = Batch(seq, requests, (*responses, *[0] * (5 - len(responses))), reset)
    call = ScriptCall.of(BatchKeys.of("counter", writer), batch, writer_ttl=60, now=time.time())
    assert call.keys[2:6] == KEYS[2:]
    reply: Reply = client.register_script(APPLY_BATCH)(call.keys, call.args)
    return reply[:6]


def test_the_write_script_applies_each_sequence_number_once(redis_client: redis.Redis) -> None:
    assert apply_batch(redis_client, 1, 5, 0, 4, 1)[:3] == [b"5", None, b"4"]
    # The same batch resent: not applied.
    assert apply_batch(redis_client, 1, 5, 0, 4, 1) == [b"5", None, b"4", b"1", None, None]
    assert apply_batch(redis_client, 2, 3, 0, 0, 0, 0, 2) == [b"8", None, b"4", b"1", None, b"2"]
    assert apply_batch(redis_client, 1, 5, 0, 4, 1)[0] == b"8"
    assert redis_client.get("counter") == b"8"
    assert redis_client.hgetall(RESPONSES) == {b"2xx": b"4", b"3xx": b"1", b"5xx": b"2"}
    assert 0 < redis_client.ttl(WRITER) <= 60


def test_writers_are_independent(redis_client: redis.Redis) -> None:
    apply_batch(redis_client, 1, 5, 0, 5, writer="a")
    apply_batch(redis_client, 1, 2, 0, 1, 0, 1, writer="b")
    assert redis_client.get("counter") == b"7"
    assert redis_client.hgetall(RESPONSES) == {b"2xx": b"6", b"4xx": b"1"}


def test_a_class_that_is_not_an_integer_fails_the_batch_before_any_write(
    redis_client: redis.Redis,
) -> None:
    """A script failing halfway keeps what it wrote, and the resend would write it again."""
    redis_client.hset(RESPONSES, "4xx", "abc")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        apply_batch(redis_client, 1, 5, 0, 2, 0, 1)
    assert redis_client.get("counter") is None
    assert redis_client.hget(RESPONSES, "2xx") is None
    assert redis_client.get(WRITER) is None
    # Classes the batch does not touch may hold anything.
    assert apply_batch(redis_client, 1, 5, 0, 2)[:3] == [b"5", None, b"2"]


def test_a_reset_batch_zeroes_the_counter_and_every_class_once(redis_client: redis.Redis) -> None:
    apply_batch(redis_client, 1, 5, 1, 2, 3, 4, 5)
    assert apply_batch(redis_client, 2, 0, reset=True) == [b"0", None, None, None, None, None]
    assert apply_batch(redis_client, 3, 2, 0, 2) == [b"2", None, b"2", None, None, None]
    # The reset resent (its reply lost) is not applied again: later counts stay.
    assert apply_batch(redis_client, 2, 0, reset=True)[:3] == [b"2", None, b"2"]
    assert redis_client.get("counter") == b"2"


async def test_close_writes_what_is_pending(redis_url: str, redis_client: redis.Redis) -> None:
    counter = RedisCounter(parse(redis_url), "counter")
    for _ in range(3):
        counter.add()
    # No await before: the background task never got to write.
    assert await counter.close(2.0) == 0
    assert redis_client.get("counter") == b"3"


def send_with_reply_lost(counter: RedisCounter, client: redis.Redis) -> None:
    """The counter's next batch, taken and applied as its writer would, its reply "lost": the
    counter still holds it in flight, unacknowledged."""
    batch = counter.ledger.next_batch()
    assert batch is not None
    call = ScriptCall.of(counter.keys, batch, now=time.time())
    client.register_script(APPLY_BATCH)(call.keys, call.args)


async def test_close_resends_a_batch_whose_reply_was_lost(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Redis applied the batch but the reply never came: resending must not count it twice."""

    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    counter.add()
    send_with_reply_lost(counter, redis_client)
    counter.add()
    assert await counter.close(2.0) == 0
    assert redis_client.get("counter") == b"3"


async def test_responses_by_class_reach_redis_in_the_requests_batch(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = script_calls(redis_client)
    counter = RedisCounter(parse(redis_url), "counter")
    for code_class in [*[CodeClass.C2XX] * 3, CodeClass.C1XX, CodeClass.C5XX]:
        counter.add()
        counter.add_response(code_class)
    expected = no_responses() | {CodeClass.C1XX: 1, CodeClass.C2XX: 3, CodeClass.C5XX: 1}
    assert await counter.read_shared() == Shared(5, expected)
    assert counter.latest == Shared(5, expected)
    # One batch; a second call only if the script had to be loaded first.
    assert script_calls(redis_client) - before <= 2
    assert redis_client.hgetall("{counter}:responses") == {b"1xx": b"1", b"2xx": b"3", b"5xx": b"1"}
    assert await counter.close(1.0) == 0


async def test_read_shared_with_nothing_pending_reads_in_one_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("counter", 2**53 + 1)
    redis_client.hset("{counter}:responses", mapping={"2xx": 2**63 - 1, "4xx": 3})
    counter = RedisCounter(parse(redis_url), "counter", backoff_cap=BACKOFF_CAP)
    assert counter.latest is None
    shared = await counter.read_shared()
    assert shared.requests == 2**53 + 1
    assert shared.responses == no_responses() | {CodeClass.C2XX: 2**63 - 1, CodeClass.C4XX: 3}
    assert counter.latest == shared
    assert counter.redis_up
    redis_client.hset("{counter}:responses", "3xx", "x")
    with pytest.raises(CounterUnavailable, match="not an integer"):
        await counter.read_shared()
    assert not counter.redis_up
    counter.add_response(CodeClass.C3XX)
    await stays_pending(counter.read_shared(), lambda: counter.problem is not None, FAILED)
    assert counter.problem is not None and counter.problem.kind is FailureKind.NOT_AN_INTEGER
    assert "'{counter}:responses' is not an integer" in str(counter.problem)
    redis_client.hset("{counter}:responses", "3xx", 7)  # fixed: the count lands
    async with asyncio.timeout(10):
        assert (await counter.read_shared()).responses[CodeClass.C3XX] == 8
    assert await counter.close(1.0) == 0


async def test_classes_count_exactly_past_two_to_the_53(
    redis_url: str, redis_client: redis.Redis
) -> None:
    start = 2**53 + 1
    redis_client.hset("{counter}:responses", "2xx", start)
    counter = RedisCounter(parse(redis_url), "counter")
    for _ in range(2):
        counter.add_response(CodeClass.C2XX)
    assert (await counter.read_shared()).responses[CodeClass.C2XX] == start + 2
    assert redis_client.hget("{counter}:responses", "2xx") == str(start + 2).encode()
    assert await counter.close(1.0) == 0


async def test_redis_up_only_after_a_contact_and_until_a_write_fails(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        counter = RedisCounter(parse(server.url), "counter", backoff_cap=BACKOFF_CAP)
        assert not counter.redis_up  # never in contact
        counter.add()
        async with asyncio.timeout(10):
            assert (await counter.read_shared()).requests == 1
        assert counter.redis_up
        server.stop()
        counter.add()
        await stays_pending(counter.read_shared(), lambda: counter.problem is not None, FAILED)
        assert not counter.redis_up
        server.start()
        async with asyncio.timeout(15):
            assert (await counter.read_shared()).requests == 2
        assert counter.redis_up
        assert await counter.close(1.0) == 0
    finally:
        server.stop()


async def test_reset_zeroes_the_shared_counts_and_drops_the_pending_ones(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("counter", 40)
    redis_client.hset("{counter}:responses", mapping={"2xx": 30, "5xx": 10})
    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    counter.add_response(CodeClass.C2XX)
    counter.reset()  # the count above was not sent: it goes with the rest
    assert counter.unwritten == 0
    assert await counter.read_shared() == Shared(0)
    assert redis_client.get("counter") == b"0"
    assert redis_client.exists("{counter}:responses") == 0
    counter.add()
    counter.add_response(CodeClass.C4XX)
    assert (await counter.read_shared()).responses[CodeClass.C4XX] == 1
    assert redis_client.get("counter") == b"1"
    assert await counter.close(1.0) == 0


async def test_reset_comes_after_the_batch_in_flight(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A batch sent before the reset (here: applied, its reply lost) is zeroed by it, and not
    applied again when resent."""
    counter = RedisCounter(parse(redis_url), "counter")
    for _ in range(3):
        counter.add()
    send_with_reply_lost(counter, redis_client)
    counter.reset()
    counter.add()
    assert await counter.read() == 1
    assert await counter.close(1.0) == 0
    assert redis_client.get("counter") == b"1"


async def test_flush_writes_at_once_inside_the_interval(
    redis_url: str, redis_client: redis.Redis
) -> None:
    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    assert await counter.read() == 1  # a write just now: the next one would wait the interval
    counter.add()
    counter.flush()
    await poll(lambda: redis_client.get("counter") == b"2", 5, "the flushed count in Redis")
    assert await counter.close(1.0) == 0


async def test_unreachable_redis_keeps_counts_pending() -> None:
    counter = RedisCounter(parse(unreachable_redis_url()), "counter")
    counter.add()
    counter.add()
    await stays_pending(counter.read(), lambda: counter.problem is not None, FAILED)
    assert counter.problem is not None and counter.problem.kind is FailureKind.UNREACHABLE
    assert str(counter.problem).startswith("Redis unreachable")
    assert counter.unwritten == 2
    assert await counter.close(0.2) == 2


async def test_non_integer_value_is_reported_and_not_overwritten(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("counter", "not a number")

    counter = RedisCounter(parse(redis_url), "counter")
    with pytest.raises(CounterUnavailable, match="not an integer") as refused:
        await counter.read()
    assert refused.value.failure.kind is FailureKind.NOT_AN_INTEGER
    counter.add()
    await stays_pending(counter.read(), lambda: counter.problem is not None, FAILED)
    assert counter.problem is not None and counter.problem.kind is FailureKind.NOT_AN_INTEGER
    assert "not an integer" in str(counter.problem)
    assert counter.unwritten == 1
    assert redis_client.get("counter") == b"not a number"
    assert await counter.close(0.2) == 1


class RenumberingLedger(Ledger):
    """Numbers a batch anew each time it is sent, as a writer without idempotency would: the
    real script then applies a resent batch again."""

    def next_batch(self) -> Batch | None:
        if self.in_flight is not None:
            self._last_seq += 1
            self.in_flight = dataclasses.replace(self.in_flight, seq=self._last_seq)
        return super().next_batch()


async def count_through_lost_reply(counter: RedisCounter, relay: Relay) -> Shared:
    relay.lose_next_write_reply(then="drop")
    for code_class in [*[CodeClass.C2XX] * 3, *[CodeClass.C4XX] * 2]:
        counter.add()
        counter.add_response(code_class)
    async with asyncio.timeout(10):
        value = await counter.read_shared()
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
    ("ledger_class", "expected"),
    [
        (Ledger, 5),
        # Proves the relay really loses an applied write's reply: the naive write doubles it.
        (RenumberingLedger, 10),
    ],
)
async def test_a_lost_reply_is_resent_and_counted_once(
    relay: Relay, redis_client: redis.Redis, ledger_class: type[Ledger], expected: int
) -> None:
    counter = RedisCounter(parse(f"redis://127.0.0.1:{relay.port}/0"), "counter")
    counter.ledger = ledger_class()
    shared = await count_through_lost_reply(counter, relay)
    times = expected // 5
    assert shared.requests == expected
    assert shared.responses[CodeClass.C2XX] == 3 * times
    assert shared.responses[CodeClass.C4XX] == 2 * times
    assert redis_client.get("counter") == str(expected).encode()
    assert redis_client.hgetall("{counter}:responses") == {
        b"2xx": str(3 * times).encode(),
        b"4xx": str(2 * times).encode(),
    }


async def test_counts_wait_while_redis_is_down_and_land_when_it_is_back(
    counts_pending: tuple[EmbeddedRedis, RedisCounter],
) -> None:
    server, counter = counts_pending
    for code_class in (CodeClass.C2XX, CodeClass.C2XX, CodeClass.C5XX):
        counter.add_response(code_class)
    await stays_pending(counter.read(), lambda: counter.problem is not None, FAILED)
    assert counter.problem is not None and counter.problem.kind is FailureKind.UNREACHABLE
    assert counter.unwritten == 4
    server.start()  # same port, same data directory
    async with asyncio.timeout(15):
        assert await counter.read() == 5
    assert counter.problem is None
    shared = await counter.read_shared()
    assert (shared.responses[CodeClass.C2XX], shared.responses[CodeClass.C5XX]) == (2, 1)
    assert await counter.close(1.0) == 0
    with redis.Redis.from_url(server.url) as client:
        assert client.hgetall("{counter}:responses") == {b"2xx": b"2", b"5xx": b"1"}


async def test_a_reader_writes_the_counts_itself(redis_url: str, redis_client: redis.Redis) -> None:
    """read() writes without the background writer: waking it costs /status two trips through
    a busy event loop."""
    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    assert counter._task is not None
    counter._task.cancel()
    counter.add()
    async with asyncio.timeout(5):
        assert await counter.read() == 2
    assert redis_client.get("counter") == b"2"
    assert await counter.close(1.0) == 0


async def test_a_burst_of_reads_shares_one_read_and_one_connection(
    own_redis: EmbeddedRedis,
) -> None:
    """Twenty /status at once while nothing is pending: one read script, one connection (each
    opened its own before, and the pool kept them all). A Redis of the test's own: no other
    client comes or goes."""
    with admin_of(own_redis) as admin:
        admin.set("counter", 5)
        counter = RedisCounter(parse(own_redis.url), "counter")
        assert await counter.read() == 5  # the read script loaded, the connection open
        clients, reads = admin.info("clients")["connected_clients"], script_calls(admin)
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(counter.read_shared(windows=True) for _ in range(20)))
        assert {(a.requests, a.windows is not None) for a in answers} == {(5, True)}
        assert script_calls(admin) - reads == 1
        assert admin.info("clients")["connected_clients"] == clients
        assert await counter.close(1.0) == 0


async def test_a_read_that_waits_for_the_writer_gets_everything_from_its_write(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A reader that finds a write under way asks the writer's next batch for what it reads
    (here the windows): no read follows the write."""
    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    assert await counter.read() == 1  # the write script loaded
    calls = script_calls(redis_client)
    async with counter._writing:  # a write under way
        counter.add(second=int(time.time()))
        reader = asyncio.create_task(counter.read_shared(windows=True))
        await poll(lambda: counter._asked.windows, 5, "the reader to ask the writer")
    async with asyncio.timeout(10):
        shared = await reader
    assert shared.requests == 2
    assert shared.windows is not None and shared.windows.last_minute == 1
    assert script_calls(redis_client) - calls == 1
    assert await counter.close(1.0) == 0


async def test_a_read_that_takes_older_figures_does_not_wait_for_this_process_counts(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """own_counts=False (a poll that sent `Cache-Control: max-stale`): Redis's counts now, in
    one read, while a read that must include this process's counts waits for the writer."""
    redis_client.set("counter", 5)
    counter = RedisCounter(parse(redis_url), "counter")
    async with counter._writing:  # a write under way, its reply not yet come
        counter.add()
        await stays_pending(counter.read(), lambda: True, "the read to start")
        async with asyncio.timeout(5):
            shared = await counter.read_shared(windows=True, own_counts=False)
        assert (shared.requests, shared.windows is not None) == (5, True)
    async with asyncio.timeout(10):
        assert await counter.read() == 6
    assert await counter.close(1.0) == 0


def test_the_clients_never_retry_on_their_own(redis_url: str) -> None:
    """redis-py retries by default, re-sending a write whose reply was lost: the writer
    resends itself, knowing it is the same batch."""
    counter = RedisCounter(parse(redis_url), "counter")
    assert isinstance(counter.redis.client, redis.asyncio.Redis)
    connection = counter.redis.client.connection_pool.make_connection()
    assert connection.retry.get_retries() == 0
    with redis.Redis.from_url(redis_url, **client_options(redis.retry.Retry)) as client:
        assert client.connection_pool.make_connection().retry.get_retries() == 0


async def test_under_steady_load_writes_come_at_most_every_interval(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = script_calls(redis_client)
    counter = RedisCounter(parse(redis_url), "counter")
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
    counter = RedisCounter(parse(redis_url), "counter")
    counter.add()
    await poll(lambda: redis_client.get("counter") == b"1", 5, "the count in Redis")
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
    counter = RedisCounter(parse(redis_url), "counter")
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
    counter = RedisCounter(parse(redis_url), "counter", backoff_cap=BACKOFF_CAP)
    counter.add()
    await stays_pending(counter.read(), lambda: counter.problem is not None, FAILED)
    assert counter.problem is not None and counter.problem.kind is FailureKind.ERROR
    assert "overflow" in str(counter.problem)
    assert counter.unwritten == 1
    assert redis_client.get("counter") == str(largest).encode()
    redis_client.set("counter", 0)  # someone resets the key: the count lands
    async with asyncio.timeout(10):
        assert await counter.read() == 1
    assert await counter.close(1.0) == 0
