"""Requests counted by series (counter_by) in a real Redis: in the same batch as the total, so
the series sum to `counter` in every answer; capped across every proxy sharing the counter;
applied once however often a batch is resent; cleared by a reset, every list of labels."""

from __future__ import annotations

import json
import time

import pytest
import redis

from counting_addon.store.batch import APPLY_BATCH, ScriptCall
from counting_addon.store.counter import RedisCounter
from counting_addon.store.ledger import Values
from counting_addon.store.shared import OTHER, SeriesSpec, decode_values, encode_values
from counting_addon.store.url import parse

ROUTE_METHOD = SeriesSpec(("route", "method"), max_series=1000)


def counter(redis_url: str, series: SeriesSpec = ROUTE_METHOD) -> RedisCounter:
    return RedisCounter(parse(redis_url), "counter", series=series)


def add(c: RedisCounter, *requests: Values) -> None:
    for values in requests:
        c.add(values)


async def test_the_series_sum_to_the_counter_in_every_answer(
    redis_url: str, redis_client: redis.Redis
) -> None:
    c = counter(redis_url)
    add(c, ("/a", "GET"), ("/a", "GET"), ("/b", "POST"))
    shared = await c.read_shared()  # written by this read itself: the reply has the series
    assert shared.requests == 3
    assert shared.series == {("/a", "GET"): 2, ("/b", "POST"): 1}
    add(c, ("/b", "POST"))
    await c.close(1.0)
    assert redis_client.hgetall("{counter}:by:route,method") == {
        encode_values(("/a", "GET")).encode(): b"2",
        encode_values(("/b", "POST")).encode(): b"2",
    }
    again = await counter(redis_url).read_shared()  # nothing to write: the read script
    assert again.requests == 4 and again.series == {("/a", "GET"): 2, ("/b", "POST"): 2}
    assert sum(again.series.values()) == again.requests


@pytest.mark.parametrize(
    "values",
    [(), ("/a", "GET"), ('/a,"b"', "ü\\n"), ("\x00\x1f\x7f", "\u2028", "😀", "\\/"), ("\udcff",)],
)
def test_a_series_field_is_the_json_every_process_writes(values: Values) -> None:
    """The same text as json.dumps's, which fields written before were, and back."""
    field = encode_values(values)
    assert field == json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    assert decode_values(field) == values


async def test_values_of_any_text_keep_to_their_series(redis_url: str) -> None:
    c = counter(redis_url)
    odd = ('/a,"b"', "ü\\n")
    add(c, odd, ("/a", '"b",ü\\n'))
    assert (await c.read_shared()).series == {odd: 1, ("/a", '"b",ü\\n'): 1}
    await c.close(1.0)


async def test_past_the_cap_new_series_count_as_other_for_every_proxy(redis_url: str) -> None:
    """Two proxies share one counter with a cap of 2: the first two series anyone writes are
    kept, every later one goes to (other), and both read the same set."""
    capped = SeriesSpec(("route", "method"), max_series=2)
    one, two = counter(redis_url, capped), counter(redis_url, capped)
    add(one, ("/a", "GET"))
    await one.read_shared()
    add(two, ("/b", "GET"), ("/c", "GET"))
    await two.read_shared()
    add(one, ("/d", "PUT"), ("/a", "GET"), ("/c", "GET"))
    seen_by_one = await one.read_shared()
    seen_by_two = await two.read_shared()
    other = (OTHER, OTHER)
    assert seen_by_one.series == seen_by_two.series
    assert seen_by_one.series == {("/a", "GET"): 2, ("/b", "GET"): 1, other: 3}
    assert sum(seen_by_one.series.values()) == seen_by_one.requests == 6
    await one.close(1.0)
    await two.close(1.0)


async def test_a_resent_batch_counts_its_series_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Redis applied the batch and the reply was lost: the resend changes nothing."""
    c = counter(redis_url)
    add(c, ("/a", "GET"), ("/a", "GET"))
    batch = c.ledger.next_batch()
    assert batch is not None
    call = ScriptCall.of(c.keys, batch, c.series, now=time.time())
    redis_client.register_script(APPLY_BATCH)(call.keys, call.args)  # applied, reply "lost"
    add(c, ("/b", "GET"))
    shared = await c.read_shared()
    assert shared.requests == 3 and shared.series == {("/a", "GET"): 2, ("/b", "GET"): 1}
    await c.close(1.0)


async def test_a_reset_clears_every_list_of_series(
    redis_url: str, redis_client: redis.Redis
) -> None:
    earlier = counter(redis_url, SeriesSpec(("client",), 10))
    add(earlier, ("127.0.0.1",))
    await earlier.close(1.0)
    c = counter(redis_url)
    add(c, ("/a", "GET"))
    await c.read_shared()
    assert redis_client.exists("{counter}:by:client", "{counter}:by:route,method") == 2
    c.reset()
    add(c, ("/b", "GET"))
    shared = await c.read_shared()
    assert shared.requests == 1 and shared.series == {("/b", "GET"): 1}
    assert redis_client.exists("{counter}:by:client") == 0
    assert redis_client.smembers("{counter}:by") == {b"{counter}:by:route,method"}
    await c.close(1.0)


async def test_without_labels_there_are_no_series(
    redis_url: str, redis_client: redis.Redis
) -> None:
    c = counter(redis_url, SeriesSpec())
    c.add()
    shared = await c.read_shared()
    assert shared.requests == 1 and shared.series is None
    await c.close(1.0)
    assert redis_client.keys("{counter}:by*") == []
