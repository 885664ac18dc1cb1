"""WebSocket clients of the upstream's /ws echo (tests/support/upstream.py) through a proxy, and
volumes of messages echoed through it, checked in order by their digests."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import ssl
import string
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import Proxy

Message = str | bytes
LARGE = 4 * 1024 * 1024
# Bounds every wait on the proxy: generous for a busy 2-core machine, never reached when well.
TIMEOUT = 30.0


def ws_url(proxy: Proxy, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{proxy.port}/ws"


def mitmproxy_ca(proxy: Proxy) -> ssl.SSLContext:
    """A client context trusting only the CA mitmproxy made in the proxy's confdir."""
    return ssl.create_default_context(cafile=proxy.ca_cert)


def client_options(proxy: Proxy, scheme: str) -> dict[str, Any]:
    """Both clients' options: mitmproxy's CA for wss://, no size limit, no keepalive pings, no
    proxy from the environment, TIMEOUT to open and close."""
    return {
        "ssl": mitmproxy_ca(proxy) if scheme == "wss" else None,
        "proxy": None,
        "max_size": None,
        "ping_interval": None,
        "open_timeout": TIMEOUT,
        "close_timeout": TIMEOUT,
    }


@contextmanager
def websocket(proxy: Proxy, scheme: str = "ws") -> Iterator[ClientConnection]:
    """A WebSocket to the upstream's echo through `proxy`, with no queue limit either (a test
    may send everything before reading)."""
    with connect(ws_url(proxy, scheme), max_queue=None, **client_options(proxy, scheme)) as ws:
        yield ws


def echo(ws: ClientConnection, message: Message) -> None:
    ws.send(message)
    assert ws.recv(timeout=TIMEOUT) == message


# --- Volumes: many messages, sizes from 16 bytes to 4 MiB, none kept by the test ------------------

SMALLEST = 16
# The sender runs at most this far ahead of what came back (more than LARGE). mitmproxy reads on
# while a message's hooks run and buffers what it read, whatever the addon keeps: a client that
# outruns its hooks (tiny messages, a slow machine) would grow it (docs/protocols.md).
WINDOW = 16 * 1024 * 1024
# Every fifth message is text, from this alphabet (ASCII and not).
ALPHABET = string.ascii_letters + string.digits + " .,;{}\"'éüß✓€🙂"


@dataclass(frozen=True)
class Echoed:
    """What came back equal and in order: messages and payload bytes, each way."""

    messages: int
    payload: int
    seconds: float

    @property
    def mib_per_second(self) -> float:
        return self.payload / 1024**2 / self.seconds


class Traffic:
    """Messages of sizes spread evenly over each power of two from SMALLEST to LARGE, binary
    and text, cut from pools of random data at random places: a seed makes the same ones."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.binary = rng.randbytes(2 * LARGE)
        self.text = "".join(rng.choices(ALPHABET, k=2 * LARGE))

    def messages(self, total: int) -> Iterator[Message]:
        """Messages until their payload reaches `total` bytes (a text one counts its
        characters): one of the smallest size, one of the largest, then any."""
        sent = 0
        for size in itertools.chain([SMALLEST, LARGE], iter(self._size, 0)):
            if sent >= total:
                return
            start = self.rng.randrange(LARGE)
            if self.rng.randrange(5):
                yield self.binary[start : start + size]
            else:
                yield self.text[start : start + size]
            sent += size

    def _size(self) -> int:
        return int(SMALLEST * (LARGE / SMALLEST) ** self.rng.random())


def digest(message: Message) -> bytes:
    if isinstance(message, str):
        return b"t" + hashlib.sha256(message.encode()).digest()
    return b"b" + hashlib.sha256(message).digest()


@asynccontextmanager
async def streaming_websocket(proxy: Proxy, scheme: str = "ws") -> AsyncIterator[AsyncConnection]:
    """`websocket`, but asyncio's client: it reads while it sends. The threaded client holds a
    lock while it sends, so its reader stops while a send waits on a full socket: echoed data
    then backs up to the proxy, which stops reading what the send waits on."""
    async with async_connect(ws_url(proxy, scheme), **client_options(proxy, scheme)) as ws:
        yield ws


async def echo_traffic(ws: AsyncConnection, traffic: Traffic, total: int) -> Echoed:
    """Sends `traffic`'s messages up to `total` payload bytes while receiving them back, at
    most WINDOW bytes ahead: each must come back equal, of its type and in order, which their
    digests, queued as they are sent, check without the test keeping any message."""
    sent: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
    in_flight = 0
    room = asyncio.Condition()

    def room_for(size: int) -> Callable[[], bool]:
        return lambda: in_flight + size <= WINDOW

    async def send() -> None:
        nonlocal in_flight
        try:
            for message in traffic.messages(total):
                async with room, asyncio.timeout(TIMEOUT):
                    await room.wait_for(room_for(len(message)))
                    in_flight += len(message)
                sent.put_nowait((digest(message), len(message)))
                await ws.send(message)
        finally:
            sent.put_nowait(None)

    start = time.monotonic()
    sender = asyncio.create_task(send())
    count = payload = 0
    try:
        while True:
            async with asyncio.timeout(TIMEOUT):
                expected = await sent.get()
                if expected is None:
                    break
                got = await ws.recv()
            assert digest(got) == expected[0], (
                f"message {count} came back different ({len(got)} bytes or characters, "
                f"{expected[1]} sent, {type(got).__name__})"
            )
            async with room:
                in_flight -= expected[1]
                room.notify()
            count += 1
            payload += expected[1]
        await sender  # its failure, if any
    finally:
        sender.cancel()
    return Echoed(count, payload, time.monotonic() - start)
