"""Real parts for the tests: redis-server, upstream server and mitmdump, each a process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from counting_addon.embedded_redis import EmbeddedRedis, stop_process

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "counting_addon" / "addon.py"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def start_redis(directory: Path, *args: str) -> EmbeddedRedis:
    for _ in range(5):  # the free port may be taken between probing and binding
        server = EmbeddedRedis(free_port(), directory, *args)
        try:
            server.start()
        except RuntimeError:
            continue
        return server
    raise RuntimeError("could not start redis-server")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The shared test Redis, emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


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


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tests' upstream HTTP server (tests/support/upstream.py); its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    script = ROOT / "tests" / "support" / "upstream.py"
    proc = Process([sys.executable, str(script), str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: "ready" in proc.output(), 15, "the upstream server")
    yield url
    proc.stop()


def proxy_command(tool: str, upstream: str, port: int, confdir: Path, *args: str) -> list[str]:
    """mitmdump, mitmweb or mitmproxy with the addon, in reverse mode on 127.0.0.1:`port`."""
    return [
        str(BIN / tool),
        "-s", str(SCRIPT),
        "--mode", f"reverse:{upstream}",
        "--listen-host", "127.0.0.1",
        "-p", str(port),
        "--set", f"confdir={confdir}",
        *args,
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


class Proxy(Process):
    """mitmdump (or mitmweb) with the addon, in reverse mode in front of `upstream`.

    `redis_url` None leaves counter_redis_url unset (so REDIS_URL or the default applies).
    """

    def __init__(
        self,
        directory: Path,
        upstream: str,
        redis_url: str | None,
        *args: str,
        tool: str = "mitmdump",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        if redis_url is not None:
            args = ("--set", f"counter_redis_url={redis_url}", *args)
        command = proxy_command(tool, upstream, self.port, directory.parent / "confdir", *args)
        super().__init__(command, directory / f"{tool}-{self.port}.log", env=env)

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until_serving(self, self.url, timeout)


ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Starts proxies (waiting until /status answers); stops them after the test.

    A proxy that logged a traceback fails the test: the addon must never raise.
    """
    started: list[Proxy] = []

    def start(upstream: str, redis_url: str | None, *args: str, **kwargs: object) -> Proxy:
        proxy = Proxy(tmp_path / f"proxy{len(started)}", upstream, redis_url, *args, **kwargs)  # type: ignore[arg-type]
        started.append(proxy)
        proxy.wait_ready()
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
    for proxy in started:
        assert "Traceback" not in proxy.output(), proxy.output()


@pytest.fixture
def proxy(start_proxy: ProxyFactory, upstream: str, redis_url: str) -> Proxy:
    """One mitmdump with the addon, defaults otherwise, in front of the test upstream."""
    return start_proxy(upstream, redis_url)
