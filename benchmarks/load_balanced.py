"""One counting mitmdump against two behind nginx, on this machine: what a second process buys.

    .venv/bin/python -m benchmarks.load_balanced          # after scripts/bench's set-up

Three variants, all counting into one Redis key, loaded by wrk with small GETs toward a fast
origin (nginx with benchmarks/nginx.conf, as scripts/bench uses):

- one: one mitmdump, wrk straight at it;
- one behind nginx: the same mitmdump behind nginx with docs/deployment/nginx.conf (the
  cost of nginx's hop alone);
- two behind nginx: that mitmdump and a second one behind nginx with the same config.

Nothing is pinned to a core: the point is what two processes make of the machine's cores,
shared with wrk, nginx, the origin and Redis. Rounds are interleaved (every variant once per
round, the order rotating) and medians reported. Afterwards the exact check: a known number of
requests through the two behind nginx, and /status through nginx and on each process must all
answer exactly that. Writes a markdown table to stdout and to docs/benchmarks/load_balanced.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.bench import BIN, OUT, ROOT, LoadResult, Variant, log, start_origin, wrk
from counting_addon.launcher.embedded_redis import EmbeddedRedis, stop_process
from tests.support.http_client import counter_of
from tests.support.load import Load
from tests.support.metrics import scrape
from tests.support.nginx import DOCS_CONF, Nginx, missing_nginx
from tests.support.processes import free_port, wait_until_serving

KEY = "counter"
# The exact check at the end: this many GETs through the two behind nginx (a few more: each
# client checks the bound before sending), so many clients at once.
CHECK_REQUESTS = 2000
CHECK_CLIENTS = 16


@dataclass
class Target:
    """What wrk loads: a name, a URL, and the mitmdumps behind it."""

    name: str
    url: str
    proxies: list[Variant]


@dataclass
class Run:
    target: str
    connections: int
    result: LoadResult
    # Requests each mitmdump counted during the run (its /metrics), in `proxies` order.
    shares: list[int]
    # The shared count's growth over the run, against wrk's completed requests: at least
    # those, at most those plus the requests wrk cut at its end (one per connection).
    counted: int


def requests_total(proxy: Variant) -> int:
    return int(scrape(proxy.url).value("counting_addon_requests_total"))


def shared_count(proxies: list[Variant]) -> int:
    """The shared count once every process has written its own pending counts (each /status
    writes that process's): the last answer has them all."""
    return [counter_of(p.url, timeout=30) for p in proxies][-1]


class LoadBalancedBench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.redis = EmbeddedRedis(free_port(), workdir / "redis", "--appendonly", "no")
        self.origin_port = free_port()
        self.origin: subprocess.Popen[bytes] | None = None
        origin = f"http://127.0.0.1:{self.origin_port}"
        self.mitmdumps = [self._mitmdump(f"mitmdump{i + 1}", origin) for i in range(2)]
        self.balancers: list[Nginx] = []
        self.targets: list[Target] = []
        self.runs: list[Run] = []

    def _mitmdump(self, name: str, origin: str) -> Variant:
        v = Variant(name, "mitmdump + counting_addon, defaults", [], pinned=False)
        v.command = [
            str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "-p", str(v.port),
            "--mode", f"reverse:{origin}", "--set", f"confdir={self.workdir / 'confdir'}",
            "-s", str(ROOT / "counting_addon" / "addon.py"),
            "--set", f"counter_redis_url={self.redis.url}", "--set", f"counter_key={KEY}",
        ]  # fmt: skip
        return v

    def _balancer(self, name: str, proxies: list[Variant]) -> Target:
        nginx = Nginx(self.workdir / name, free_port(), [p.port for p in proxies])
        self.balancers.append(nginx)
        wait_until_serving(nginx, nginx.url)
        return Target(name, nginx.url, proxies)

    def start(self) -> None:
        self.redis.start()
        self.origin = start_origin(
            self.workdir, self.origin_port, free_port(), free_port(), self.workdir / "tls"
        )
        for v in self.mitmdumps:
            v.start(self.workdir)
        one = self.mitmdumps[0]
        self.targets = [
            Target("one", one.url, [one]),
            self._balancer("one behind nginx", [one]),
            self._balancer("two behind nginx", self.mitmdumps),
        ]

    def stop(self) -> None:
        for nginx in self.balancers:
            nginx.stop()
        for v in self.mitmdumps:
            v.stop()
        if self.origin is not None:
            stop_process(self.origin, 15)
        self.redis.stop()

    def measure(self, target: Target, connections: int, seconds: int) -> Run:
        before = [requests_total(p) for p in target.proxies]
        count_before = shared_count(target.proxies)
        result = wrk(f"{target.url}/", connections, seconds)
        shares = [requests_total(p) - b for p, b in zip(target.proxies, before, strict=True)]
        counted = shared_count(target.proxies) - count_before
        return Run(target.name, connections, result, shares, counted)

    def rounds(self) -> None:
        log("warming up")
        for target in self.targets:
            wrk(f"{target.url}/", 16, 1)
        for r in range(self.args.rounds):
            log(f"round {r + 1} of {self.args.rounds}")
            shift = r % len(self.targets)
            order = self.targets[shift:] + self.targets[:shift]
            for connections in self.args.connections:
                for target in order:
                    run = self.measure(target, connections, self.args.seconds)
                    self.runs.append(run)
                    res = run.result
                    log(
                        f"c={connections:<3} {target.name:<18} {res.rps:7.0f} req/s  "
                        f"p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms  "
                        f"errors {res.errors}  shares {run.shares}  counted {run.counted} "
                        f"of {res.requests} answered"
                    )

    def exact_check(self) -> str:
        """About CHECK_REQUESTS GETs through the two behind nginx, from a count of 0, by
        CHECK_CLIENTS keep-alive clients: every one answered 200, and /status on each process
        and through nginx answers exactly the number answered."""
        pair = self.targets[-1]
        with redis.Redis.from_url(self.redis.url) as client:
            client.delete(KEY)
        before = [requests_total(p) for p in pair.proxies]
        load = Load(pair.url, CHECK_CLIENTS, max_requests=CHECK_REQUESTS, max_seconds=300)
        with load:
            load.wait_for_more(CHECK_REQUESTS, timeout=300)
        done = load.results
        shares = [requests_total(p) - b for p, b in zip(pair.proxies, before, strict=True)]
        answers = [counter_of(p.url) for p in pair.proxies] + [counter_of(pair.url)]
        verdict = (
            f"{done.sent} GETs through the two behind nginx ({CHECK_CLIENTS} clients at once): "
            f"{done.ok} answered 200, {shares} per process; /status on each process and "
            f"through nginx: {answers}"
        )
        log(verdict)
        if done.failed or answers != [done.ok] * len(answers):
            raise RuntimeError(f"the shared count is not exact: {verdict}; {done.failed[:3]}")
        return verdict


def median(runs: list[Run], what: Callable[[LoadResult], float]) -> float:
    return statistics.median(what(r.result) for r in runs)


def report(bench: LoadBalancedBench, verdict: str, seconds: float) -> str:
    args = bench.args
    lines = [
        "# One counting mitmdump against two behind nginx",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} by `python -m benchmarks.load_balanced` on "
        f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
        f"in {seconds:.0f} s. Everything on loopback, nothing pinned: wrk (`-t1`), nginx "
        "(the balancer, one worker, `docs/deployment/nginx.conf`), nginx as the origin (a small "
        "`200 ok`, `benchmarks/nginx.conf`), one Redis, and the mitmdumps (counting_addon, "
        "defaults, one Redis key) all share the machine. Rounds interleaved (every variant "
        f"once per round, order rotating); medians over {args.rounds} rounds of "
        f"{args.seconds} s.",
        "",
        "| variant | what |",
        "| --- | --- |",
        "| one | one mitmdump, wrk straight at it |",
        "| one behind nginx | the same mitmdump behind nginx: nginx's own cost |",
        "| two behind nginx | two mitmdumps behind nginx, one shared count |",
        "",
        "| variant | conns | req/s | vs one | p50 ms | p99 ms | errors | "
        "share of the second process | counted - answered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for connections in args.connections:
        of = [r for r in bench.runs if r.connections == connections]
        base = median([r for r in of if r.target == "one"], lambda x: x.rps)
        for target in bench.targets:
            runs = [r for r in of if r.target == target.name]
            rps = median(runs, lambda x: x.rps)
            errors = sum(r.result.errors for r in runs)
            if len(target.proxies) > 1:
                second = statistics.median(r.shares[1] / max(1, sum(r.shares)) for r in runs)
                share = f"{second:.0%}"
            else:
                share = "-"
            extra = [r.counted - r.result.requests for r in runs]
            lines.append(
                f"| {target.name} | {connections} | {rps:.0f} | {rps / base:.2f}x | "
                f"{median(runs, lambda x: x.p50_ms):.2f} | {median(runs, lambda x: x.p99_ms):.2f} "
                f"| {errors} | {share} | {min(extra)}..{max(extra)} |"
            )
    lines += [
        "",
        '"counted - answered": how much the shared count grew during a run beyond the '
        "requests wrk saw answered, min..max over the rounds: wrk stops with up to one "
        "request per connection in flight, proxied and counted but not in its figures, so "
        "0 up to the connections is exact counting.",
        "",
        f"Exact check afterwards: {verdict}.",
        "",
        f"nginx config: `{DOCS_CONF.relative_to(ROOT)}`, ports rewritten "
        "(`tests/support/nginx.py`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--out", type=Path, default=OUT / "load_balanced.md")
    args = parser.parse_args()
    why = missing_nginx()
    if why is not None:
        raise SystemExit(why)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="counting-lb-bench-", dir=base) as tmp:
        bench = LoadBalancedBench(args, Path(tmp))
        log(f"work directory {tmp}")
        try:
            bench.start()
            bench.rounds()
            verdict = bench.exact_check()
        finally:
            bench.stop()
    text = report(bench, verdict, time.monotonic() - started)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
