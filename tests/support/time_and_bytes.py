"""The last minute, hour and day and the body bytes from the tests' side: /status's answer as
one value, and the Redis keys behind it read directly."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from counting_addon.store.keys import bytes_key, window_key
from tests.support.http_client import (
    STATUS_FIELDS,
    assert_status_fields,
    poll_status,
    status_json,
)

# The buckets' tags in their keys (counting_addon/store/windows.py): a second, a minute, an hour.
SECOND, MINUTE, HOUR = "s", "m", "h"


@dataclass(frozen=True, slots=True)
class Counts:
    """A 200 /status answer's shared counts (the uptime left out)."""

    counter: int
    last_minute: int
    last_hour: int
    last_day: int
    request_bytes: int
    response_bytes: int

    @property
    def windows(self) -> tuple[int, int, int]:
        return self.last_minute, self.last_hour, self.last_day

    @property
    def bytes(self) -> tuple[int, int]:
        return self.request_bytes, self.response_bytes

    @classmethod
    def of(cls, body: dict[str, object]) -> Counts:
        """From a 200 /status body; fails the test unless it has exactly STATUS_FIELDS, each a
        count (http_client.assert_status_fields)."""
        assert_status_fields(body)
        values = {name: body[name] for name in STATUS_FIELDS if name not in ("uptime", "responses")}
        return cls(**values)  # type: ignore[arg-type]


def counts_of(url: str) -> Counts:
    """The proxy's /status, which must answer 200."""
    code, body = status_json(url)
    assert code == 200, body
    return Counts.of(body)


def poll_counts(url: str, accept: Callable[[Counts], bool], timeout: float, what: str) -> Counts:
    """Ask /status until it answers 200 with counts that `accept` takes; those counts."""
    _, body = poll_status(
        url, lambda code, body: code == 200 and accept(Counts.of(body)), timeout, what
    )
    return Counts.of(body)


def bytes_are(expected: tuple[int, int]) -> Callable[[Counts], bool]:
    """For poll_counts: request and response bytes exactly `expected`."""
    return lambda counts: counts.bytes == expected


def bucket(client: redis.Redis, tag: str, number: int, key: str = "counter") -> int | None:
    """The requests Redis holds in one bucket beside counter `key` (None: no such key)."""
    value = client.get(window_key(key, tag, number))
    return None if value is None else int(value)


def buckets_sum(client: redis.Redis, tag: str, numbers: Iterable[int], key: str = "counter") -> int:
    """The requests in the buckets `numbers` of one length, missing ones as 0."""
    return sum(bucket(client, tag, n, key) or 0 for n in numbers)


def all_buckets(client: redis.Redis, tag: str, key: str = "counter") -> dict[int, int]:
    """Every bucket of one length beside counter `key`: {number: requests}."""
    prefix = window_key(key, tag, 0).removesuffix("0")
    found: dict[int, int] = {}
    for name in client.scan_iter(match=f"{prefix}*", count=1000):
        number = int(name.decode().removeprefix(prefix))
        value = bucket(client, tag, number, key)
        if value is not None:  # expired meanwhile
            found[number] = value
    return found


def stored_bytes(client: redis.Redis, key: str = "counter") -> tuple[int, int]:
    """The body bytes Redis holds beside counter `key`: request, response (0 for none)."""
    request, response = client.hmget(bytes_key(key), ["request", "response"])
    return int(request or 0), int(response or 0)
