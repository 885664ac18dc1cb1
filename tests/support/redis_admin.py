"""The tests' own view of a Redis: an admin client, the counter's key, the scripts it ran."""

from __future__ import annotations

import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.keys import writer_key


def admin_of(
    server: EmbeddedRedis, password: str | None = None, timeout: float = 15.0
) -> redis.Redis:
    """A client for the test's own commands; generous by default, as it may also send the
    commands that block the server."""
    return redis.Redis(
        host="127.0.0.1", port=server.port, password=password, socket_timeout=timeout
    )


def key_value(client: redis.Redis, key: str = "counter") -> bytes | None:
    value = client.get(key)
    assert value is None or isinstance(value, bytes)
    return value


def stored(server: EmbeddedRedis, key: str = "counter") -> bytes | None:
    """`key`'s value, read on a connection of its own."""
    with admin_of(server, timeout=5) as client:
        return key_value(client, key)


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls of each command Redis has run so far (`INFO commandstats`, by lower-case name:
    `evalsha`, `get`, `config|get`...), failed ones too. Commands a script runs count as well,
    so each EVALSHA of the counter's batch script also counts the GET, INCRBY... inside it."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(fields.get("calls", 0))
        for name, fields in stats.items()
        if isinstance(fields, dict)
    }


def script_calls(client: redis.Redis) -> int:
    """EVAL/EVALSHA commands Redis has run so far: the counter's writes (its only ones), failed
    ones too."""
    calls = command_calls(client)
    return calls.get("evalsha", 0) + calls.get("eval", 0)


def writer_keys(client: redis.Redis, key: str = "counter") -> list[bytes]:
    """The writer keys beside counter `key` (one per counter instance that wrote), sorted."""
    return sorted(client.scan_iter(match=writer_key(key, "*"), count=1000))
