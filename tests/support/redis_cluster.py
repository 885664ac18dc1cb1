"""A real Redis Cluster for the tests: 3 primaries and 3 replicas of Debian's redis-server 7 on
free 127.0.0.1 ports, made with `redis-cli --cluster create`; helpers to find where a key
lives, to SIGKILL a node and bring it back, to wait for a failover, and to reshard a slot.

With a TLS identity (`tls`), every node speaks TLS only: to clients, on the cluster bus, and
between replica and primary (`tls-cluster`, `tls-replication`); the nodes then announce their
TLS ports, and every client here trusts the identity's CA. The identity must serve as a client
certificate too (`Certificates.node`): on the bus, Redis checks the peer's certificate whatever
tls-auth-clients says, and refuses one made for servers only ("certificate verify failed").

Timings on a 2-core machine (/tmp notes of issue 13): ready ~2-3 s after spawning; the slot of a
SIGKILLed primary owned by its replica ~2 s later (cluster-node-timeout 1000 ms).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
import redis.cluster
from redis.crc import key_slot

from tests.support.debian_redis import (
    HOST,
    REDIS_SERVER,
    ServerProcess,
    client,
    free_ports,
    info,
    poll,
    run_cli,
    tls_args,
)
from tests.support.tls import ServerIdentity

SLOTS = 16384
# Start-up on a busy machine: spawning, `--cluster create` (about 1 s), every node agreeing
# (about 1 s), every replica's first sync (about 1.5 s).
READY_TIMEOUT = 60.0


def cluster_state(port: int, ca: Path | None = None) -> str:
    """`cluster_state` from CLUSTER INFO of the node on `port`: "ok" or "fail" (over TLS,
    trusting the CA in the file `ca`, if given)."""
    with client(port, timeout=2.0, ca=ca) as c:
        text = c.execute_command("CLUSTER", "INFO")
    match = re.search(r"^cluster_state:(\w+)", text, re.MULTILINE)
    assert match is not None, text
    return match.group(1)


def slot_of(key: str) -> int:
    """The cluster hash slot of `key` (its `{tag}` if it has one)."""
    return int(key_slot(key.encode()))


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES: what one node believes about another (or itself)."""

    id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    link_connected: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool({"fail", "fail?", "handshake", "noaddr"} & self.flags)

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_nodes(text: str) -> list[NodeView]:
    """CLUSTER NODES' text, one NodeView a line (slots being migrated, `[..]`, left out)."""
    views = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = re.match(r"[^:]*:(\d+)@", fields[1])
        assert address is not None, line
        slots = []
        for spec in fields[8:]:
            if spec.startswith("["):
                continue
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        views.append(
            NodeView(
                id=fields[0],
                port=int(address.group(1)),
                flags=frozenset(fields[2].split(",")),
                primary_id=None if fields[3] == "-" else fields[3],
                link_connected=fields[7] == "connected",
                slots=tuple(slots),
            )
        )
    return views


