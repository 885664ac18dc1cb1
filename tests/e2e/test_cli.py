"""The addon as people load it: --options, config.yaml, the mitmproxy console, script reload."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import threading
from pathlib import Path

import httpx
import redis

from tests.support.http_client import status_of
from tests.support.load import Load
from tests.support.processes import (
    BIN,
    SCRIPT,
    Proxy,
    ProxyFactory,
    free_port,
    proxy_command,
    reload_script,
    script_copy,
    wait_for,
)

OPTIONS = [
    "counter_redis_url",
    "counter_key",
    "counter_status_path",
    "counter_metrics_path",
    "counter_allow_from",
    "counter_stream_threshold",
    "counter_websocket_history",
]


def test_options_are_listed_with_help() -> None:
    out = subprocess.run(
        [BIN / "mitmdump", "-s", SCRIPT, "--options"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in OPTIONS:
        assert f"\n{option}:" in out
    for help_text in [
        "Redis holding the shared counter",
        "Redis key of the shared",
        "Path answered",
    ]:
        assert help_text in out
    assert "streamed" in out.split("\ncounter_stream_threshold:")[0].rsplit("\n\n", 1)[1]


def test_options_from_config_yaml(
    start_proxy: ProxyFactory,
    upstream: str,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    confdir = tmp_path / "confdir"  # start_proxy's confdir
    confdir.mkdir()
    (confdir / "config.yaml").write_text("counter_key: from_yaml\ncounter_status_path: /health\n")
    proxy = start_proxy(upstream, redis_url)
    before = httpx.get(f"{proxy.url}/health").json()["counter"]
    assert httpx.get(f"{proxy.url}/status").json()["path"] == "/status"  # proxied now
    assert httpx.get(f"{proxy.url}/health").json()["counter"] == before + 1
    assert redis_client.get("from_yaml") == str(before + 1).encode()


def test_mitmproxy_console_loads_the_addon(
    upstream: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The console UI needs a terminal: give it a pseudo-terminal and drain it."""
    port = free_port()
    main, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm"}
    setting = f"counter_redis_url={redis_url}"
    console = subprocess.Popen(
        proxy_command("mitmproxy", upstream, port, tmp_path / "confdir", "--set", setting),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )  # fmt: skip
    os.close(secondary)

    screen = bytearray()

    def drain() -> None:
        try:
            while data := os.read(main, 65536):
                screen.extend(data)
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    try:

        def answers() -> bool:
            assert console.poll() is None, f"mitmproxy exited: {bytes(screen)!r}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, "the mitmproxy console's /status")
        assert httpx.get(f"http://127.0.0.1:{port}/a").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/status").json()["counter"] == 1
    finally:
        console.terminate()
        console.wait(20)
        os.close(main)
    assert redis_client.get("counter") == b"1"


def test_script_reload_under_traffic_loses_and_doubles_nothing(
    upstream: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """mitmproxy reloads a -s script when its file changes; edited three times while clients
    keep sending, the counts survive each swap exactly and the old instances let go of Redis."""
    script = script_copy(tmp_path)
    before = {c["id"] for c in redis_client.client_list()}
    proxy = Proxy(tmp_path / "proxy", upstream, redis_url, script=script)
    url = proxy.url
    try:
        proxy.wait_ready()
        with Load(url, concurrency=8, max_seconds=120) as load:
            for _ in range(3):
                load.wait_for_more(30)
                reload_script(proxy, script)
            load.wait_for_more(30)
        results = load.results
        assert not results.failed, results.failed[:5]

        last: list[str] = []

        def counted() -> bool:
            r = status_of(url)
            last[:] = [r.text]
            return r.status_code == 200 and r.json()["counter"] == results.ok

        try:
            wait_for(counted, 15, f"counter == {results.ok}")
        except AssertionError as e:
            proxied = proxy.output().count("/load/")  # mitmdump logs each flow once
            raise AssertionError(f"{e}: {proxied} flows in the log; /status said {last}") from None
        print(f"\n{results.ok} requests through 3 reloads, all counted once")

        def proxy_connections() -> list[str]:
            # Connections made since the proxy started: not the leftovers of earlier tests.
            return [
                f"{c['id']} {c['addr']} age {c['age']}s"
                for c in redis_client.client_list()
                if c["id"] not in before
            ]

        # The old instances' connections are closed. The current one has one: no request is
        # in flight, so its writer and its /status reads take turns on it.
        try:
            wait_for(lambda: len(proxy_connections()) <= 1, 30, "old connections to close")
        except AssertionError as e:
            raise AssertionError(f"{e}: {proxy_connections()}") from None
    finally:
        assert proxy.stop() == 0
    assert redis_client.get("counter") == str(results.ok).encode()
    assert "Traceback" not in proxy.output()
