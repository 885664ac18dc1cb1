"""End to end: WebSocket (ws:// and wss://) through mitmdump in reverse mode, with a real client.

The upstream (tests/support/upstream.py) echoes every message on /ws. mitmproxy takes over the
connection after the 101 and relays the messages itself: the addon sees the upgrade request,
and counts it once, in `requestheaders`, however many messages follow.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import ssl
import threading
from collections.abc import Callable
from contextlib import ExitStack

import pytest
import redis
from cryptography import x509
from cryptography.x509.oid import NameOID
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from tests.support.http_client import STATUS_KEYS, counter_of, send
from tests.support.processes import ProxyFactory, wait_for
from tests.support.websocket import LARGE, TIMEOUT, Message, echo, websocket, ws_url


def mixed_messages(rng: random.Random) -> list[Message]:
    """Text (ASCII, non-ASCII, empty) and binary (every byte value, empty, random), small and
    large: a 4 MiB binary message and a 1 MiB text one among them."""
    return [
        "hello",
        "",
        "héllo wörld ✓ 🙂",
        bytes(range(256)),
        b"",
        b"\x00" * 10,
        rng.randbytes(LARGE),
        "x" * (1024 * 1024),
        *(f"text {i}" if i % 2 else rng.randbytes(i * 100) for i in range(40)),
        "last",
    ]


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_messages_pass_intact_and_in_order(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis, scheme: str
) -> None:
    """Every message comes back equal, of its type, in order: sent all at once (so they are in
    flight together), then a fragmented one, then a large one each way again on its own."""
    p = start_proxy(upstream, redis_url)
    messages = mixed_messages(random.Random(11))
    with websocket(p, scheme) as ws:
        for message in messages:
            ws.send(message)
        received = [ws.recv(timeout=TIMEOUT) for _ in messages]
        # Compared one by one: a failure names the first message that differs, not 4 MiB.
        assert len(received) == len(messages)
        for i, (got, sent) in enumerate(zip(received, messages, strict=True)):
            assert type(got) is type(sent) and got == sent, f"message {i} differs"
        # Sent in three frames, relayed by mitmproxy, echoed back as one message.
        ws.send(["frag", "men", "ted"])
        assert ws.recv(timeout=TIMEOUT) == "fragmented"
        echo(ws, os.urandom(LARGE))
        assert counter_of(p.url) == 1
    assert counter_of(p.url) == 1
    assert redis_client.get("counter") == b"1"


def test_counted_once_per_upgrade_never_per_message(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """50 messages on one connection count 1; five more connections, open at once and busy,
    count exactly one each, and one 1xx response each."""
    p = start_proxy(upstream, redis_url)
    with websocket(p) as ws:
        for i in range(50):
            echo(ws, f"message {i}" if i % 2 else f"message {i}".encode())
        assert counter_of(p.url) == 1
    assert counter_of(p.url) == 1

    with ExitStack() as stack:
        connections = [stack.enter_context(websocket(p)) for _ in range(5)]
        assert counter_of(p.url) == 6
        for round_ in range(10):
            for n, ws in enumerate(connections):
                echo(ws, f"connection {n} round {round_}")
        assert counter_of(p.url) == 6
    assert counter_of(p.url) == 6  # has the proxy write its responses too
    assert redis_client.get("counter") == b"6"
    # Each upgrade's 101 is a 1xx response, counted once; messages are no responses.
    assert redis_client.hgetall("{counter}:responses") == {b"1xx": b"6"}


def test_open_websocket_does_not_hold_back_other_counts(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """While a WebSocket is open, idle and then busy, every GET shows in /status at once: the
    counter is the number of requests answered, the open WebSocket's upgrade included."""
    p = start_proxy(upstream, redis_url)
    with websocket(p) as ws:
        echo(ws, "open")
        answered = 1
        # Idle WebSocket: no polling, each GET is in the very next /status.
        for i in range(10):
            send(p.url, f"/idle-ws/{i}", 1)
            answered += 1
            assert counter_of(p.url) == answered

        # Busy WebSocket: a thread echoes messages without pause while the GETs go on.
        stop = threading.Event()
        echoed = 0
        failure: list[BaseException] = []

        def chatter() -> None:
            nonlocal echoed
            try:
                while not stop.is_set():
                    echo(ws, os.urandom(4096) if echoed % 2 else f"busy {echoed}")
                    echoed += 1
            except BaseException as e:  # reported by the test, not lost in the thread
                failure.append(e)

        def echoed_beyond(seen: int) -> Callable[[], bool]:
            return lambda: echoed > seen or bool(failure)

        thread = threading.Thread(target=chatter, daemon=True)
        thread.start()
        try:
            for i in range(20):
                # Messages really go on between the GETs: each waits for a fresh echo.
                wait_for(echoed_beyond(echoed), TIMEOUT, "an echo")
                send(p.url, f"/busy-ws/{i}", 1)
                answered += 1
                assert counter_of(p.url) == answered
        finally:
            stop.set()
            thread.join(TIMEOUT)
        assert not thread.is_alive() and not failure, failure
        echo(ws, "still open")
        assert counter_of(p.url) == answered
    assert counter_of(p.url) == answered
    assert redis_client.get("counter") == str(answered).encode()


def test_wss_is_tls_to_the_proxy_and_plain_to_the_upstream(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """mitmproxy answers TLS on a reverse listener for an http:// upstream with a certificate
    from its own CA (valid for 127.0.0.1), and speaks plain ws:// upstream (the test upstream
    knows no TLS). A client that does not trust that CA fails the handshake, uncounted."""
    p = start_proxy(upstream, redis_url)
    with websocket(p, "wss") as ws:
        sock = ws.socket
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        organization = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        assert [a.value for a in organization] == ["mitmproxy"], cert.issuer
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
        echo(ws, "over TLS")
    assert counter_of(p.url) == 1

    # The system's CAs don't include mitmproxy's: verification fails before any request.
    with pytest.raises((ssl.SSLCertVerificationError, InvalidHandshake)):
        connect(ws_url(p, "wss"), ssl=ssl.create_default_context(), proxy=None).close()
    assert counter_of(p.url) == 1


def test_upgrade_on_the_status_path_is_answered_not_upgraded(
    start_proxy: ProxyFactory, upstream: str, redis_url: str
) -> None:
    """A WebSocket handshake for /status gets the proxy's own 200 answer, never a 101 from the
    upstream, and is not counted, like any status request."""
    p = start_proxy(upstream, redis_url)
    with websocket(p) as ws:
        echo(ws, "one counted upgrade")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{p.port}/status", proxy=None, open_timeout=TIMEOUT).close()
    response = refused.value.response
    assert response.status_code == 200
    body = json.loads(response.body)
    assert set(body) == STATUS_KEYS and body["counter"] == 1, body
    assert counter_of(p.url) == 1
