"""End to end: Redis faults injected for real while traffic flows through a real mitmdump.

Redis stalls (CLIENT PAUSE ... WRITE, DEBUG SLEEP), has its connections killed again and again
(CLIENT KILL), or refuses the proxy (NOAUTH, WRONGPASS, NOPERM) until fixed at runtime. Proved:
proxied requests never wait on Redis nor fail, /status answers in bounded time, the log has
one line per state change and never a password, and afterwards the counter equals the number
of proxied requests exactly (0 lost, 0 counted twice).

Every test runs its own redis-server: each changes server state (pauses, kills, passwords,
ACL users) that must not leak into other tests.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.http_client import counter_is, poll_status, send, status_json
from tests.support.load import Results, bounded_load, ms
from tests.support.processes import Proxy, ProxyFactory, lines_with, wait_for
from tests.support.redis_admin import admin_of, key_value, script_calls

UNREACHABLE = "Redis unreachable"
REFUSED = "Redis refused us"
OTHER_ERROR = "Redis error"
BACK = "Redis is back"

LOAD_CONCURRENCY = 8
# Requests to see succeed before a fault (a baseline latency) and after it (the "during"
# window then includes requests that were in flight when the stall ended).
WARM_UP = 160
AFTER = 100
# Longer than the proxy's 2.5 s command timeout: the write in flight times out and is sent
# again on a new connection, the case where a resend must not count twice.
PAUSE_MS = 4000
SLEEP_SECONDS = 3
# /status gives up on Redis after 1.5 s; 5 s leaves room for a busy machine and still fails a
# /status that hangs on Redis.
STATUS_BOUND = 5.0
# A request that waited on Redis would take at least the command timeout (2.5 s) or the stall.
LATENCY_LIMIT = 2.5
# The median latency during a stall may grow this much (CPU shared with the load and other
# test runs), with a floor far below any stall: a request waiting on Redis would take seconds.
MEDIAN_FACTOR = 4.0
MEDIAN_FLOOR = 0.5
# The writer's backoff is capped at 5 s: once Redis is fine the counts land within that.
RECOVERY = 15.0
KILL_INTERVAL = 0.1
KILL_SECONDS = 5.0
KILL_ROUNDS = 60
STATUS_EVERY = 5
BEFORE_FIX = 20
AFTER_FIX = 15


class Blocking(threading.Thread):
    """Sends one command from a connection of its own; `ended` is when its reply came."""

    def __init__(self, server: EmbeddedRedis, *command: str | int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.command = command
        self.ended: float | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with admin_of(self.server) as client:
                client.execute_command(*self.command)
        except Exception as e:  # reported by finish()
            self.error = e
        self.ended = time.monotonic()

    def finish(self) -> float:
        self.join(30)
        assert not self.is_alive(), f"{self.command} never returned"
        assert self.error is None, self.error
        assert self.ended is not None
        return self.ended


def asleep(server: EmbeddedRedis) -> bool:
    """Whether Redis fails to answer a PING within 0.3 s (it is busy in DEBUG SLEEP)."""
    # A raw socket: redis-py's default client retries timeouts for seconds.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        sock.settimeout(0.3)
        try:
            return not sock.recv(64).startswith(b"+PONG")
        except TimeoutError:
            return True


@dataclass
class StallFigures:
    status_code: int
    status_body: dict[str, object]
    status_took: float
    answered_while_stalled: bool
    stall_took: float


def check_stall_results(
    name: str, results: Results, stall_from: int, stall_to: int, figures: StallFigures
) -> None:
    """The load through the stall: nothing failed, nothing waited on Redis."""
    assert results.failed == [], results.failed[:10]
    before = results.latencies[WARM_UP // 2 : stall_from]
    during = results.latencies[stall_from:stall_to]
    print(
        f"\n{name}: stall of {figures.stall_took:.2f}s; {results.ok} requests; median latency"
        f" before {ms(statistics.median(before))} ({len(before)} requests), during"
        f" {ms(statistics.median(during))} ({len(during)}), worst during {ms(max(during))};"
        f" /status {figures.status_code} after {figures.status_took:.2f}s"
        f" (while stalled: {figures.answered_while_stalled}): {figures.status_body}"
    )
    assert len(during) >= 20, f"only {len(during)} requests during the stall"
    limit = max(MEDIAN_FACTOR * statistics.median(before), MEDIAN_FLOOR)
    assert statistics.median(during) < limit, (statistics.median(during), limit)
    assert max(during) < LATENCY_LIMIT, f"a request took {max(during):.2f}s during the stall"

    assert figures.status_took < STATUS_BOUND, f"/status took {figures.status_took:.2f}s"
    assert figures.status_code in (200, 503), (figures.status_code, figures.status_body)
    if figures.answered_while_stalled:
        # No count can reach Redis while it stalls, so the only honest answer then is 503.
        assert figures.status_code == 503, figures.status_body
        assert set(figures.status_body) == {"error", "uptime", "pending"}, figures.status_body


def counted_exactly(p: Proxy, server: EmbeddedRedis, expected: int) -> None:
    """/status comes to answer `expected` (within RECOVERY), and Redis holds it."""
    poll_status(p.url, counter_is(expected), RECOVERY, f"/status counter == {expected}")
    with admin_of(server) as admin:
        assert key_value(admin) == str(expected).encode()


def check_log_after_stall(p: Proxy) -> None:
    unreachable, back = lines_with(p, UNREACHABLE), lines_with(p, BACK)
    print(f"log: {unreachable} {back}")
    # One stall, at most one state change each way (a timed-out write is resent at once and
    # succeeds when the stall ends), never one line per request.
    assert len(unreachable) <= 1, unreachable
    assert len(back) == len(unreachable), back
    assert not lines_with(p, REFUSED) and not lines_with(p, OTHER_ERROR), p.output()


def timed_status(url: str) -> tuple[int, dict[str, object], float, float]:
    """/status's code and body, how long it took, and when it answered."""
    start = time.monotonic()
    code, body = status_json(url)
    answered = time.monotonic()
    return code, body, answered - start, answered