class Cluster:
    """`primaries` primaries with `replicas` replicas each, node `i` in `directory`/node-PORT
    (its nodes.conf there, so a restarted node rejoins as itself). With `tls`, TLS only, with
    that certificate (see the module's docstring)."""

    def __init__(
        self,
        directory: Path,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        tls: ServerIdentity | None = None,
    ) -> None:
        self.directory = directory
        self.tls = tls
        # The CA file every client here trusts; None: plain TCP.
        self.ca = tls.issuer_file if tls is not None else None
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: dict[int, ServerProcess] = {}

    # --- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Spawn the nodes, create the cluster, and wait until it is ready (`wait_ready`)."""
        count = self.primaries * (1 + self.replicas)
        for _ in range(5):  # a port may be taken between probing and binding: new ports then
            ports = free_ports(2 * count)
            pairs = zip(ports[:count], ports[count:], strict=True)
            self.nodes = {port: self._node(port, bus) for port, bus in pairs}
            for node in self.nodes.values():
                node.start()
            try:
                for node in self.nodes.values():
                    node.wait_answering(15)
            except AssertionError:
                self.stop()
                continue
            break
        else:
            raise RuntimeError(f"could not start {count} cluster nodes; see {self.directory}")
        addresses = [f"{HOST}:{port}" for port in self.nodes]
        run_cli(
            ["--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            timeout=timeout,
            ca=self.ca,
        )  # fmt: skip
        self.wait_ready(timeout)

    def _node(self, port: int, bus_port: int) -> ServerProcess:
        directory = self.directory / f"node-{port}"
        if self.tls is None:
            listen = ["--port", str(port)]
        else:
            listen = [*tls_args(port, self.tls), "--tls-cluster", "yes", "--tls-replication", "yes"]
        args = [
            str(REDIS_SERVER),
            *listen,
            "--cluster-port", str(bus_port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            # A replica's sync starts at once rather than after 5 s.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        return ServerProcess(port, directory, args, self.ca)

    def stop(self) -> None:
        """Stop every node started here (SIGTERM by pid, SIGKILL if it lingers)."""
        for node in self.nodes.values():
            node.stop()

    def running_ports(self) -> list[int]:
        return [port for port, node in self.nodes.items() if node.running()]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every running node says cluster_state:ok, knows every running node, sees
        `primaries` primaries covering all slots and no node failing, and every replica's link
        to its primary is up (its first sync done)."""
        poll(self._healthy, timeout, "the cluster to be ready")

    def _healthy(self) -> bool:
        running = set(self.running_ports())
        for port in running:
            if cluster_state(port, self.ca) != "ok":
                return False
            views = self.views(via=port)
            live = [v for v in views if v.port in running]
            if {v.port for v in live} != running or any(v.failing for v in live):
                return False
            primaries = [v for v in live if v.is_primary and v.slots]
            if len(primaries) != self.primaries:
                return False
            if sum(last - first + 1 for v in primaries for first, last in v.slots) != SLOTS:
                return False
        for port in running:
            replication = info(port, "replication", ca=self.ca)
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up"
                or replication.get("master_sync_in_progress") != 0
            ):
                return False
        return True

    # --- where things are ----------------------------------------------------------------------

    def url(self, seeds: int | Sequence[int] = 2, path: str = "") -> str:
        """`redis+cluster://127.0.0.1:P1,127.0.0.1:P2`, plus `path`: the first `seeds` nodes,
        or the nodes on the ports `seeds` lists. With TLS `rediss+cluster://...`, plus
        `?ssl_ca_certs=CA`."""
        ports = list(self.nodes)[:seeds] if isinstance(seeds, int) else list(seeds)
        hosts = ",".join(f"{HOST}:{port}" for port in ports)
        if self.ca is None:
            return f"redis+cluster://{hosts}{path}"
        return f"rediss+cluster://{hosts}{path}?ssl_ca_certs={quote(str(self.ca), safe='/')}"

    def admin(self) -> redis.cluster.RedisCluster:
        """A redis-py cluster client for the test's own reads (values as bytes)."""
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(HOST, p) for p in self.running_ports()],
            socket_connect_timeout=5,
            socket_timeout=5,
            ssl=self.ca is not None,
            ssl_ca_certs=None if self.ca is None else str(self.ca),
        )

    def node_client(self, port: int) -> redis.Redis:
        """A plain client for the one node on `port` (strings decoded)."""
        return client(port, ca=self.ca)

    def views(self, via: int | None = None) -> list[NodeView]:
        """CLUSTER NODES as node `via` (by default the first running one) sees it."""
        port = via if via is not None else self.running_ports()[0]
        with client(port, timeout=2.0, ca=self.ca) as c:
            return parse_nodes(c.execute_command("CLUSTER", "NODES"))

    def owner_of_slot(self, slot: int, via: int | None = None) -> int:
        """The port of the primary serving `slot` (as `via` sees it; not failing)."""
        owner = self._owner(slot, via)
        if owner is None:
            raise AssertionError(f"no live primary serves slot {slot}: {self.views(via)}")
        return owner

    def _owner(self, slot: int, via: int | None = None) -> int | None:
        for view in self.views(via):
            if view.is_primary and not view.failing and view.owns(slot):
                return view.port
        return None

    def owner_of(self, key: str) -> int:
        """The port of the primary serving `key`'s slot."""
        return self.owner_of_slot(slot_of(key))

    def node_id(self, port: int) -> str:
        return next(v.id for v in self.views() if v.port == port)

    def primary_ports(self) -> list[int]:
        """The live primaries' ports, by the first slot each serves."""
        primaries = [v for v in self.views() if v.is_primary and v.slots and not v.failing]
        return [v.port for v in sorted(primaries, key=lambda v: min(v.slots))]

    def key_on(self, port: int, prefix: str) -> str:
        """A key `PREFIX-N` (no hash tag) whose slot primary `port` serves."""
        slots = next(v.slots for v in self.views() if v.port == port)
        for n in range(100_000):
            key = f"{prefix}-{n}"
            if any(first <= slot_of(key) <= last for first, last in slots):
                return key
        raise AssertionError(f"no key {prefix}-N lands on the primary at port {port}")

    def keys_per_primary(self, prefix: str) -> list[str]:
        """For each primary (in `primary_ports` order), a key it serves."""
        return [self.key_on(port, prefix) for port in self.primary_ports()]

    # --- faults --------------------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` by pid; returns once it is dead."""
        self.nodes[port].kill()

    def restart(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        """Start the killed node on `port` again (same port, directory and nodes.conf); return
        once it has rejoined (as a replica, if its slots moved meanwhile) and the cluster is
        ready again."""
        node = self.nodes[port]
        node.start()
        node.wait_answering(15)
        self.wait_ready(timeout)

    def wait_new_primary(self, key: str, old_port: int, timeout: float = 30.0) -> int:
        """Until every running node agrees that a live primary other than `old_port` serves
        `key`'s slot, says cluster_state:ok, and that primary answers as a master; its port."""
        slot = slot_of(key)

        def promoted() -> int | None:
            owners = set()
            for port in self.running_ports():
                if cluster_state(port, self.ca) != "ok":
                    return None
                owners.add(self._owner(slot, via=port))
            if len(owners) != 1 or old_port in owners or None in owners:
                return None
            (owner,) = owners
            assert owner is not None
            with client(owner, timeout=2.0, ca=self.ca) as c:
                role = c.execute_command("ROLE")
            return owner if role[0] == "master" else None

        return poll(promoted, timeout, f"a new primary for slot {slot} (was port {old_port})")

    def reshard(self, slot: int, to_port: int, timeout: float = 120.0) -> int:
        """Move `slot` from its primary to the primary at `to_port` with `redis-cli --cluster
        reshard`, which moves the source's lowest slots first: so every slot of the source up
        to and including `slot` moves, `slot` last. Returns how many slots moved; returns once
        every running node agrees on the new owner."""
        source = self.owner_of_slot(slot)
        assert source != to_port, f"slot {slot} is already on port {to_port}"
        views = {v.port: v for v in self.views()}
        count = sum(
            min(last, slot) - first + 1 for first, last in views[source].slots if first <= slot
        )
        run_cli(
            ["--cluster", "reshard", f"{HOST}:{source}",
             "--cluster-from", views[source].id, "--cluster-to", views[to_port].id,
             "--cluster-slots", str(count), "--cluster-yes"],
            timeout=timeout,
            ca=self.ca,
        )  # fmt: skip

        def moved() -> bool:
            return all(self._owner(slot, via=p) == to_port for p in self.running_ports())

        poll(moved, 30, f"every node to agree that slot {slot} is on port {to_port}")
        return count

    def migrate_slot(
        self, slot: int, to_port: int, hold: Callable[[str], None], timeout: float = 30.0
    ) -> None:
        """Move exactly `slot` to the primary at `to_port` by hand (SETSLOT IMPORTING and
        MIGRATING, MIGRATE, SETSLOT NODE), calling `hold` in two states a live migration passes
        through, for as long as it takes to return:

        - `hold("split")`: one key of the slot moved, the others not: a command on keys on
          both sides gets TRYAGAIN, one on the moved key alone ASK;
        - `hold("moved")`: every key moved, the slot still the source's: every command on it
          gets ASK, to be resent with ASKING to the target.

        Returns once every running node agrees the slot is the target's.
        """
        source = self.owner_of_slot(slot)
        assert source != to_port, f"slot {slot} is already on port {to_port}"
        source_id, target_id = self.node_id(source), self.node_id(to_port)
        with self.node_client(source) as src, self.node_client(to_port) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)

            def move(keys: list[str]) -> None:
                if keys:
                    src.execute_command("MIGRATE", HOST, to_port, "", 0, 5000, "KEYS", *keys)

            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            assert len(keys) >= 2, f"slot {slot} holds {keys}: nothing to split"
            move(sorted(keys)[:1])
            hold("split")
            # Keys made on the source meanwhile (a command whose keys all existed runs there).
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
                move(keys)
            hold("moved")
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
                move(keys)
            # The target first, then the source, then the other primaries (as redis-cli does).
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        # The other primaries (replicas refuse SETSLOT; they follow their primary).
        for port in self.primary_ports():
            if port not in (source, to_port):
                with self.node_client(port) as other:
                    other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        def moved() -> bool:
            return all(self._owner(slot, via=p) == to_port for p in self.running_ports())

        poll(moved, timeout, f"every node to agree that slot {slot} is on port {to_port}")
