"""Redis SIGKILLed while a write's reply is on its way, under load through a real mitmdump: the
proxy never hears that Redis applied the batch, and resends it to the restarted Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.http_client import counter_of, status_of
from tests.support.load import Load, Results
from tests.support.processes import Proxy, ProxyFactory, start_redis, wait_for
from tests.support.relay import Relay

KILLS = 3
CLIENTS = 8


@contextmanager
def killed_mid_write(
    tmp_path: Path,
    start_proxy: ProxyFactory,
    upstream: str,
    *args: str,
    after_restart: Callable[[Proxy], object] = lambda proxy: None,
    body: bytes = b"",
) -> Iterator[tuple[Proxy, EmbeddedRedis, Results]]:
    """A proxy (with `args`) under load (GETs, or POSTs of `body`) while Redis (AOF, fsync
    always) is SIGKILLed KILLS times just after it applied a batch whose reply is still on its
    way: the proxy never hears of it and resends the batch to the restarted Redis.

    The relay between proxy and Redis holds that reply back, so every kill loses one for
    certain (tests/unit/test_redis_counter.py shows a writer that numbers each send anew
    counting it twice, requests and classes). `after_restart` runs once /status is back to 200
    after each restart. Yields, once /status says every request answered was counted, the
    proxy, Redis, and the load's results (every request answered 200); stops Redis after.
    """
    server = start_redis(tmp_path / "redis", "--appendfsync", "always")
    relay = Relay(server.port)
    relay.start()
    try:
        proxy = start_proxy(upstream, f"redis://127.0.0.1:{relay.port}/0", *args)
        with Load(
            proxy.url, concurrency=CLIENTS, max_requests=100_000, max_seconds=150, body=body
        ) as load:
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
                after_restart(proxy)
            load.wait_for_more(300)
        results = load.results
        assert results.failed == []
        assert relay.lost_replies == KILLS
        wait_for(lambda: counter_of(proxy.url) == results.ok, 30, f"counter == {results.ok}")
        yield proxy, server, results
    finally:
        relay.stop()
        server.stop()
