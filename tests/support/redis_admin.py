"""The tests' own view of a Redis: an admin client, the counter's key, the scripts it ran."""

from __future__ import annotations

import redis

from counting_addon.embedded_redis import EmbeddedRedis


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


def script_calls(client: redis.Redis) -> int:
    """EVAL/EVALSHA commands Redis has run so far: the counter's writes (its only ones), failed
    ones too."""
    stats = client.info("commandstats")
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )
