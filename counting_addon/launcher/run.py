"""counting-proxy (and `python -m counting_addon`, and scripts/run): the counting reverse proxy,
with an embedded Redis when none answers.

counting-proxy [--web] [--redis-dir DIR] UPSTREAM_URL [mitmdump/mitmweb arguments...]
counting-proxy --addon-path | --version
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from counting_addon import __version__
from counting_addon.launcher.embedded_redis import EmbeddedRedis, answers
from counting_addon.store.url import RedisTarget, Topology, default_url, parse

PACKAGE = Path(__file__).resolve().parent.parent
SCRIPT = PACKAGE / "addon.py"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
# The name the usage line shows: scripts/run sets it to its own.
PROG_VARIABLE = "COUNTING_PROXY_PROG"
USAGE = """\
usage: {prog} [--web] UPSTREAM_URL [mitmdump/mitmweb arguments...]
       {prog} --addon-path | --version
  --web            run mitmweb instead of mitmdump
  --redis-dir DIR  where an embedded Redis keeps its data (default: {data})
  --addon-path     print the addon script's path, for `mitmdump -s` or config.yaml's `scripts:`
  --version        print the version
Options go before UPSTREAM_URL; every argument after it goes to mitmdump/mitmweb."""


def default_data_dir() -> Path:
    """Where an embedded Redis keeps its data unless --redis-dir says: the user's data
    directory (XDG), never the installed package's."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "counting-addon" / "redis"


@dataclass
class Launch:
    """What the command line asks for: the tool, the upstream, the tool's own arguments."""

    upstream: str
    args: list[str]
    web: bool = False
    data: Path | None = None


class BadArguments(Exception):
    """A command line to refuse: the message, printed alone, then exit status 2."""


def parse_args(argv: list[str], prog: str) -> Launch | str:
    """The launch `argv` asks for, or the text to print for --addon-path and --version.

    Raises BadArguments for anything else: no UPSTREAM_URL, an unknown option before it, an
    option without its value.
    """
    if argv == ["--addon-path"]:
        return str(SCRIPT)
    if argv == ["--version"]:
        return f"counting-addon {__version__}"
    usage = USAGE.format(prog=prog, data=default_data_dir())
    if argv[:1] in (["-h"], ["--help"]):
        return usage
    web, data = False, None
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option == "--web":
            web = True
        elif option == "--redis-dir" or option.startswith("--redis-dir="):
            value = option.partition("=")[2] if "=" in option else (rest.pop(0) if rest else "")
            if not value or value.startswith("-"):
                raise BadArguments(f"{prog}: --redis-dir needs a directory")
            data = Path(value)
        else:
            raise BadArguments(
                f"{prog}: unknown option {option} before UPSTREAM_URL (mitmdump/mitmweb's "
                f"arguments go after it)\n{usage}"
            )
    if not rest:
        raise BadArguments(usage)
    return Launch(rest[0], rest[1:], web, data)


def redis_url(args: list[str]) -> str:
    """The counter_redis_url the proxy will use: from --set, else REDIS_URL, else the default."""
    url = default_url()
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--set" and i + 1 < len(args) else arg.removeprefix("--set=")
        if value.startswith("counter_redis_url="):
            url = value.partition("=")[2]
    return url


def embedded_redis_for(target: RedisTarget, data: Path) -> EmbeddedRedis | None:
    """An embedded Redis to start for `target`, its data in `data`; None if it answers or isn't
    on this machine."""
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
        f"(data in {data})",
        file=sys.stderr,
    )
    return EmbeddedRedis(parts.port or 6379, data, *extra)


def main(argv: list[str], prog: str = "counting-proxy") -> int:
    try:
        parsed = parse_args(argv, os.environ.get(PROG_VARIABLE) or prog)
    except BadArguments as e:
        print(e, file=sys.stderr)
        return 2
    if isinstance(parsed, str):
        print(parsed)
        return 0
    try:
        target = parse(redis_url(parsed.args))
    except ValueError as e:
        print(f"counting_addon: counter_redis_url: {e}", file=sys.stderr)
        return 2

    server = embedded_redis_for(target, parsed.data or default_data_dir())
    if server is not None:
        server.start()
    try:
        command = [
            os.path.join(os.path.dirname(sys.executable), "mitmweb" if parsed.web else "mitmdump"),
            "-s",
            str(SCRIPT),
            "--mode",
            f"reverse:{parsed.upstream}",
            *parsed.args,
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


def console() -> None:
    """The `counting-proxy` command (pyproject.toml's [project.scripts])."""
    sys.exit(main(sys.argv[1:]))
