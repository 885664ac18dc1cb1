"""End to end: options changed at runtime and the -s script reloaded while Redis is down.

Neither may make a request wait: a client sending a GET every 20 ms sees no gap above 100 ms.
The replaced counter keeps its counts and writes them once Redis is back: the old and the new
key (or Redis) together hold exactly the requests answered, each where it was counted.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.http_client import counter_of, send
from tests.support.mitmweb import start_web
from tests.support.processes import (
    Proxy,
    ProxyFactory,
    reload_script,
    script_copy,
    start_redis,
    wait_for,
)

TICK = 0.02
# No request may wait: the longest gap between two answers across the change stays within
# this, or, on a machine so busy that the same client sees longer gaps without any change
# (the control: as many ticks just before), within twice the control's longest. A request
# that waited on Redis would show a gap of seconds either way.
LONGEST_GAP = 0.1
CONTROL_TICKS = 25
BEFORE = 10  # requests counted before Redis goes down
DURING = 5  # and sent while it is down, before the change
# How long the ticks go on after the change or reload took effect.
TICKS_AFTER = 25
RECOVERY = 20.0
# Long enough to cover the reload and the ticks after it.
PAUSE_MS = 6000
# Shutdown's bound for writing the last counts, and what mitmdump needs besides to exit.
CLOSE_TIMEOUT = 3.0
EXIT_MARGIN = 3.0
LOST = "could not be written"
WRITTEN = "are written"


class Ticker(threading.Thread):
    """A client sending a GET every TICK seconds on one keep-alive connection, until stopped
    or `max_seconds` pass; it notes when each answer came."""

    def __init__(self, url: str, max_seconds: float = 90.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_seconds = max_seconds
        self.answered_at: list[float] = []
        self.failed: list[str] = []
        self._stop = threading.Event()

    def run(self) -> None:
        started = next_at = time.monotonic()
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
                try:
                    r = client.get(f"{self.url}/tick/{len(self.answered_at)}")
                except httpx.HTTPError as e:
                    self.failed.append(repr(e))
                    return
                if r.status_code != 200:
                    self.failed.append(f"{r.status_code} {r.text[:100]}")
                    return
                self.answered_at.append(time.monotonic())
                next_at += TICK
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    @classmethod
    def running(cls, url: str) -> Ticker:
        """A Ticker started, once it has had its first answers."""
        ticker = cls(url)
        ticker.start()
        ticker.wait_for_more(CONTROL_TICKS)
        return ticker

    @property
    def answered(self) -> int:
        return len(self.answered_at)

    def wait_for_more(self, count: int) -> None:
        target = self.answered + count
        wait_for(lambda: self.answered >= target or not self.is_alive(), 30, f"{count} ticks")
        assert not self.failed, self.failed

    def finish(self, changed_at: int, what: str) -> None:
        """Stop, and check the gaps between answers from answer `changed_at` on against
        LONGEST_GAP and the control before it."""
        self._stop.set()
        self.join(15)
        assert not self.failed, self.failed
        times = self.answered_at
        assert changed_at >= CONTROL_TICKS
        control = max(b - a for a, b in itertools.pairwise(times[:changed_at]))
        gap = max(b - a for a, b in itertools.pairwise(times[changed_at - 1 :]))
        print(
            f"\n{what}: longest gap between answers {gap * 1000:.0f} ms "
            f"(control before: {control * 1000:.0f} ms)"
        )
        allowed = max(LONGEST_GAP, 2 * control)
        assert gap <= allowed, f"a request waited: {gap * 1000:.0f} ms between answers"


def counts_pending(url: str, server: EmbeddedRedis) -> None:
    """BEFORE requests counted, then Redis stopped and DURING more sent: their counts wait."""
    send(url, "/before", BEFORE)
    assert counter_of(url) == BEFORE
    server.stop()
    send(url, "/during", DURING)


def wait_for_keys(
    server: EmbeddedRedis, check: Callable[[list[int]], bool], keys: list[str], what: str
) -> list[int]:
    """Poll the values of `keys` until `check` accepts them; those values."""
    seen: list[int] = []
    with redis.Redis.from_url(server.url) as client:

        def accepted() -> bool:
            seen[:] = [int(v or 0) for v in client.mget(keys)]
            return check(seen)

        try:
            wait_for(accepted, RECOVERY, what)
        except AssertionError as e:
            raise AssertionError(f"{e}: {dict(zip(keys, seen, strict=True))}") from None
    return seen


@pytest.mark.parametrize("change", ["counter_key", "counter_redis_url"])
def test_option_change_with_redis_down_never_blocks_and_loses_nothing(
    tmp_path: Path, start_proxy: ProxyFactory, upstream: str, change: str
) -> None:
    """Through mitmweb's API (PUT /options, as its option editor does), with Redis down:
    counter_key changed on the same Redis, or counter_redis_url moved to another one."""
    old = start_redis(tmp_path / "old")
    new = start_redis(tmp_path / "new") if change == "counter_redis_url" else old
    try:
        with start_web(start_proxy, upstream, old.url, "--set", "counter_key=before") as web:
            url = web.proxy.url
            counts_pending(url, old)
            ticker = Ticker.running(url)
            sent_before = ticker.answered
            web.set_options(**{change: "after" if change == "counter_key" else new.url})
            sent_after = ticker.answered
            ticker.wait_for_more(TICKS_AFTER)
            ticker.finish(sent_before, f"{change} changed")

            old.start()  # same port, same data: the old counter's counts land
            total = BEFORE + DURING + ticker.answered
            if change == "counter_key":
                before, after = wait_for_keys(
                    old, lambda v: sum(v) == total, ["before", "after"], f"{total} counts"
                )
            else:
                (before,) = wait_for_keys(
                    old, lambda v: v[0] >= BEFORE + DURING + sent_before, ["before"], "old"
                )
                (after,) = wait_for_keys(
                    new, lambda v: before + v[0] == total, ["before"], f"{total} counts"
                )
            assert before + after == total
            assert before >= BEFORE + DURING + sent_before, (before, after)
            # The ticker has one request in flight: sent (and counted) before the change took
            # effect, it may be answered after the PUT returned.
            assert after >= ticker.answered - sent_after - 1, (before, after)
            assert counter_of(url) == after
            output = web.proxy.output()
            assert LOST not in output, output
            assert WRITTEN in output, output
    finally:
        old.stop()
        new.stop()


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_script_reload_with_redis_away_never_blocks_and_loses_nothing(
    tmp_path: Path, own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str, fault: str
) -> None:
    """The -s script edited (so mitmproxy reloads it) while Redis is stopped, or stalled by
    CLIENT PAUSE: the old instance's counts are written in the background once Redis is back,
    not dropped nor written twice."""
    script = script_copy(tmp_path)
    proxy: Proxy = start_proxy(upstream, own_redis.url, script=script)
    url = proxy.url
    if fault == "stopped":
        counts_pending(url, own_redis)
    else:
        send(url, "/before", BEFORE)
        assert counter_of(url) == BEFORE
        with redis.Redis.from_url(own_redis.url) as admin:
            admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        paused_at = time.monotonic()
        send(url, "/during", DURING)
    ticker = Ticker.running(url)
    changed_at = ticker.answered
    reload_script(proxy, script)
    ticker.wait_for_more(TICKS_AFTER)
    ticker.finish(changed_at, f"script reloaded, Redis {fault}")

    if fault == "stopped":
        own_redis.start()
    else:
        assert time.monotonic() - paused_at < PAUSE_MS / 1000, "the pause ended too soon"
    total = BEFORE + DURING + ticker.answered
    wait_for_keys(own_redis, lambda v: v[0] == total, ["counter"], f"{total} counts")
    assert counter_of(url) == total
    output = proxy.output()
    assert LOST not in output, output
    assert output.count(WRITTEN) == 1, output
    assert proxy.stop() == 0
    # Nothing written twice, the shutdown's last writes included.
    wait_for_keys(own_redis, lambda v: v[0] == total, ["counter"], f"still {total} counts")


def test_shutdown_after_a_reload_with_redis_down_is_bounded_and_reports_each_counter(
    tmp_path: Path, own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    """SIGTERM with Redis down, the old instance's counter still retiring: the shutdown waits
    its 3 s for both, not the retirement's minutes, and each reports what it lost."""
    script = script_copy(tmp_path)
    proxy: Proxy = start_proxy(upstream, own_redis.url, script=script)
    url = proxy.url
    counts_pending(url, own_redis)
    reload_script(proxy, script)
    send(url, "/after", 7)
    started = time.monotonic()
    assert proxy.stop() == 0
    took = time.monotonic() - started
    lost = sorted(int(n) for n in re.findall(rf"(\d+) counts {LOST}", proxy.output()))
    print(f"\nexited {took:.2f}s after SIGTERM; lost {lost}")
    assert took < CLOSE_TIMEOUT + EXIT_MARGIN, f"exited {took:.1f}s after SIGTERM"
    assert lost == [DURING, 7], proxy.output()
    own_redis.start()
    wait_for_keys(own_redis, lambda v: v[0] == BEFORE, ["counter"], "the counts written before")
