"""End to end: counting over TLS (rediss://) to a real redis-server that speaks only TLS.

Counts arrive exactly through TLS. A server whose certificate the proxy does not trust, and a
scheme that does not match the server (rediss:// to plain Redis, redis:// to the TLS port), are
each one log line and a 503 from /status naming the problem, however often the writer retries;
proxying goes on, every count waits in memory, and shutdown reports exactly those as lost.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.http_client import counter_of, gets_all_ok, status_json, status_of
from tests.support.processes import Process, Proxy, ProxyFactory, free_port, proxy_command, wait_for
from tests.support.redis_admin import script_calls
from tests.support.tls import (
    HOW_TO_GET_ONE,
    Certificates,
    TLSRedis,
    find_tls_server,
    issue_server_cert,
    make_ca,
    tls_url,
)

# Proxied requests in the counting test, sent over this many connections at once so that the
# counts reach Redis in several batched writes.
REQUESTS = 300
CONNECTIONS = 10
BURST_TIMEOUT = 60.0
# Proxied requests sent before, and again after, watching Redis fail: each is a pending count.
FAILING_REQUESTS = 25
# The proxy reports a failed write within a second or two; generous for a busy 2-core machine.
NOTICED = 20.0
# /status waits at most 1.5 s for Redis before its 503; the margin absorbs a busy machine.
STATUS_LIMIT = 6.0
# How long we watch the writer retry before counting its log lines: its backoff starts at
# 50 ms and doubles, so this spans several attempts; a second warning would show by then.
RETRYING = 4.0
# mitmdump's start-up, or its exit on a refused option, on a busy machine.
START_TIMEOUT = 30.0
# A TLS problem named as such: what "a clear error" means for a scheme mismatch.
NAMES_TLS = r"\b(TLS|SSL)\b"
UNREACHABLE = "Redis unreachable: "

Status = tuple[int, dict[str, object]]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_binary() -> Path:
    found = find_tls_server()
    if found is None:
        pytest.skip(HOW_TO_GET_ONE)
    return found


@pytest.fixture(scope="module")
def tls_redis(
    redis_binary: Path, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSRedis]:
    """A TLS-only redis-server whose certificate the test CA signed."""
    server = TLSRedis(redis_binary, tmp_path_factory.mktemp("tls-redis"), certs.server)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def rogue_redis(redis_binary: Path, certs: Certificates, tmp_path: Path) -> Iterator[TLSRedis]:
    """A TLS-only redis-server whose certificate an unrelated CA signed."""
    server = TLSRedis(redis_binary, tmp_path / "rogue-redis", certs.rogue_server)
    server.start()
    yield server
    server.stop()


# --- helpers -----------------------------------------------------------------------------------


def send_concurrently(url: str, count: int) -> None:
    gets_all_ok(f"{url}/tls", count, CONNECTIONS, BURST_TIMEOUT)


def status(url: str) -> tuple[Status, float]:
    """/status's code and JSON body, and how long it took."""
    start = time.monotonic()
    answer = status_json(url, timeout=30)
    return answer, time.monotonic() - start


def problems_logged(p: Proxy, redis_url: str) -> list[str]:
    """The proxy's warnings about Redis, without the URL (which names ssl_ca_certs)."""
    found: list[str] = []
    for line in p.output().splitlines():
        match = re.search(r"Redis (unreachable|refused us|error)", line)
        if match and "are lost" not in line:
            found.append(line[match.start() :].split(f" ({redis_url})")[0])
    return found


def handshakes_failed(server: TLSRedis) -> int:
    """TLS handshakes the server gave up on (redis-server logs each as a warning)."""
    return server.output().count("Error accepting a client connection")


def connections_received(server: EmbeddedRedis) -> int:
    with redis.Redis.from_url(server.url, socket_timeout=5) as client:
        return int(client.info("stats")["total_connections_received"])