# --- 1. Redis stalls under load ----------------------------------------------------------------


def test_client_pause_write_under_load(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    """CLIENT PAUSE WRITE holds the writer's script for 4 s: requests don't wait, /status
    answers in bounded time, and every count lands exactly once afterwards."""
    p = start_proxy(upstream, own_redis.url)
    with admin_of(own_redis) as admin, bounded_load(p.url, LOAD_CONCURRENCY) as load:
        load.wait_for_more(WARM_UP)
        stall_from = len(load.results.latencies)
        admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        paused_at = time.monotonic()
        # A write from here is held until the pause ends: its reply marks the end.
        probe = Blocking(own_redis, "SET", "probe", "1")
        probe.start()
        seen_before = key_value(admin)  # reads are not paused
        code, body, took, answered_at = timed_status(p.url)
        seen_after = key_value(admin)
        still_paused = probe.is_alive()
        ended = probe.finish()
        load.wait_for_more(AFTER)
        stall_to = len(load.results.latencies)
    results = load.results

    print(f"\nkey {seen_before!r} at the pause, {seen_after!r} after /status")
    if still_paused:
        assert seen_after == seen_before, "a count was written while writes were paused"
    figures = StallFigures(code, body, took, answered_at < ended, ended - paused_at)
    check_stall_results("CLIENT PAUSE WRITE", results, stall_from, stall_to, figures)
    assert ended - paused_at >= PAUSE_MS / 1000 * 0.9, "the pause did not hold writes"

    counted_exactly(p, own_redis, results.ok)
    check_log_after_stall(p)


def test_debug_sleep_under_load(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    """DEBUG SLEEP blocks the whole server for 3 s: requests don't wait, /status answers in
    bounded time, and every count lands exactly once afterwards."""
    p = start_proxy(upstream, own_redis.url)
    with bounded_load(p.url, LOAD_CONCURRENCY) as load:
        load.wait_for_more(WARM_UP)
        stall_from = len(load.results.latencies)
        sleeper = Blocking(own_redis, "DEBUG", "SLEEP", SLEEP_SECONDS)
        started = time.monotonic()
        sleeper.start()
        wait_for(lambda: asleep(own_redis), 5, "Redis to be asleep")
        code, body, took, answered_at = timed_status(p.url)
        ended = sleeper.finish()
        load.wait_for_more(AFTER)
        stall_to = len(load.results.latencies)
    results = load.results

    figures = StallFigures(code, body, took, answered_at < ended, ended - started)
    check_stall_results("DEBUG SLEEP", results, stall_from, stall_to, figures)
    assert ended - started >= SLEEP_SECONDS * 0.9, "Redis did not sleep"

    counted_exactly(p, own_redis, results.ok)
    check_log_after_stall(p)


# --- 2. Connections killed again and again -----------------------------------------------------


def test_connections_killed_under_load(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    """CLIENT KILL every 100 ms for 5 s under load: writes whose connection (or reply) is lost
    are resent without counting twice; the log has one line per state change."""
    p = start_proxy(upstream, own_redis.url)
    killed: list[int] = []
    status_answers: list[tuple[int, float]] = []
    with admin_of(own_redis) as admin, bounded_load(p.url, LOAD_CONCURRENCY) as load:
        load.wait_for_more(WARM_UP)
        start = time.monotonic()
        for round_ in range(KILL_ROUNDS):
            if time.monotonic() - start > KILL_SECONDS:
                break
            # SKIPME (the default) spares this connection: only the proxy's are killed.
            killed.append(admin.client_kill_filter(_type="normal"))
            if round_ % STATUS_EVERY == 0:
                code, _, took, _ = timed_status(p.url)
                status_answers.append((code, took))
            time.sleep(KILL_INTERVAL)  # pacing between kills, not waiting for anything
        load.wait_for_more(AFTER)
        scripts_run = script_calls(admin)
    results = load.results
    unreachable, back = lines_with(p, UNREACHABLE), lines_with(p, BACK)
    rounds_killing = sum(1 for n in killed if n)
    print(
        f"\n{len(killed)} kill rounds, {rounds_killing} killed something ({sum(killed)}"
        f" connections); {results.ok} requests, {len(results.failed)} failed; {scripts_run}"
        f" scripts run; /status (code, s): {status_answers}; log: {len(unreachable)} unreachable,"
        f" {len(back)} back: {unreachable[:3]}"
    )
    assert results.failed == [], results.failed[:10]
    assert rounds_killing > 0, "no connection of the proxy was ever killed"
    for code, took in status_answers:
        assert code in (200, 503) and took < STATUS_BOUND, status_answers

    counted_exactly(p, own_redis, results.ok)

    # A line per state change: at most one per connection killed, never one per request.
    assert len(unreachable) <= sum(killed), unreachable
    assert len(back) == len(unreachable), (unreachable, back)
    assert not lines_with(p, REFUSED) and not lines_with(p, OTHER_ERROR), p.output()


# --- 3. Redis refuses us, then is fixed at runtime ---------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A Redis set up to refuse the proxy, and the runtime fix."""

    # Returns the proxy's Redis URL and the password an admin now needs (if any).
    set_up: Callable[[redis.Redis, EmbeddedRedis], tuple[str, str | None]]
    fix: Callable[[redis.Redis], object]
    # What the log line and /status must say (any one of these), as Redis words it.
    problem: tuple[str, ...]
    # Strings that must never appear in the proxy's output.
    secrets: tuple[str, ...]


# Distinctive, so that any leak is found wherever it appears.
NOAUTH_PASSWORD = "Nq8-requirepass-4f1c2a"
RIGHT_PASSWORD = "Rt5-acl-password-9d7e3b"
WRONG_PASSWORD = "Wx2-url-password-6a0c8f"
USER = "counter-user"


def names(text: str, phrases: tuple[str, ...]) -> bool:
    return any(phrase in text for phrase in phrases)


def url_for(server: EmbeddedRedis, password: str, user: str = USER) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def acl_user(admin: redis.Redis, *rules: str) -> None:
    admin.execute_command("ACL", "SETUSER", USER, *rules)


def set_up_noauth(admin: redis.Redis, server: EmbeddedRedis) -> tuple[str, str | None]:
    admin.config_set("requirepass", NOAUTH_PASSWORD)
    return server.url, NOAUTH_PASSWORD


def set_up_wrongpass(admin: redis.Redis, server: EmbeddedRedis) -> tuple[str, str | None]:
    acl_user(admin, "on", f">{RIGHT_PASSWORD}", "~*", "+@all")
    return url_for(server, WRONG_PASSWORD), None


def set_up_noperm_keys(admin: redis.Redis, server: EmbeddedRedis) -> tuple[str, str | None]:
    acl_user(admin, "on", f">{RIGHT_PASSWORD}", "~elsewhere:*", "+@all")
    return url_for(server, RIGHT_PASSWORD), None


def set_up_noperm_script(admin: redis.Redis, server: EmbeddedRedis) -> tuple[str, str | None]:
    acl_user(admin, "on", f">{RIGHT_PASSWORD}", "~*", "+@all", "-@scripting")
    return url_for(server, RIGHT_PASSWORD), None


REFUSALS = {
    "NOAUTH": Refusal(
        set_up_noauth,
        lambda admin: admin.config_set("requirepass", ""),
        # Redis's own words for NOAUTH, or its code (redis-py strips the code).
        ("NOAUTH", "Authentication required"),
        (NOAUTH_PASSWORD,),
    ),
    "WRONGPASS": Refusal(
        set_up_wrongpass,
        lambda admin: acl_user(admin, f">{WRONG_PASSWORD}"),
        ("invalid username-password pair",),
        (RIGHT_PASSWORD, WRONG_PASSWORD),
    ),
    "NOPERM-keys": Refusal(
        set_up_noperm_keys,
        lambda admin: acl_user(admin, "allkeys"),
        ("no permissions to access one of the keys",),
        (RIGHT_PASSWORD,),
    ),
    "NOPERM-script": Refusal(
        set_up_noperm_script,
        lambda admin: acl_user(admin, "+@scripting"),
        ("no permissions to run the 'evalsha' command",),
        (RIGHT_PASSWORD,),
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_redis_refuses_us_until_fixed(
    own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str, name: str
) -> None:
    """Redis refuses the proxy: one clear log line without the password, /status 503 naming
    the problem, requests proxied all the same; fixed at runtime, every count lands once."""
    case = REFUSALS[name]
    with admin_of(own_redis) as admin:
        url, admin_password = case.set_up(admin, own_redis)
    p = start_proxy(upstream, url)

    send(p.url, "/before-fix", BEFORE_FIX)
    wait_for(lambda: bool(lines_with(p, REFUSED)), 10, f"the {REFUSED!r} line")
    code, body = status_json(p.url)
    print(f"\n{name}: /status {code} {body}")
    assert code == 503, (code, body)
    error = str(body.get("error"))
    assert REFUSED in error and names(error, case.problem), body
    assert body.get("pending") == BEFORE_FIX, body

    with admin_of(own_redis, admin_password) as admin:
        case.fix(admin)
        fixed_at = time.monotonic()
        send(p.url, "/after-fix", AFTER_FIX)
        poll_status(
            p.url,
            counter_is(BEFORE_FIX + AFTER_FIX),
            RECOVERY,
            f"/status counter == {BEFORE_FIX + AFTER_FIX}",
        )
        recovered_after = time.monotonic() - fixed_at
        assert key_value(admin) == str(BEFORE_FIX + AFTER_FIX).encode()

    refused, back = lines_with(p, REFUSED), lines_with(p, BACK)
    print(
        f"counted {BEFORE_FIX + AFTER_FIX} {recovered_after:.2f}s after the fix; {refused} {back}"
    )
    assert len(refused) == 1, refused
    assert names(refused[0], case.problem), refused
    if "@" in url:  # the URL is named, its password masked
        assert ":***@" in refused[0], refused
    assert len(back) == 1, back
    output = p.output()
    assert output.index(refused[0]) < output.index(back[0])
    assert not lines_with(p, UNREACHABLE) and not lines_with(p, OTHER_ERROR), output
    for secret in case.secrets:
        assert secret not in output, f"the password {secret!r} is in the proxy's output"
        assert secret not in error, body
