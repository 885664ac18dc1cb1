"""Real processes for the tests: redis-server, mitmdump/mitmweb, any child with a log file.

It and procfs.py import nothing beyond httpx and the product: benchmarks/bench.py uses them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
from mitmproxy.proxy.mode_specs import ProxyMode

from counting_addon.launcher.embedded_redis import EmbeddedRedis, stop_process

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "counting_addon" / "addon.py"
BIN = Path(sys.executable).parent


def free_port(transport: Literal["tcp", "udp", "both"] = "tcp") -> int:
    """A port on 127.0.0.1 free for TCP, for UDP, or for both (a mode serving HTTP/3 too)."""
    kinds = {"tcp": [socket.SOCK_STREAM], "udp": [socket.SOCK_DGRAM]}
    first, *others = kinds.get(transport, [socket.SOCK_DGRAM, socket.SOCK_STREAM])
    for _ in range(100):
        with socket.socket(socket.AF_INET, first) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            try:
                for kind in others:
                    with socket.socket(socket.AF_INET, kind) as other:
                        other.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free for {transport}")


def unreachable_redis_url() -> str:
    """A Redis URL nothing listens on: connections are refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def poll(check: Callable[[], bool], within: float, what: str) -> None:
    """wait_for from a coroutine: in a thread, as the code under test needs the event loop
    meanwhile."""
    await asyncio.to_thread(wait_for, check, within, what)


# How long a wait proved pending gets to end all the same, once what keeps it waiting happened.
SETTLE = 0.1


async def stays_pending(
    awaitable: Awaitable[object], until: Callable[[], bool], what: str, within: float = 10.0
) -> None:
    """Proves that `awaitable` does not end while something keeps it waiting: runs it until
    `until` holds (polled for up to `within` s: the event that should keep it waiting, such as
    the writer's failed write) and SETTLE s more, fails the test if it ended meanwhile, and
    cancels it."""
    task = asyncio.ensure_future(awaitable)
    try:
        await poll(until, within, what)
        await asyncio.wait({task}, timeout=SETTLE)
        if task.done():
            raise AssertionError(f"ended after {what}: {task.result()!r}")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The messages logged in-process (captured by pytest) that contain `text`."""
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def start_redis(directory: Path, *args: str) -> EmbeddedRedis:
    for _ in range(5):  # the free port may be taken between probing and binding
        server = EmbeddedRedis(free_port(), directory, *args)
        try:
            server.start()
        except RuntimeError:
            continue
        return server
    raise RuntimeError("could not start redis-server")


class Process:
    """A child process with its output in a log file, stopped by pid."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        return stop_process(self.popen, timeout, sig)


def proxy_command(
    tool: str,
    upstream: str,
    port: int,
    confdir: Path,
    *args: str,
    script: Path = SCRIPT,
    listeners: Sequence[str] = (),
) -> list[str]:
    """mitmdump, mitmweb or mitmproxy with the addon, in reverse mode on 127.0.0.1:`port`.

    `listeners` are further `--mode` specs served by the same process, each with its own port
    (`regular@8081`, `reverse:http://host@8082`); they listen on 127.0.0.1 too.
    """
    assert all("@" in mode for mode in listeners), f"each listener needs its @port: {listeners}"
    return [
        str(BIN / tool),
        "-s", str(script),
        "--mode", f"reverse:{upstream}",
        *(arg for mode in listeners for arg in ("--mode", mode)),
        "--listen-host", "127.0.0.1",
        "-p", str(port),
        "--set", f"confdir={confdir}",
        *args,
    ]  # fmt: skip


def web_options(web_port: int) -> list[str]:
    """mitmweb's UI on 127.0.0.1:`web_port`, no browser opened."""
    return [
        "--set", f"web_port={web_port}",
        "--set", "web_host=127.0.0.1",
        "--set", "web_open_browser=false",
    ]  # fmt: skip