def assert_one_clear_failure(
    p: Proxy, redis_url: str, expect: str, attempts_seen: Callable[[], int]
) -> str:
    """Proxying works; every /status is a 503 whose error matches `expect` (a regex) and holds
    every proxied request as pending; the log says it once however often the writer retried
    (`attempts_seen`: how many tries the server saw); shutdown reports exactly the counts lost.

    Returns the error /status gave.
    """
    before = attempts_seen()
    send_concurrently(p.url, FAILING_REQUESTS)
    wait_for(lambda: bool(problems_logged(p, redis_url)), NOTICED, "a warning about Redis")

    started = time.monotonic()
    answers: list[tuple[Status, float]] = []
    # Bounded: each /status takes about 1.5 s here, so two or three cover RETRYING seconds.
    for _ in range(20):
        answers.append(status(p.url))
        if time.monotonic() - started >= RETRYING:
            break
    errors = [str(body.get("error")) for (_, body), _ in answers]
    for (code, body), elapsed in answers:
        assert code == 503, (code, body)
        assert elapsed <= STATUS_LIMIT, f"/status took {elapsed:.1f}s"
        assert set(body) == {"error", "uptime", "pending"}, body
        assert re.search(expect, str(body["error"])), body
        # Every proxied request is a count waiting in memory: none lost, none counted twice.
        assert body["pending"] == FAILING_REQUESTS, body
    send_concurrently(p.url, FAILING_REQUESTS)
    attempts = attempts_seen() - before

    logged = problems_logged(p, redis_url)
    print(
        f"\n  /status error: {errors[0]}"
        f"\n  /status 503 in {', '.join(f'{e:.2f}s' for _, e in answers)}"
        f"\n  attempts the server saw: {attempts}; warning lines: {len(logged)}"
    )
    assert len(logged) == 1, logged
    assert re.search(expect, logged[0]), logged
    assert attempts >= 2, f"only {attempts} attempts: the one warning proves nothing"

    p.stop()
    output = p.output()
    lost = [line for line in output.splitlines() if "could not be written" in line]
    assert len(lost) == 1, output
    assert f" {2 * FAILING_REQUESTS} counts could not be written" in lost[0], lost
    assert "Traceback" not in output, output
    return errors[0]


# --- the option check --------------------------------------------------------------------------


# A misspelt TLS argument: redis-py passes unknown query arguments to the connection class,
# which raises TypeError when the first connection is made.
MISSPELT = "ssl_ca_cert"


def test_misspelt_tls_argument_is_refused_or_reported_cleanly(
    certs: Certificates, tmp_path: Path, upstream: str
) -> None:
    """`?ssl_ca_cert=` (for ssl_ca_certs): either mitmdump refuses the option at start-up with a
    message naming it, or it runs and /status answers 503 itself; never a Traceback."""
    url = f"rediss://127.0.0.1:{free_port()}/0?{MISSPELT}={certs.ca}"
    port = free_port()
    command = proxy_command(
        "mitmdump", upstream, port, tmp_path / "confdir", "--set", f"counter_redis_url={url}"
    )
    proc = Process(command, tmp_path / "mitmdump.log")
    try:

        def exited_or_serving() -> bool:
            # Not an HTTP probe: a proxied probe would be a count, and /status with a count
            # pending takes another path than with none.
            return proc.popen.poll() is not None or "listening at" in proc.output()

        wait_for(exited_or_serving, START_TIMEOUT, "mitmdump to exit or serve")
        # A refused option is logged before "listening at"; mitmdump exits right after.
        if "counter_redis_url:" not in proc.output():
            # Nothing is pending yet: /status reads the key at once.
            r = status_of(f"http://127.0.0.1:{port}", timeout=30)
            print(f"\n  /status: {r.status_code} {r.text[:120]}")
            assert r.status_code == 503, (r.status_code, r.text)
            assert MISSPELT in r.json()["error"], r.text
            assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=30).status_code == 200
        else:
            assert proc.popen.wait(START_TIMEOUT) != 0
            assert MISSPELT in proc.output()
    finally:
        proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


# --- counting through TLS ----------------------------------------------------------------------


def test_counts_exactly_through_tls(
    tls_redis: TLSRedis, certs: Certificates, start_proxy: ProxyFactory, upstream: str
) -> None:
    """REQUESTS proxied requests through a proxy counting over TLS: /status and the key in
    Redis both say exactly REQUESTS. The server has no plain port, so every write was TLS."""
    with tls_redis.client() as client:
        client.flushall()
        client.config_resetstat()
    url = tls_redis.url(certs.ca)
    p = start_proxy(upstream, url)

    start = time.monotonic()
    send_concurrently(p.url, REQUESTS)
    sent_in = time.monotonic() - start
    start = time.monotonic()
    counter = counter_of(p.url)
    status_in = time.monotonic() - start
    with tls_redis.client() as client:
        stored = client.get("counter")
        writes = script_calls(client)
    print(
        f"\n  {REQUESTS} requests in {sent_in:.2f}s ({REQUESTS / sent_in:.0f}/s), "
        f"/status in {status_in * 1000:.0f} ms, {writes} batched writes over TLS"
    )
    assert counter == REQUESTS
    assert stored == str(REQUESTS).encode()
    assert 1 <= writes <= REQUESTS
    assert f"counting requests in Redis at {url}" in p.output()
    assert not problems_logged(p, url), p.output()


# --- a certificate the proxy must not trust ----------------------------------------------------


