"""Debian's nginx in front of several mitmdumps, run from the very config users copy:
docs/deployment/nginx.conf, with its ports rewritten (the listen line and the upstream's server
lines) and everything else as written. The tests and benchmarks/load_balanced.py use it.

It imports nothing beyond the standard library and the tests' process helpers, as the bench's
install has those.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path

from tests.support.processes import ROOT, Process, wait_for
from tests.support.procfs import children

NGINX = Path("/usr/sbin/nginx")
DOCS_CONF = ROOT / "docs" / "deployment" / "nginx.conf"
HOST = "127.0.0.1"
# The upstream's server lines as the docs write them: `server 127.0.0.1:8081 max_fails=...;`.
SERVER_LINE = re.compile(r"^(?P<indent>[ \t]*)server 127\.0\.0\.1:\d+(?P<params>[^;\n]*);\n", re.M)
LISTEN_LINE = re.compile(r"^(?P<indent>[ \t]*)listen 8080;\n", re.M)


def missing_nginx() -> str | None:
    """Why the load-balanced tests can't run here, or None if they can."""
    if os.access(NGINX, os.X_OK):
        return None
    return (
        f"{NGINX} not found: the load-balanced tests run Debian's nginx in front of two "
        "mitmdumps (`apt-get install nginx`, as .ci/run does as root)"
    )


def render(
    conf: str, listen_port: int, upstream_ports: Sequence[int], down: Sequence[int] = ()
) -> str:
    """`conf` (the docs' config) listening on 127.0.0.1:`listen_port`, its upstream made of
    one server line per port in `upstream_ports` (with the docs' parameters), those in `down`
    marked `down` (nginx sends them nothing: how a process is drained before it is stopped).

    Fails if the docs' lines are not where this expects them, rather than run something else.
    """
    servers = list(SERVER_LINE.finditer(conf))
    listens = list(LISTEN_LINE.finditer(conf))
    assert len(servers) >= 1 and len(listens) == 1, f"{DOCS_CONF} no longer has the lines to set"
    first = servers[0]
    lines = "".join(
        f"{first['indent']}server {HOST}:{port}{first['params']}"
        + (" down" if port in down else "")
        + ";\n"
        for port in upstream_ports
    )
    conf = SERVER_LINE.sub(lambda m: lines if m.start() == first.start() else "", conf)
    return LISTEN_LINE.sub(lambda m: f"{m['indent']}listen {HOST}:{listen_port};\n", conf)


class Nginx(Process):
    """nginx with the docs' config, in the foreground, its prefix (pid file, temp directories)
    in `directory`; on 127.0.0.1:`port` in front of `upstream_ports`.

    The caller waits for it to serve (it answers only once the mitmdumps do, so the caller
    knows what to ask).
    """

    def __init__(self, directory: Path, port: int, upstream_ports: Sequence[int]) -> None:
        self.directory = directory
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.upstream_ports = list(upstream_ports)
        self.conf = directory / "nginx.conf"
        directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render(DOCS_CONF.read_text(), port, upstream_ports))
        command = [
            str(NGINX), "-p", str(directory), "-e", "stderr", "-c", str(self.conf),
            "-g", "daemon off;",
        ]  # fmt: skip
        super().__init__(command, directory / "nginx.log")

    def workers(self) -> set[int]:
        """The master's worker processes (nginx's cache processes have none here)."""
        return set(children(self.pid))

    def wait_workers(self, timeout: float = 30.0) -> set[int]:
        """Poll until the master has started its worker; the workers' pids."""
        found: set[int] = set()

        def started() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"nginx exited with {self.popen.returncode}:\n{self.output()}")
            found.update(self.workers())
            return bool(found)

        wait_for(started, timeout, "nginx's worker")
        return found

    def reconfigure(self, down: Sequence[int], timeout: float = 60.0) -> None:
        """Rewrite the config with the upstreams in `down` marked down, and reload it (SIGHUP,
        by pid); returns once the old workers have exited, so that no request goes to those
        upstreams any more and none is in flight there.

        nginx's graceful reload: new workers with the new config take new connections; an old
        one closes its idle connections, finishes the requests it has in flight, then exits.
        """
        old = self.workers()
        self.conf.write_text(
            render(DOCS_CONF.read_text(), self.port, self.upstream_ports, down=down)
        )
        os.kill(self.pid, signal.SIGHUP)

        def reloaded() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"nginx exited with {self.popen.returncode}:\n{self.output()}")
            workers = self.workers()
            return bool(workers - old) and not workers & old

        wait_for(reloaded, timeout, "nginx's reload (old workers gone, new ones up)")
