"""A real Sentinel set-up for the tests: a primary, one replica and three sentinels, all
Debian's redis-server 7 on free 127.0.0.1 ports; helpers to ask the sentinels which node is
the primary, to SIGKILL it, to wait for the failover, and to bring the old primary back as a
replica of the new one.

Sentinels normally take ~9 s to learn of the replica and of each other (INFO every 10 s, hello
every 2 s). Each config here names its own id and lists the replica and the other sentinels
(`sentinel myid`, `known-replica`, `known-sentinel`, as Sentinel itself writes them), so they
know everything at once and are ready as soon as their links are up.

Optionally the replica replicates through a DelayRelay (`replication_delay` s late), so that a
SIGKILLed primary takes acknowledged writes with it. Sentinel then sees the replica following
another port than the primary's and "fixes" it after `failover-timeout`: that timeout is
large then (60 s), as the notes of issue 13 advise.

With a TLS identity (`tls`), every process speaks TLS only: the data nodes to clients and to
each other (`tls-replication`), the sentinels to clients, and to the data nodes and each other
(`tls-replication` in sentinel.conf); every client here trusts the identity's CA.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import redis

from tests.support.debian_redis import (
    HOST,
    REDIS_SERVER,
    ServerProcess,
    client,
    free_ports,
    info,
    poll,
    tls_args,
)
from tests.support.delay_relay import DelayRelay
from tests.support.tls import ServerIdentity

SERVICE = "mymaster"
SENTINELS = 3
QUORUM = 2
READY_TIMEOUT = 60.0
# SIGKILL to a promoted replica: ~2.3 s here with down-after 1000 ms; generous for a busy box.
FAILOVER_TIMEOUT = 60.0


def _pairs(reply: dict[str, str] | list[str]) -> dict[str, str]:
    """A sentinel's description of a node as a dict of strings: a map in RESP3 (redis-py 8's
    default), a flat [name, value, name, value...] list in RESP2."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return dict(zip(reply[::2], reply[1::2], strict=True))