def wait_until_serving(process: Process, url: str, timeout: float = 30.0) -> None:
    """Poll `url`/status until the proxy answers anything; fail if the process exits first."""

    def answers() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(
                f"exited early with {process.popen.returncode}:\n{process.output()}"
            )
        try:
            httpx.get(f"{url}/status", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    wait_for(answers, timeout, f"the proxy at {url}")


def wait_listening(process: Process, port: int, timeout: float = 30.0) -> None:
    """Poll until 127.0.0.1:`port` accepts a TCP connection (closed at once, before any
    request, so nothing is proxied or counted); fail if the process exits first."""

    def accepts() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(
                f"exited early with {process.popen.returncode}:\n{process.output()}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return False
        return True

    wait_for(accepts, timeout, f"a listener on 127.0.0.1:{port}")


class Proxy(Process):
    """mitmdump (or mitmweb) with the addon, in reverse mode in front of `upstream`.

    `redis_url` None leaves counter_redis_url unset (so REDIS_URL or the default applies).
    `upstream`'s scheme picks what it listens on, as in mitmproxy: `http3://` (and `quic://`)
    UDP only, `https://` TCP and UDP (HTTP/3), `http://` TCP only.
    `listeners`: further `--mode` specs with their own ports, as for `proxy_command`; waiting
    for the first listener does not wait for those (`wait_listening` does).
    """

    def __init__(
        self,
        directory: Path,
        upstream: str,
        redis_url: str | None,
        *args: str,
        tool: str = "mitmdump",
        env: dict[str, str] | None = None,
        script: Path = SCRIPT,
        listeners: Sequence[str] = (),
    ) -> None:
        self.transport = ProxyMode.parse(f"reverse:{upstream}").transport_protocol
        self.port = free_port(self.transport)
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        if redis_url is not None:
            args = ("--set", f"counter_redis_url={redis_url}", *args)
        self.confdir = directory.parent / "confdir"
        # mitmproxy makes its CA here at start-up: clients that open with TLS trust this file.
        self.ca_cert = self.confdir / "mitmproxy-ca-cert.pem"
        command = proxy_command(
            tool, upstream, self.port, self.confdir, *args, script=script, listeners=listeners
        )
        super().__init__(command, directory / f"{tool}-{self.port}.log", env=env)

    def wait_ready(self, timeout: float = 30.0) -> None:
        if self.transport != "udp":
            wait_until_serving(self, self.url, timeout)
        if self.transport != "tcp":
            # No HTTP/1 to poll over UDP: mitmproxy logs this once every socket of the mode is
            # bound, which is after the addon is configured.
            listening = f"listening at 127.0.0.1:{self.port}."
            wait_for(lambda: self._alive() and listening in self.output(), timeout, listening)

    def _alive(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"exited early with {self.popen.returncode}:\n{self.output()}")
        return True


ProxyFactory = Callable[..., Proxy]


def script_copy(directory: Path) -> Path:
    """A copy of the -s script in `directory`, to edit so that mitmproxy reloads it."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SCRIPT, directory / SCRIPT.name))


def reload_script(proxy: Process, script: Path) -> None:
    """Edit `script`; return once `proxy` has loaded it again."""
    loads = proxy.output().count("Loading script")
    script.write_text(script.read_text() + "\n# edited\n")
    wait_for(lambda: proxy.output().count("Loading script") > loads, 30, "the script to reload")


def lines_with(process: Process, text: str) -> list[str]:
    """The lines of `process`'s output that contain `text`."""
    return [line for line in process.output().splitlines() if text in line]


# tests/support/upstream.py logs "request METHOD TARGET" for each request when this is set.
RECORD = "UPSTREAM_RECORD"


def start_upstream(directory: Path, *tls_files: Path, record: bool = False) -> tuple[Process, str]:
    """tests/support/upstream.py on a free port, over TLS given a certificate and key; with
    `record`, it logs every request it receives, for `reached_upstream`."""
    port = free_port()
    script = Path(__file__).with_name("upstream.py")
    command = [sys.executable, str(script), str(port), *map(str, tls_files)]
    env = {**os.environ, RECORD: "1"} if record else None
    proc = Process(command, directory / "upstream.log", env=env)
    wait_for(lambda: "ready" in proc.output(), 15, "the upstream server")
    return proc, f"{'https' if tls_files else 'http'}://127.0.0.1:{port}"


def reached_upstream(upstream: Process) -> list[str]:
    """What an upstream started with `record` received so far: "METHOD TARGET" per request,
    in the order it read their heads."""
    return [line.removeprefix("request ") for line in lines_with(upstream, "request ")]
