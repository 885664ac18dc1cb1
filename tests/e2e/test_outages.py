"""End to end: Redis going away and coming back, stalling writes or holding a non-integer, and
the proxy shutting down with counts pending. Proxying must never notice; no count is lost or
counted twice unless the shutdown says so, with the right number.

Each test that stops, restarts or pauses Redis runs its own redis-server (`own_redis`).
"""

from __future__ import annotations

import re
import signal
import statistics
import time

import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.http_client import (
    concurrent_gets,
    counter_is,
    counter_of,
    is_count,
    poll_status,
    send,
    status_json,
)
from tests.support.load import bounded_load, ms
from tests.support.processes import Proxy, ProxyFactory, lines_with, wait_for
from tests.support.redis_admin import admin_of, script_calls, stored

UNREACHABLE = "Redis unreachable"
BACK = "Redis is back"
NOT_AN_INTEGER = "not an integer"
COULD_NOT_BE_WRITTEN = "could not be written"
# A request that waited on Redis would take at least redis-py's command timeout (2.5 s).
LATENCY_LIMIT = 2.5
# How long /status may take to report an outage, and to recover after Redis is back.
OUTAGE_NOTICED = 5.0
RECOVERY = 15.0
# The shutdown waits at most 3 s for Redis; mitmdump needs a little more to exit.
CLOSE_TIMEOUT = 3.0
EXIT_MARGIN = 3.0
BURST = 300
BURST_CONNECTIONS = 20
BURST_TIMEOUT = 60.0
# Shorter than the proxy's 2.5 s command timeout: the writer waits instead of failing.
PAUSE_MS = 800


def is_outage(code: int, body: dict[str, object]) -> bool:
    """A 503 with the specified fields and counts pending."""
    if code != 503 or not {"error", "uptime", "pending"} <= set(body):
        return False
    error, uptime, pending = body["error"], body["uptime"], body["pending"]
    return (
        isinstance(error, str)
        and bool(error)
        and is_count(uptime)
        and isinstance(pending, int)
        and not isinstance(pending, bool)
        and pending > 0
    )


def burst(url: str, count: int = BURST) -> int:
    """`count` GETs as fast as `BURST_CONNECTIONS` connections go; how many got a 200."""
    responses = concurrent_gets(f"{url}/burst", count, BURST_CONNECTIONS, BURST_TIMEOUT)
    assert len(responses) == count
    return [r.status_code for r in responses].count(200)


def stop_timed(proxy: Proxy, sig: int = signal.SIGTERM) -> tuple[int, float]:
    """SIGTERM (or `sig`) to the proxy; its exit code and how long it took to exit."""
    start = time.monotonic()
    code = proxy.stop(sig)
    return code, time.monotonic() - start


# --- 1. Redis stopped and restarted under traffic ----------------------------------------------


def test_redis_stopped_under_load_then_back(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    p = start_proxy(upstream, own_redis.url)
    with bounded_load(p.url, 8) as load:
        load.wait_for_more(300)
        outage_from = len(load.results.latencies)
        own_redis.stop()
        stopped_at = time.monotonic()

        _, body = poll_status(p.url, is_outage, OUTAGE_NOTICED + 5, "a 503 with pending counts")
        noticed_after = time.monotonic() - stopped_at
        assert noticed_after <= OUTAGE_NOTICED, f"/status answered 503 after {noticed_after:.1f}s"
        # Requests keep flowing while Redis is away, and the writer retries meanwhile.
        load.wait_for_more(400)
        wait_for(lambda: bool(lines_with(p, UNREACHABLE)), 10, "the unreachable-Redis warning")
        load.wait_for_more(200)
        outage_to = len(load.results.latencies)

        own_redis.start()  # same port, same data directory
        restarted_at = time.monotonic()
        poll_status(p.url, lambda c, _: c == 200, RECOVERY, "/status 200 once Redis is back")
        recovered_after = time.monotonic() - restarted_at
        load.wait_for_more(200)
    results = load.results

    assert results.failed == [], results.failed[:10]
    before = results.latencies[:outage_from]
    during = results.latencies[outage_from:outage_to]
    print(
        f"\n{results.ok} requests; latency median before the outage {ms(statistics.median(before))}"
        f" ({len(before)} requests), during {ms(statistics.median(during))} ({len(during)}),"
        f" worst during {ms(max(during))}, worst overall {ms(results.worst())};"
        f" 503 after {noticed_after:.2f}s: {body}; 200 again {recovered_after:.2f}s after restart"
    )
    assert max(during) < LATENCY_LIMIT, f"a request took {max(during):.2f}s during the outage"

    poll_status(p.url, counter_is(results.ok), RECOVERY, f"counter == {results.ok}")
    assert stored(own_redis) == str(results.ok).encode()
    # The responses (all 200s) waited through the outage with the requests, and landed once.
    with admin_of(own_redis) as client:
        assert client.hgetall("{counter}:responses") == {b"2xx": str(results.ok).encode()}

    unreachable = lines_with(p, UNREACHABLE)
    back = lines_with(p, BACK)
    print(f"log: {len(unreachable)} x {unreachable}, {len(back)} x {back}")
    assert len(unreachable) == 1, unreachable
    assert len(back) == 1, back
    output = p.output()
    assert output.index(unreachable[0]) < output.index(back[0])


# --- 2. SIGTERM to the proxy with counts pending -----------------------------------------------


def test_sigterm_right_after_burst_writes_every_count(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url)
    ok = burst(p.url)
    seen = redis_client.get("counter")  # only what the writer managed before the signal
    code, took = stop_timed(p)
    print(f"\nburst of {BURST}: {ok} ok, key {seen!r} at SIGTERM, exit {code} after {took:.2f}s")
    assert ok == BURST
    assert code == 0, p.output()
    assert redis_client.get("counter") == str(ok).encode()
    assert not lines_with(p, COULD_NOT_BE_WRITTEN), p.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_while_redis_pauses_writes(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str, sig: signal.Signals
) -> None:
    p = start_proxy(upstream, own_redis.url)
    with redis.Redis.from_url(own_redis.url, socket_timeout=5) as client:
        ok = burst(p.url)
        pausing_at = time.monotonic()
        client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        # Counted after the pause began, so they are pending across the shutdown.
        send(p.url, "/after-pause", 5)
        ok += 5
        seen = client.get("counter")  # reads are not paused
        seen_within_pause = time.monotonic() - pausing_at < PAUSE_MS / 1000
        code, took = stop_timed(p, sig)
        since_pause = time.monotonic() - pausing_at
        value = client.get("counter")
    print(
        f"\n{ok} ok, key {seen!r} just before {sig.name}; exit {code} {took:.2f}s after {sig.name},"
        f" {since_pause:.2f}s after the pause began"
    )
    if seen_within_pause:  # else the machine was too slow to see the pause from here
        assert int(seen or 0) < ok, (seen, ok)
    assert code == 0, p.output()
    assert value == str(ok).encode(), (value, ok)
    assert not lines_with(p, COULD_NOT_BE_WRITTEN), p.output()
    # The shutdown waited for the pause to end (its writes were held until then).
    assert since_pause >= PAUSE_MS / 1000, since_pause
    assert took < CLOSE_TIMEOUT + EXIT_MARGIN, took


def test_sigterm_with_redis_stopped_reports_lost_counts(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    p = start_proxy(upstream, own_redis.url)
    send(p.url, "/before", 10)
    assert counter_of(p.url) == 10
    own_redis.stop()
    send(p.url, "/while-down", 17)
    code, body = status_json(p.url)
    assert is_outage(code, body), (code, body)
    pending = body["pending"]
    assert pending == 17, body
    # Nothing is sent between that answer and the signal.
    exit_code, took = stop_timed(p)
    lost = lines_with(p, COULD_NOT_BE_WRITTEN)
    print(f"\npending {pending}; exit {exit_code} after {took:.2f}s; {lost}")
    assert exit_code == 0, p.output()
    assert took < CLOSE_TIMEOUT + EXIT_MARGIN, f"exited {took:.1f}s after SIGTERM"
    assert len(lost) == 1, p.output()
    match = re.search(r"(\d+) counts could not be written", lost[0])
    assert match is not None and int(match.group(1)) == pending, lost[0]
    # The lost counts really were not written: Redis holds what was written before.
    own_redis.start()
    assert stored(own_redis) == b"10"


# --- 3. Two proxies on one Redis through an outage ---------------------------------------------


def test_two_proxies_through_an_outage(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    a = start_proxy(upstream, own_redis.url)
    b = start_proxy(upstream, own_redis.url)
    with bounded_load(a.url, 4) as load_a, bounded_load(b.url, 4) as load_b:
        for load in (load_a, load_b):
            load.wait_for_more(100)
        own_redis.stop()
        for proxy in (a, b):
            poll_status(proxy.url, is_outage, OUTAGE_NOTICED + 5, f"a 503 from {proxy.url}")
        for load in (load_a, load_b):
            load.wait_for_more(200)
        own_redis.start()
        for load in (load_a, load_b):
            load.wait_for_more(100)
    total = load_a.results.ok + load_b.results.ok
    print(f"\n{load_a.results.ok} + {load_b.results.ok} = {total} requests")
    assert load_a.results.failed == [], load_a.results.failed[:10]
    assert load_b.results.failed == [], load_b.results.failed[:10]

    wait_for(lambda: stored(own_redis) == str(total).encode(), RECOVERY, f"the key == {total}")
    assert counter_of(a.url) == total
    assert counter_of(b.url) == total
    assert stored(own_redis) == str(total).encode()
    for proxy in (a, b):
        assert len(lines_with(proxy, UNREACHABLE)) == 1, lines_with(proxy, UNREACHABLE)
        assert len(lines_with(proxy, BACK)) == 1, lines_with(proxy, BACK)


# --- 4. A value under the key that is not an integer -------------------------------------------


def test_non_integer_value_under_the_key(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    p = start_proxy(upstream, redis_url)
    send(p.url, "/fine", 10)
    assert counter_of(p.url) == 10

    redis_client.set("counter", "abc")
    writes = script_calls(redis_client)
    send(p.url, "/bad-value", 5)
    wait_for(lambda: bool(lines_with(p, NOT_AN_INTEGER)), 10, "the not-an-integer warning")
    code, body = status_json(p.url)
    assert is_outage(code, body), (code, body)
    assert NOT_AN_INTEGER in str(body["error"]), body
    assert body["pending"] == 5, body

    send(p.url, "/still-bad", 7)
    code, body = status_json(p.url)
    assert is_outage(code, body), (code, body)
    assert NOT_AN_INTEGER in str(body["error"]), body
    assert body["pending"] == 12, body
    # The writer has tried again and again, each time leaving the value alone.
    wait_for(lambda: script_calls(redis_client) >= writes + 4, 10, "four write attempts")
    assert redis_client.get("counter") == b"abc"
    warnings = lines_with(p, NOT_AN_INTEGER)
    print(f"\n503 {body}; {script_calls(redis_client) - writes} write attempts; log: {warnings}")
    assert len(warnings) == 1, warnings

    redis_client.set("counter", 100)
    poll_status(p.url, counter_is(100 + 12), RECOVERY, "counter == 112")
    assert redis_client.get("counter") == b"112"
    assert len(lines_with(p, NOT_AN_INTEGER)) == 1, lines_with(p, NOT_AN_INTEGER)
