"""Background HTTP load for the end-to-end tests, bounded in count and time."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Results:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    # Successes by client number: client N sends GETs of /load/N/0, /load/N/1, ...
    ok_by_client: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    # Body bytes the successful requests got back, as they travelled (before any decoding).
    response_bytes: int = 0

    @property
    def sent(self) -> int:
        return self.ok + len(self.failed)

    def median(self) -> float:
        return statistics.median(self.latencies)

    def worst(self) -> float:
        return max(self.latencies)


def ms(seconds: float) -> str:
    """A latency for a message: milliseconds, rounded."""
    return f"{seconds * 1000:.0f} ms"


def load_path(client: int, request: int) -> str:
    """Load's default paths: client N sends /load/N/0, /load/N/1, ..."""
    return f"/load/{client}/{request}"


class Load:
    """`concurrency` clients sending GETs to `url` until stopped, `max_requests` are sent, or
    `max_seconds` pass; POSTs of `body` instead, if given. Client N's request I goes to
    `path(N, I)`. A 200 counts as ok; anything else is a failure with its reason.

        with Load(url, concurrency=8) as load:
            ...
        load.results
    """

    def __init__(
        self,
        url: str,
        concurrency: int = 8,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        body: bytes = b"",
        path: Callable[[int, int], str] = load_path,
    ) -> None:
        self.url = url
        self.body = body
        self.path = path
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.results = Results()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Results:
        self._stop.set()
        return self.finish()

    def finish(self) -> Results:
        """Wait until the load has ended, on its own bounds if not stopped."""
        self._thread.join(self.max_seconds + 30)
        assert not self._thread.is_alive(), "the load did not stop"
        return self.results

    def wait_for_more(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` more requests have succeeded than now."""
        target = self.results.ok + count
        deadline = time.monotonic() + timeout
        while self.results.ok < target:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError(f"{self.results.ok} of {target} requests succeeded in time")
            time.sleep(0.01)

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        results = self.results

        async def client(number: int) -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                i = 0
                while (
                    not self._stop.is_set()
                    and results.sent < self.max_requests
                    and time.monotonic() < deadline
                ):
                    start = time.monotonic()
                    try:
                        r = await self._send(http, self.url + self.path(number, i))
                    except httpx.HTTPError as e:
                        results.failed.append(repr(e))
                    else:
                        if r.status_code == 200:
                            results.ok += 1
                            results.ok_by_client[number] += 1
                            results.response_bytes += r.num_bytes_downloaded
                            results.latencies.append(time.monotonic() - start)
                        else:
                            results.failed.append(f"HTTP {r.status_code}")
                    i += 1

        await asyncio.gather(*(client(n) for n in range(self.concurrency)))

    async def _send(self, http: httpx.AsyncClient, url: str) -> httpx.Response:
        if self.body:
            return await http.post(url, content=self.body)
        return await http.get(url)


# Bounds for a load that runs through a fault; Load's own defaults are larger.
FAULT_LOAD_REQUESTS = 40_000
FAULT_LOAD_SECONDS = 60.0


def bounded_load(url: str, concurrency: int) -> Load:
    """A Load within FAULT_LOAD_REQUESTS and FAULT_LOAD_SECONDS."""
    return Load(url, concurrency, max_requests=FAULT_LOAD_REQUESTS, max_seconds=FAULT_LOAD_SECONDS)
