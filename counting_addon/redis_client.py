"""A client for whatever a counter_redis_url names: a server, a Redis Cluster, or the master
that sentinels watch. Made without I/O; it connects on its first command.

None of them resends a command on its own (redis-py's clients do by default, which would
apply a batch whose reply was lost a second time). A cluster client still follows MOVED and
ASK (the node refused the command, which was not run), and reads the topology again after a
failed command; a sentinel-backed one asks the sentinels for the master on every new
connection.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from counting_addon.redis_url import RedisTarget, Topology, parse, redact, scrub

CONNECT_TIMEOUT = 1.0
# Long enough to ride out a Redis that stalls writes for a second, short enough to notice a hang.
COMMAND_TIMEOUT = 2.5

Client = redis.asyncio.Redis | RedisCluster


def client_options(
    retry: type[redis.retry.Retry | redis.asyncio.retry.Retry] = redis.asyncio.retry.Retry,
) -> dict[str, Any]:
    # No client-side retries: redis-py would re-send a command whose reply was lost.
    return {
        "retry": retry(NoBackoff(), 0),
        "retry_on_error": [],
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
    }


class RedisClient:
    """The client of one target, and what it takes to let go of it."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._sentinel: Sentinel | None = None
        # The URL's own arguments (socket_timeout=...) win over the defaults, as for redis://.
        options = {**client_options(), **target.options}
        if target.topology is Topology.SERVER:
            self.client: Client = redis.asyncio.Redis.from_url(target.url, **client_options())
        elif target.topology is Topology.CLUSTER:
            seeds = [ClusterNode(host, port) for host, port in target.nodes]
            self.client = RedisCluster(startup_nodes=seeds, **options)
        else:
            # Sentinels get options of their own in full: left out, redis-py would give them
            # its default retries (seconds per dead sentinel), and no password or TLS.
            sentinel_options = {**client_options(), **target.sentinel_options}
            self._sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_options)
            self.client = self._sentinel.master_for(target.master_name, **options)

    def check(self) -> None:
        """Make (not connect) a connection: a misspelt query argument fails only then."""
        if isinstance(self.client, RedisCluster):
            return  # its constructor takes named arguments only, and checked them
        self.client.connection_pool.make_connection()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()


def check_url(url: str) -> None:
    """Raise ValueError, naming no password, if `url` is not one this product can use.

    Does no network I/O: it runs in configure(), on the event loop.
    """
    target = parse(url)
    try:
        RedisClient(target).check()
    except Exception as e:  # redis-py raises whatever a misspelt query argument causes
        raise ValueError(f"{redact(url)} is not a Redis URL: {scrub(str(e), url)}") from None
