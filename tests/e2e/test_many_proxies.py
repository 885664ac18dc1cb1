"""End to end: four mitmdump processes on one Redis and one counter key, all under load at once.

Proved: every proxied request is answered 200; afterwards each proxy's /status, and the key in
Redis, hold exactly the number of requests answered (and the responses hash as many 2xx); the
batch script runs at most about ten times a second per proxy, whatever the request rate
(WRITE_INTERVAL), which the test checks against Redis's own `INFO commandstats`; and Redis
holds one writer key per proxy process, each expiring. The figures are printed: requests,
requests/s, script calls, script calls and commands per request, writer keys.
"""

from __future__ import annotations

import contextlib
import math
import time

import redis

from counting_addon.store.batch import WRITER_KEY_TTL
from counting_addon.store.counter import WRITE_INTERVAL
from counting_addon.store.keys import responses_key
from tests.support.http_client import counter_is, poll_status
from tests.support.load import Load
from tests.support.processes import ProxyFactory
from tests.support.redis_admin import command_calls, writer_keys

PROXIES = 4
# Connections per proxy: the four loads run in this one Python process, so more would measure
# the client's GIL rather than the proxies.
CONCURRENCY = 8
# Each load runs this long (the bound the test relies on: long enough for the rate of writes to
# dominate the constant below); its count bound only guards against a runaway.
LOAD_SECONDS = 10.0
LOAD_MAX_REQUESTS = 50_000
# Under load a counter starts a write at most once per WRITE_INTERVAL (_gather_counts waits
# out the rest of it since the previous write began), so over a window of T seconds a proxy
# writes at most T / WRITE_INTERVAL + 1 times; 5 % over that rate covers the window being
# measured from this process rather than at the proxies.
SCRIPT_CALLS_PER_SECOND = 1.05 / WRITE_INTERVAL
# Calls per proxy beyond that rate: the first write (at once, nothing to wait out), a first
# EVALSHA refused with NOSCRIPT (redis-py then loads the script), the last batch after the load
# ends, and the write-through of the /status reads below (a reader writes its proxy's pending
# counts itself rather than wait for the writer; at most once here, as nothing is counted after).
EXTRA_SCRIPT_CALLS_PER_PROXY = 4
# Commands each script call runs inside Redis, which INFO commandstats counts as well: GET of
# the writer key; the checks: HMGET of the classes and of the bytes, MGET of the buckets; the
# writes: INCRBY, HINCRBY (2xx only here), HINCRBY of the response bytes, an INCRBY for each
# of the buckets of its requests' second, minute and hour (a batch of 0.1 s spans at most two
# seconds, so 6 at most), SET of the writer key; the reply: HMGET, GET, HMGET.
COMMANDS_PER_SCRIPT_CALL = 1 + 1 + 3 + 3 + 6 + 1 + 3
# Besides, a PEXPIRE for each bucket made: one a second, a minute and an hour of the run.
# Commands per proxy outside the script: the connection's greeting (CLIENT SETINFO twice), the
# one-off CONFIG GET maxmemory-policy, SCRIPT LOAD, the GETs of the /status reads.
EXTRA_COMMANDS_PER_PROXY = 20
SETTLE_TIMEOUT = 60.0


def test_four_proxies_one_count(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    proxies = [start_proxy(upstream, redis_url) for _ in range(PROXIES)]
    before = command_calls(redis_client)
    loads = [
        Load(p.url, CONCURRENCY, max_requests=LOAD_MAX_REQUESTS, max_seconds=LOAD_SECONDS)
        for p in proxies
    ]
    started = time.monotonic()
    with contextlib.ExitStack() as running:  # should one fail, the others stop too
        for load in loads:
            running.enter_context(load)
        results = [load.finish() for load in loads]
    duration = time.monotonic() - started

    failed = [f for r in results for f in r.failed]
    assert not failed, f"{len(failed)} requests failed, first ones: {failed[:5]}"
    answered = sum(r.ok for r in results)
    assert answered > 0

    # Every proxy reads the same total: its own /status writes its pending counts first, and
    # the others' last batches follow within WRITE_INTERVAL.
    for p in proxies:
        poll_status(p.url, counter_is(answered), SETTLE_TIMEOUT, f"{p.url}/status at {answered}")
    after = command_calls(redis_client)
    assert redis_client.get("counter") == str(answered).encode()
    assert redis_client.hget(responses_key("counter"), "2xx") == str(answered).encode()

    calls = {name: n - before.get(name, 0) for name, n in after.items()}
    calls.pop("info", None)  # the test's own INFO, between the two snapshots
    calls = {name: n for name, n in calls.items() if n}
    script = calls.get("evalsha", 0) + calls.get("eval", 0)
    commands = sum(calls.values())
    keys = writer_keys(redis_client)
    ttls = {key: redis_client.ttl(key) for key in keys}

    print(
        f"\n{PROXIES} proxies x {CONCURRENCY} connections for {duration:.1f} s: "
        f"{answered} requests ({', '.join(str(r.ok) for r in results)}), "
        f"{answered / duration:.0f} req/s; {script} script calls "
        f"({script / duration / PROXIES:.1f}/s per proxy, {script / answered:.4f} per request); "
        f"{commands} Redis commands in all, scripts' inner ones included "
        f"({commands / answered:.4f} per request): {calls}; "
        f"{len(keys)} writer keys, TTLs {sorted(ttls.values())} s"
    )

    limit = PROXIES * (SCRIPT_CALLS_PER_SECOND * duration + EXTRA_SCRIPT_CALLS_PER_PROXY)
    assert PROXIES <= script <= limit, (script, limit)
    buckets_made = 3 * (math.ceil(duration) + 2)
    command_limit = (
        COMMANDS_PER_SCRIPT_CALL * script + buckets_made + PROXIES * EXTRA_COMMANDS_PER_PROXY
    )
    assert commands <= command_limit, calls

    # One writer key per proxy process (one counter each), each expiring within its TTL.
    assert len(keys) == PROXIES, keys
    assert all(0 < ttl <= WRITER_KEY_TTL for ttl in ttls.values()), ttls
