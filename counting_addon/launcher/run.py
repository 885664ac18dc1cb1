"""scripts/run: the counting reverse proxy, with an embedded Redis when none answers.

python -m counting_addon.launcher.run [--web] UPSTREAM_URL [mitmdump arguments...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from counting_addon.launcher.embedded_redis import EmbeddedRedis, answers
from counting_addon.store.url import RedisTarget, Topology, default_url, parse

PACKAGE = Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent
SCRIPT = PACKAGE / "addon.py"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
USAGE = "usage: scripts/run [--web] UPSTREAM_URL [mitmdump/mitmweb arguments...]"


def redis_url(args: list[str]) -> str:
    """The counter_redis_url the proxy will use: from --set, else REDIS_URL, else the default."""
    url = default_url()
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--set" and i + 1 < len(args) else arg.removeprefix("--set=")
        if value.startswith("counter_redis_url="):
            url = value.partition("=")[2]
    return url


def embedded_redis_for(target: RedisTarget) -> EmbeddedRedis | None:
    """An embedded Redis to start for `target`, or None if it answers or isn't on this
    machine."""
    shown = target.redacted
    if target.topology is not Topology.SERVER or answers(target.url):
        print(f"counting_addon: using the Redis at {shown}", file=sys.stderr)
        return None
    parts = urlsplit(target.url)
    if parts.scheme != "redis" or parts.hostname not in LOCAL_HOSTS:
        print(
            f"counting_addon: nothing answers at {shown}; proxying anyway, counts wait "
            "in memory until it does",
            file=sys.stderr,
        )
        return None
    extra = ("--requirepass", parts.password) if parts.password else ()
    print(
        f"counting_addon: nothing answers at {shown}; starting an embedded Redis there "
        f"(data in {ROOT / '.redis'})",
        file=sys.stderr,
    )
    return EmbeddedRedis(parts.port or 6379, ROOT / ".redis", *extra)


def main(argv: list[str]) -> int:
    tool = "mitmdump"
    if argv[:1] == ["--web"]:
        tool, argv = "mitmweb", argv[1:]
    if not argv or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    upstream, args = argv[0], argv[1:]
    try:
        target = parse(redis_url(args))
    except ValueError as e:
        print(f"counting_addon: counter_redis_url: {e}", file=sys.stderr)
        return 2

    server = embedded_redis_for(target)
    if server is not None:
        server.start()
    try:
        command = [
            os.path.join(os.path.dirname(sys.executable), tool),
            "-s",
            str(SCRIPT),
            "--mode",
            f"reverse:{upstream}",
            *args,
        ]
        # Its own session, so one Ctrl-C reaches it once, through us.
        proxy = subprocess.Popen(command, start_new_session=True)

        def forward(signum: int, _frame: FrameType | None) -> None:
            proxy.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        return proxy.wait()
    finally:
        # Only after the proxy has exited: its shutdown writes the last counts to this Redis.
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
