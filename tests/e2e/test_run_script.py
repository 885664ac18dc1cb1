"""End to end: scripts/run, the proxy with an embedded Redis when none answers."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis, answers
from counting_addon.launcher.run import embedded_redis_for
from counting_addon.store.url import parse
from tests.support.processes import (
    ROOT,
    Process,
    free_port,
    wait_for,
    wait_until_serving,
    web_options,
)
from tests.support.procfs import alive, children, cmdline

RUN = ROOT / "scripts" / "run"
DATA = ROOT / ".redis"
READY_TIMEOUT = 90.0  # scripts/run may first check the venv, then start Redis and the proxy
EXIT_TIMEOUT = 20.0


def environment() -> dict[str, str]:
    """Ours, minus REDIS_URL: the tests say which Redis to use with --set."""
    return {k: v for k, v in os.environ.items() if k != "REDIS_URL"}


def redis_files(port: int) -> list[Path]:
    """What an embedded Redis on `port` leaves in .redis/."""
    return [DATA / f"appendonly-{port}.aof", DATA / f"dump-{port}.rdb", DATA / f"redis-{port}.log"]


def unused_redis_port() -> int:
    """A free port with nothing answering Redis and no data in .redis/ from an earlier run."""
    for _ in range(20):
        port = free_port()
        if not any(p.exists() for p in redis_files(port)):
            assert not answers(f"redis://127.0.0.1:{port}/0", timeout=0.5)
            return port
    raise AssertionError("no free port without leftover data in .redis/")


class Run(Process):
    """scripts/run [--web] UPSTREAM -p PORT ... as a child process."""

    def __init__(self, directory: Path, upstream: str, *args: str, web: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(RUN),
            *(["--web"] if web else []),
            upstream,
            "-p", str(self.port),
            "--listen-host", "127.0.0.1",
            "--set", f"confdir={directory / 'confdir'}",
            *args,
        ]  # fmt: skip
        super().__init__(command, directory / f"run-{self.port}.log", env=environment())
        self.proxy_pid: int | None = None

    def wait_ready(self) -> None:
        wait_until_serving(self, self.url, READY_TIMEOUT)
        tools = [p for p in children(self.pid) if "/mitm" in cmdline(p)]
        assert len(tools) == 1, [cmdline(p) for p in children(self.pid)]
        self.proxy_pid = tools[0]

    def terminate(self) -> int:
        """SIGTERM to scripts/run; its exit code, which must come within EXIT_TIMEOUT."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"scripts/run still running {EXIT_TIMEOUT}s after SIGTERM:\n{self.output()}"
            ) from None

    def cleanup(self) -> None:
        self.stop()
        # Should scripts/run have been killed, its proxy (in its own session) would live on.
        if (
            self.proxy_pid is not None
            and alive(self.proxy_pid)
            and "/mitm" in cmdline(self.proxy_pid)
        ):
            os.kill(self.proxy_pid, signal.SIGKILL)


RunFactory = Callable[..., Run]


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[RunFactory]:
    """Starts scripts/run (waiting until /status answers); stops it after the test."""
    started: list[Run] = []

    def start(upstream: str, *args: str, web: bool = False) -> Run:
        run = Run(tmp_path / f"run{len(started)}", upstream, *args, web=web)
        started.append(run)
        run.wait_ready()
        return run

    yield start
    for run in started:
        run.cleanup()
    for run in started:
        assert "Traceback" not in run.output(), run.output()


@pytest.fixture
def embedded_port() -> Iterator[int]:
    """A port for scripts/run's embedded Redis; its files in .redis/ are removed afterwards."""
    port = unused_redis_port()
    yield port
    for path in redis_files(port):
        path.unlink(missing_ok=True)


def status(run: Run) -> dict[str, int]:
    r = httpx.get(f"{run.url}/status", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, int] = r.json()
    return body


def proxied(run: Run, n: int) -> None:
    with httpx.Client(base_url=run.url, timeout=10) as client:
        for i in range(n):
            r = client.get(f"/item/{i}")
            assert r.status_code == 200
            assert r.json()["path"] == f"/item/{i}"


