"""End to end: Redis killed outright while writes are in flight; the count and the responses
by class stay exact."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.support.http_client import counter_of, status_of
from tests.support.load import Load
from tests.support.processes import ProxyFactory, start_redis, wait_for
from tests.support.relay import Relay

KILLS = 3


def test_redis_killed_mid_write_under_load_loses_and_doubles_nothing(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: str
) -> None:
    """SIGKILL Redis (AOF, fsync always) just after it applied a batch whose reply is still
    on its way: the proxy never hears of it and resends the batch to the restarted Redis.

    The relay between proxy and Redis holds that reply back, so every kill loses one for
    certain (tests/unit/test_redis_counter.py shows a writer that numbers each send anew
    counting it twice, requests and classes).
    """
    server = start_redis(tmp_path / "redis", "--appendfsync", "always")
    relay = Relay(server.port)
    relay.start()
    try:
        proxy = start_proxy(upstream, f"redis://127.0.0.1:{relay.port}/0")
        with Load(proxy.url, concurrency=8, max_requests=100_000, max_seconds=150) as load:
            for _ in range(KILLS):
                load.wait_for_more(300)
                relay.lose_next_write_reply(then="hold")
                wait_for(relay.reply_held.is_set, 30, "an applied write's reply to hold back")
                assert server.process is not None
                server.process.kill()
                server.process.wait()
                load.wait_for_more(300)  # the proxy serves on without Redis
                server.start()
                # The lost batch has been resent (and skipped) before the relay is armed again.
                wait_for(lambda: status_of(proxy.url).status_code == 200, 30, "/status back to 200")
            load.wait_for_more(300)
        results = load.results
        assert results.failed == []
        assert relay.lost_replies == KILLS
        wait_for(lambda: counter_of(proxy.url) == results.ok, 30, f"counter == {results.ok}")
        with redis.Redis.from_url(server.url) as client:
            assert client.get("counter") == str(results.ok).encode()
            # Every response was a 200, in the same batches: exact too.
            assert client.hgetall("{counter}:responses") == {b"2xx": str(results.ok).encode()}
    finally:
        relay.stop()
        server.stop()