def test_untrusted_server_certificate_is_one_clear_error(
    rogue_redis: TLSRedis, certs: Certificates, start_proxy: ProxyFactory, upstream: str
) -> None:
    """A server whose certificate an unrelated CA signed: one warning saying the certificate
    failed verification, /status 503 saying so, proxying unaffected, nothing written there."""
    url = rogue_redis.url(certs.ca)
    p = start_proxy(upstream, url)
    error = assert_one_clear_failure(
        p,
        url,
        rf"^{UNREACHABLE}.*127\.0\.0\.1:{rogue_redis.port}.*certificate verify failed",
        lambda: handshakes_failed(rogue_redis),
    )
    assert "CERTIFICATE_VERIFY_FAILED" in error
    # Read with a client that trusts the server's own (unrelated) CA.
    with rogue_redis.client(certs.other_ca) as client:
        assert client.dbsize() == 0


# --- a scheme that does not match the server ---------------------------------------------------


def test_rediss_to_plain_redis_is_one_error(
    redis_server: EmbeddedRedis, certs: Certificates, start_proxy: ProxyFactory, upstream: str
) -> None:
    """rediss:// to a Redis without TLS: one warning, 503s, proxying unaffected.

    Plain Redis reads the TLS ClientHello as the start of an inline command (it holds a NUL
    before any newline) and waits for the rest: the handshake can only time out.
    """
    url = tls_url(redis_server.port, certs.ca)
    p = start_proxy(upstream, url)
    error = assert_one_clear_failure(
        p,
        url,
        rf"^{UNREACHABLE}",
        # Less one: the connection that asks counts itself.
        lambda: connections_received(redis_server) - 1,
    )
    assert re.search(NAMES_TLS, error), f"the error does not say TLS may be the problem: {error!r}"


def test_redis_to_tls_port_is_one_error(
    tls_redis: TLSRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    """redis:// to a TLS-only port: one warning, 503s, proxying unaffected, nothing written."""
    with tls_redis.client() as client:
        client.flushall()
    url = f"redis://127.0.0.1:{tls_redis.port}/0"
    p = start_proxy(upstream, url)
    error = assert_one_clear_failure(
        p,
        url,
        rf"^{UNREACHABLE}.*127\.0\.0\.1:{tls_redis.port}",
        lambda: handshakes_failed(tls_redis),
    )
    with tls_redis.client() as client:
        assert client.dbsize() == 0
    assert re.search(NAMES_TLS, error), f"the error does not say TLS may be the problem: {error!r}"


# --- the two TLS set-ups that trip people up ---------------------------------------------------


@pytest.fixture
def client_cert_redis(
    redis_binary: Path, certs: Certificates, tmp_path: Path
) -> Iterator[tuple[TLSRedis, Path]]:
    """A TLS-only redis-server that requires client certificates (Redis's default), switched on
    once it answers (the readiness probe has none); the CA to trust."""
    server = TLSRedis(redis_binary, tmp_path / "client-cert-redis", certs.server)
    server.start()
    with server.client() as client:
        client.config_set("tls-auth-clients", "yes")
    yield server, certs.ca
    server.stop()


@pytest.fixture
def redis_behind_ca_without_key_usage(
    redis_binary: Path, tmp_path: Path
) -> Iterator[tuple[TLSRedis, Path]]:
    """A TLS-only redis-server whose CA lacks keyUsage, as `openssl req -x509` makes it; the
    CA's file."""
    if not ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT:
        pytest.skip("this Python verifies certificates without VERIFY_X509_STRICT (before 3.13)")
    ca = make_ca(tmp_path / "plain-ca", "plain CA", key_usage=False)
    server = TLSRedis(
        redis_binary, tmp_path / "plain-ca-redis", issue_server_cert(ca, tmp_path, "s")
    )
    server.start()
    yield server, ca.cert_file
    server.stop()


@pytest.mark.parametrize(
    ("setup", "hint"),
    [
        # The server drops a client without a certificate after the handshake: all redis-py
        # sees is a reset (or, at times, the TLS alert).
        ("client_cert_redis", r"does the server require a client certificate\? add ssl_certfile="),
        # Python 3.13 checks strictly what redis-cli accepts.
        ("redis_behind_ca_without_key_usage", r"CA cert does not include key usage.*keyUsage"),
    ],
)
def test_tls_set_ups_that_trip_people_up_get_a_hint(
    setup: str, hint: str, request: pytest.FixtureRequest, start_proxy: ProxyFactory, upstream: str
) -> None:
    """One line, and a 503, that say what to check."""
    server, trust = request.getfixturevalue(setup)
    url = server.url(trust)
    p = start_proxy(upstream, url)
    error = assert_one_clear_failure(
        p, url, rf"^{UNREACHABLE}.*{hint}", lambda: handshakes_failed(server)
    )
    print(f"\n  /status error: {error}")