def test_starts_embedded_redis_counts_and_shuts_down_cleanly(
    embedded_port: int, start_run: RunFactory, upstream: str
) -> None:
    # embedded_port comes first so that its clean-up runs after scripts/run is stopped.
    url = f"redis://127.0.0.1:{embedded_port}/0"
    run = start_run(upstream, "--set", f"counter_redis_url={url}")
    assert "starting an embedded Redis there" in run.output()

    # The embedded redis-server is a child of scripts/run, on the port of the URL.
    servers = [p for p in children(run.pid) if "redis-server" in cmdline(p)]
    assert len(servers) == 1, [cmdline(p) for p in children(run.pid)]
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        assert client.ping() is True
    assert status(run)["counter"] == 0

    proxied(run, 5)
    assert status(run)["counter"] == 5
    # Counted just before shutdown: the proxy's shutdown must write these to the embedded
    # Redis, which scripts/run stops only after the proxy has exited.
    proxied(run, 3)

    assert run.terminate() == 0
    assert not answers(url, timeout=1.0), "the embedded Redis still answers after exit"
    assert not alive(servers[0])
    assert run.proxy_pid is not None and not alive(run.proxy_pid)

    # The counts are on disk: the same data directory and port serve them again.
    with EmbeddedRedis(embedded_port, DATA) as again:
        with redis.Redis.from_url(again.url, socket_timeout=5) as client:
            assert client.get("counter") == b"8"


def test_uses_redis_that_already_answers(
    start_run: RunFactory, upstream: str, redis_url: str, redis_client: redis.Redis
) -> None:
    run = start_run(upstream, "--set", f"counter_redis_url={redis_url}")
    assert "using the Redis at" in run.output()
    assert "starting an embedded Redis" not in run.output()
    # Only the proxy was started, no redis-server.
    assert [p for p in children(run.pid) if "redis-server" in cmdline(p)] == []
    assert children(run.pid) == [run.proxy_pid]

    proxied(run, 4)
    assert status(run)["counter"] == 4
    assert redis_client.get("counter") == b"4"

    assert run.terminate() == 0
    # The Redis that was there is left running.
    assert redis_client.ping() is True
    assert redis_client.get("counter") == b"4"


def test_a_redis_asking_for_a_password_counts_as_answering(tmp_path: Path) -> None:
    """scripts/run must not start a second Redis on the port of one that wants a password (and
    EmbeddedRedis.start waits for its own with one): refusing us is answering."""
    with EmbeddedRedis(free_port(), tmp_path, "--requirepass", "Pw-4c1d") as server:
        assert answers(server.url)
        assert answers(server.url.replace("redis://", "redis://:wrong@"))


def test_web_starts_mitmweb(start_run: RunFactory, upstream: str, redis_url: str) -> None:
    web_port = free_port()
    run = start_run(
        upstream,
        "--set",
        f"counter_redis_url={redis_url}",
        *web_options(web_port),
        web=True,
    )
    assert run.proxy_pid is not None
    assert "/mitmweb" in cmdline(run.proxy_pid)
    assert status(run)["counter"] == 0
    proxied(run, 2)
    assert status(run)["counter"] == 2

    def web_answers() -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{web_port}/flows", timeout=2)
        except httpx.HTTPError:
            return False
        # No token: refused. It is mitmweb's API answering, not something else on the port.
        assert r.status_code == 403
        assert r.headers["server"].startswith("mitmproxy")
        return True

    wait_for(web_answers, 30, f"mitmweb's web UI on port {web_port}")
    assert run.terminate() == 0


@pytest.mark.parametrize("args", [[], ["--web"], ["-p", "8080"], ["--web", "--set", "x=1"]])
def test_without_url_prints_usage(args: list[str]) -> None:
    done = subprocess.run(
        [str(RUN), *args], capture_output=True, text=True, timeout=120, env=environment()
    )
    assert done.returncode == 2
    assert "usage: scripts/run [--web] UPSTREAM_URL" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:1,127.0.0.1:2", "redis+sentinel://127.0.0.1:1/mymaster"]
)
def test_a_cluster_or_sentinel_url_never_gets_an_embedded_redis(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to start in their place (and nothing answers there): used as they are."""
    assert embedded_redis_for(parse(url), DATA) is None
    assert "using the Redis at" in capsys.readouterr().err