class Sentinels:
    """A primary and a replica watched by three sentinels (quorum 2) as service `name`.

    `data_password`: requirepass (and masterauth) of the data nodes, which the sentinels use
    too. `sentinel_password`: requirepass of the sentinels themselves (and the one they use
    with each other). `tls`: TLS only, with that certificate (see the module's docstring).
    """

    def __init__(
        self,
        directory: Path,
        name: str = SERVICE,
        data_password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int | None = None,
        replication_delay: float = 0.0,
        tls: ServerIdentity | None = None,
    ) -> None:
        self.directory = directory
        self.tls = tls
        # The CA file every client here trusts; None: plain TCP.
        self.ca = tls.issuer_file if tls is not None else None
        self.name = name
        self.data_password = data_password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        # Past it, a failed failover is retried only after twice as long: 10 s unless a relay
        # needs it large (see the module's docstring).
        self.failover_timeout_ms = failover_timeout_ms or (60_000 if replication_delay else 10_000)
        self.replication_delay = replication_delay
        self.data: dict[int, ServerProcess] = {}
        self.sentinels: dict[int, ServerProcess] = {}
        self.relay: DelayRelay | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Spawn the primary, the replica (through the relay if any) and the sentinels; return
        once they are ready (`wait_ready`)."""
        for _ in range(5):  # a port may be taken between probing and binding: new ports then
            primary, replica, *sentinels = free_ports(2 + SENTINELS)
            self.data = {port: self._data_node(port) for port in (primary, replica)}
            self.data[primary].start()
            if self.replication_delay:
                self.relay = DelayRelay(primary, self.replication_delay)
                self.relay.start()
                upstream = self.relay.port
            else:
                upstream = primary
            self.data[replica].start("--replicaof", HOST, str(upstream))
            ids = {port: secrets.token_hex(20) for port in sentinels}
            self.sentinels = {
                port: self._sentinel(port, primary, replica, ids) for port in sentinels
            }
            try:
                for node in self.data.values():
                    node.wait_answering(15, self.data_password)
                for node in self.sentinels.values():
                    node.start()
                for node in self.sentinels.values():
                    node.wait_answering(15, self.sentinel_password)
            except AssertionError:
                self.stop()
                continue
            break
        else:
            raise RuntimeError(f"could not start the Sentinel set-up; see {self.directory}")
        self.wait_ready(timeout)

    def _data_node(self, port: int) -> ServerProcess:
        directory = self.directory / f"data-{port}"
        auth = (
            ["--requirepass", self.data_password, "--masterauth", self.data_password]
            if self.data_password
            else []
        )
        if self.tls is None:
            listen = ["--port", str(port)]
        else:
            listen = [*tls_args(port, self.tls), "--tls-replication", "yes"]
        args = [
            str(REDIS_SERVER),
            *listen,
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            # A replica's sync starts at once rather than after 5 s.
            "--repl-diskless-sync-delay", "0",
            *auth,
        ]  # fmt: skip
        return ServerProcess(port, directory, args, self.ca)

    def _sentinel(
        self, port: int, primary: int, replica: int, ids: dict[int, str]
    ) -> ServerProcess:
        directory = self.directory / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            listen = [f"port {port}"]
        else:
            listen = [
                "port 0",
                f"tls-port {port}",
                f'tls-cert-file "{self.tls.cert_file}"',
                f'tls-key-file "{self.tls.key_file}"',
                f'tls-ca-cert-file "{self.tls.issuer_file}"',
                # TLS to the data nodes and to the other sentinels too.
                "tls-replication yes",
                "tls-auth-clients no",
            ]
        lines = [
            *listen,
            f"bind {HOST}",
            f'dir "{directory}"',
            f"sentinel myid {ids[port]}",
            f"sentinel monitor {self.name} {HOST} {primary} {QUORUM}",
            f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
            f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.name} 1",
            f"sentinel known-replica {self.name} {HOST} {replica}",
            *(
                f"sentinel known-sentinel {self.name} {HOST} {other} {ids[other]}"
                for other in ids
                if other != port
            ),
        ]
        if self.data_password:
            lines.append(f"sentinel auth-pass {self.name} {self.data_password}")
        if self.sentinel_password:
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        # Sentinel rewrites its config file as it learns: one writable file per sentinel.
        config = directory / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        return ServerProcess(
            port, directory, [str(REDIS_SERVER), str(config), "--sentinel"], self.ca
        )

    def stop(self) -> None:
        """Stop every process started here (SIGTERM by pid, SIGKILL if it lingers), and the
        relay."""
        for node in [*self.sentinels.values(), *self.data.values()]:
            node.stop()
        if self.relay is not None:
            self.relay.stop()
            self.relay = None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the primary the sentinels name has one replica whose link is up, and every
        running sentinel sees that primary up, that replica up and linked, and the two other
        sentinels."""
        poll(self._ready, timeout, "the sentinels to be ready")

    def _ready(self) -> bool:
        primary = self.primary_port()
        replicas = [p for p in self.running_data_ports() if p != primary]
        if len(replicas) != 1:
            return False
        (replica,) = replicas
        replication = info(replica, "replication", self.data_password, self.ca)
        if replication.get("master_link_status") != "up":
            return False
        for port in self.running_sentinel_ports():
            with self.sentinel_client(port) as c:
                state = _pairs(c.execute_command("SENTINEL", "MASTER", self.name))
                known = [_pairs(r) for r in c.execute_command("SENTINEL", "REPLICAS", self.name)]
                others = [_pairs(s) for s in c.execute_command("SENTINEL", "SENTINELS", self.name)]
            if state["flags"] != "master" or int(state["port"]) != primary:
                return False
            if int(state["num-other-sentinels"]) != SENTINELS - 1:
                return False
            if any(s["flags"] != "sentinel" for s in others):
                return False
            linked = [
                r
                for r in known
                if int(r["port"]) == replica
                and r["flags"] == "slave"
                and r["master-link-status"] == "ok"
            ]
            if not linked:
                return False
        return True

    # --- where things are ----------------------------------------------------------------------

    def running_data_ports(self) -> list[int]:
        return [port for port, node in self.data.items() if node.running()]

    def running_sentinel_ports(self) -> list[int]:
        return [port for port, node in self.sentinels.items() if node.running()]

    def url(self, db: int | None = None, with_credentials: bool = True) -> str:
        """`redis+sentinel://[:PASSWORD@]127.0.0.1:S1,...,127.0.0.1:S3/NAME[/DB]
        [?sentinel_password=...]`: the data nodes' password in the userinfo, the sentinels'
        in the query (when set, and `with_credentials`). With TLS `rediss+sentinel://...`,
        the query starting with `ssl_ca_certs=CA`."""
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinels)
        userinfo = (
            f":{quote(self.data_password, safe='')}@"
            if self.data_password and with_credentials
            else ""
        )
        arguments = [f"ssl_ca_certs={quote(str(self.ca), safe='/')}"] if self.ca else []
        if self.sentinel_password and with_credentials:
            arguments.append(f"sentinel_password={quote(self.sentinel_password, safe='')}")
        query = f"?{'&'.join(arguments)}" if arguments else ""
        database = f"/{db}" if db is not None else ""
        scheme = "redis+sentinel" if self.ca is None else "rediss+sentinel"
        return f"{scheme}://{userinfo}{hosts}/{self.name}{database}{query}"

    def sentinel_client(self, port: int) -> redis.Redis:
        """A client for the sentinel on `port` (strings decoded)."""
        return client(port, self.sentinel_password, timeout=2.0, ca=self.ca)

    def primary_port(self) -> int:
        """The primary's port as the first sentinel that answers names it."""
        errors: list[str] = []
        for port in self.running_sentinel_ports():
            try:
                with self.sentinel_client(port) as c:
                    address = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            except (redis.RedisError, OSError) as e:
                errors.append(f"{port}: {e!r}")
                continue
            if address:
                return int(address[1])
        raise AssertionError(f"no sentinel names a primary for {self.name}: {errors}")

    def admin(self, db: int = 0) -> redis.Redis:
        """A plain client for the current primary (values as bytes)."""
        return redis.Redis(
            host=HOST,
            port=self.primary_port(),
            db=db,
            password=self.data_password,
            socket_connect_timeout=5,
            socket_timeout=5,
            ssl=self.ca is not None,
            ssl_ca_certs=None if self.ca is None else str(self.ca),
        )

    # --- faults --------------------------------------------------------------------------------

    def kill_primary(self) -> int:
        """SIGKILL the current primary by pid; its port."""
        port = self.primary_port()
        self.data[port].kill()
        return port

    def wait_failover(self, old_port: int, timeout: float = FAILOVER_TIMEOUT) -> int:
        """Until every running sentinel names a primary other than `old_port` and that node
        answers as a master; its port."""

        def promoted() -> int | None:
            named = set()
            for port in self.running_sentinel_ports():
                with self.sentinel_client(port) as c:
                    address = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                named.add(int(address[1]))
            if len(named) != 1 or old_port in named:
                return None
            (new,) = named
            with client(new, self.data_password, timeout=2.0, ca=self.ca) as c:
                role = c.execute_command("ROLE")
            return new if role[0] == "master" else None

        return poll(promoted, timeout, f"the sentinels to promote a replica of port {old_port}")

    def restart_as_replica(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        """Start the killed data node on `port` again as a replica of the current primary
        (`--replicaof`: Sentinel's own conversion of a returning primary takes ~10 s), and
        return once it is synced and every sentinel sees it as the primary's replica."""
        primary = self.primary_port()
        assert port != primary, f"port {port} is the primary"
        node = self.data[port]
        node.start("--replicaof", HOST, str(primary))
        node.wait_answering(15, self.data_password)
        self.wait_ready(timeout)
