"""A client for whatever a counter_redis_url names: a server, a Redis Cluster, or the master
that sentinels watch. Made without I/O; it connects on its first command.

None of them resends a command on its own (redis-py's clients do by default, which would
apply a batch whose reply was lost a second time). A cluster client still follows MOVED and
ASK (the node refused the command, which was not run), and reads the topology again after a
failed command; a sentinel-backed one asks the sentinels for the master on every new
connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from counting_addon.store.failures import TooFewReplicas
from counting_addon.store.url import RedisTarget, Topology

CONNECT_TIMEOUT = 1.0
# Long enough to ride out a Redis that stalls writes for a second, short enough to notice a hang.
COMMAND_TIMEOUT = 2.5
# How long WAIT waits for replicas: below COMMAND_TIMEOUT, or redis-py would drop the
# connection first.
WAIT_TIMEOUT = 1.0

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

    def __init__(self, target: RedisTarget, wait_timeout: float = WAIT_TIMEOUT) -> None:
        self.target = target
        self.wait_timeout = wait_timeout
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

    async def run_script(
        self, script: AsyncScript, keys: list[str], args: Sequence[int | str], replicas: int
    ) -> Any:
        """`script`'s reply; with `replicas`, only once WAIT confirms that many replicas have
        what it wrote (TooFewReplicas if not, within `wait_timeout`).

        WAIT counts the replicas that have the writes of its own connection: it goes in one
        pipeline with the script, on the script's connection.
        """
        if not replicas:
            return await script(keys, args)
        try:
            return await self._script_and_wait(("EVALSHA", script.sha), keys, args, replicas)
        except NoScriptError:
            # A promoted replica has no script cache (Redis doesn't replicate it): EVAL with
            # the source fills it.
            return await self._script_and_wait(("EVAL", script.script), keys, args, replicas)

    async def _script_and_wait(
        self, call: tuple[str, Any], keys: list[str], args: Sequence[int | str], replicas: int
    ) -> Any:
        command = (*call, len(keys), *keys, *args)
        wait = ("WAIT", replicas, int(self.wait_timeout * 1000))
        if isinstance(self.client, RedisCluster):
            results = await self._cluster_pipeline(command, wait, keys[0])
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                pipe.execute_command(*wait)
                results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        values, acknowledged = results
        if acknowledged < replicas:
            raise TooFewReplicas(acknowledged, replicas, self.wait_timeout)
        return values

    async def _cluster_pipeline(
        self, command: tuple[Any, ...], wait: tuple[Any, ...], key: str
    ) -> list[Any]:
        """Both commands on one connection to the node owning `key`'s slot. Not redirected:
        redis-py would resend each on a connection of its own. After any failure the client
        reads the topology again on its next command (a pipeline doesn't see to that)."""
        assert isinstance(self.client, RedisCluster)
        try:
            node = await self._node_of(key)
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(*command, target_nodes=node)
            pipe.execute_command(*wait, target_nodes=node)
            results: list[Any] = await pipe.execute(raise_on_error=False, allow_redirections=False)
        except Exception:
            await self.client.aclose()
            raise
        if any(isinstance(r, Exception) and not isinstance(r, NoScriptError) for r in results):
            await self.client.aclose()
        return results

    async def _node_of(self, key: str) -> ClusterNode | None:
        """The primary holding `key`'s slot, the topology read first if it is not known yet."""
        assert isinstance(self.client, RedisCluster)
        await self.client.initialize()
        return self.client.get_node_from_key(key)

    async def eviction_policy(self, key: str) -> str | None:
        """Redis's maxmemory-policy on the node holding `key`; None where CONFIG GET is
        refused (an ACL without it, a managed service that renamed it)."""
        try:
            if isinstance(self.client, RedisCluster):
                node = await self._node_of(key)
                reply = await self.client.config_get("maxmemory-policy", target_nodes=node)
            else:
                reply = await self.client.config_get("maxmemory-policy")
        except redis.ResponseError:  # NOPERM and unknown commands are ResponseErrors
            return None
        policy = reply.get("maxmemory-policy")
        return policy.decode() if isinstance(policy, bytes) else policy

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
