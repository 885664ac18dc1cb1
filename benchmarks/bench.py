"""scripts/bench: counting_addon side by side with bare mitmdump, a naive addon, the predecessor
and nginx, on loopback, over HTTP/1.1 (wrk), then bare and counting_addon over HTTP/2 with TLS
(h2load). Writes docs/benchmarks/results.md, results.json and results.png.

Rounds are interleaved (every variant once per round, the order rotating) and medians are
reported, because a shared 2-core machine is noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchmarks.profile import profile
from counting_addon.launcher.embedded_redis import EmbeddedRedis, stop_process
from counting_addon.store.keys import series_key

# The tests' helpers for ports, /proc and certificates, one copy of each: they need nothing
# the bench's own install lacks.
from tests.support.processes import free_port
from tests.support.procfs import KiB, MiB, cpu_seconds, status_bytes
from tests.support.tls import issue_server_cert, make_ca

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = ROOT / "docs" / "benchmarks"
GIB = 1024**3
# Every load goes round these paths (each matching one of ROUTES, none the first), and
# counting_addon_by counts by route,method over ROUTES: benchmarks/instructions.sh's too.
REQUEST_PATHS = (ROOT / "benchmarks" / "request_paths.txt").read_text().split()
ROUTES = (ROOT / "benchmarks" / "routes.txt").read_text().split()
# wrk's script: REQUEST_PATHS in turn, over all of its thread's connections.
WRK_PATHS = """
local paths = {%s}
local next_path = 0
request = function()
    next_path = next_path %% #paths + 1
    return wrk.format(nil, paths[next_path])
end
"""
# The commands a proxy sends to count: INCR (naive, predecessor), EVAL/EVALSHA (counting_addon).
# Not INCRBY: INFO commandstats also counts what a script runs inside Redis.
REDIS_WRITES = ("incr", "evalsha", "eval")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url}") from None
            time.sleep(0.05)


# With two cores or more, every proxy gets a core of its own and the load, the origin and Redis
# share the others: the proxies compete with neither the load nor each other's leftovers.
PROXY_CPUS = {0} if (os.cpu_count() or 1) >= 2 else None


def pin_to_proxy_cpus() -> None:
    if PROXY_CPUS is not None:
        os.sched_setaffinity(0, PROXY_CPUS)


@dataclass
class Variant:
    name: str
    description: str
    command: list[str]
    env: dict[str, str] | None = None
    mitmproxy: bool = True
    counts: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # On the proxies' core (PROXY_CPUS); False: wherever the scheduler puts it.
    pinned: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, logdir: Path) -> None:
        log(f"starting {self.name}")
        out = open(logdir / f"{self.name}.{self.port}.log", "wb")
        self.process = subprocess.Popen(
            self.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=pin_to_proxy_cpus if self.pinned else None,
        )
        out.close()
        wait_http(f"{self.url}/", self.process)

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, 15)


@dataclass
class LoadResult:
    """One wrk or h2load run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    # The proxy's CPU time over the measured part of the run, when the load measured it itself.
    proxy_cpu_s: float | None = None


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_latency(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(url: str, connections: int, seconds: int) -> LoadResult:
    """wrk toward `url`, round REQUEST_PATHS."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="paths-") as script:
        script.write(WRK_PATHS % ", ".join(json.dumps(p) for p in REQUEST_PATHS))
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout  # fmt: skip
    return parse_wrk(out)


def parse_wrk(out: str) -> LoadResult:
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return LoadResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=parse_latency(percentiles["50"]),
        p99_ms=parse_latency(percentiles["99"]),
        requests=requests,
        errors=errors + (int(non2xx.group(1)) if non2xx else 0),
    )


def parse_h2load(out: str, request_log: str) -> LoadResult:
    """h2load's summary, and its --log-file: one line per measured request, its start (µs since
    the epoch), status and duration in µs, for the percentiles (the summary has only min, max,
    mean and sd) and the statuses (the summary's may count a response that began in the
    warm-up)."""
    requests = [line.split() for line in request_log.splitlines() if line]
    durations_us = [int(duration) for _, _, duration in requests]
    not_2xx = sum(1 for _, status, _ in requests if not status.startswith("2"))
    if "Application protocol: h2" not in out:
        raise RuntimeError(f"h2load did not speak h2:\n{out}")
    rps = re.search(r"finished in \S+, ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed", out
    )
    if rps is None or counts is None or len(durations_us) < 2:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    done, failed = (int(n) for n in counts.groups())
    cuts = statistics.quantiles(durations_us, n=100)
    return LoadResult(
        rps=float(rps.group(1)),
        p50_ms=cuts[49] / 1000,
        p99_ms=cuts[98] / 1000,
        requests=done,
        errors=max(failed, not_2xx),
    )


def h2load(
    v: Variant, connections: int, streams: int, seconds: int, warm_up: int, workdir: Path
) -> LoadResult:
    """`connections` TLS connections speaking h2 (by ALPN), up to `streams` requests in flight on
    each, for `warm_up` seconds not measured (the connections' TLS and, for an h2 upstream, the
    proxy's upstream connections set up) then `seconds` measured; requests still in flight at the
    end are not counted. h2load checks no certificate."""
    log_file = workdir / "h2load-requests.log"  # the measured requests only
    log_file.unlink(missing_ok=True)  # h2load appends
    command = [
        "h2load", f"-c{connections}", f"-m{streams}", f"-D{seconds}",
        f"--warm-up-time={warm_up}", f"--log-file={log_file}",
        *(f"https://127.0.0.1:{v.port}{path}" for path in REQUEST_PATHS),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as h:
        time.sleep(warm_up)
        cpu_before = cpu_seconds(v.pid)
        try:
            out, err = h.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            h.kill()
            raise
        cpu = cpu_seconds(v.pid) - cpu_before
    if h.returncode:
        raise RuntimeError(f"h2load exited with {h.returncode}:\n{out}\n{err}")
    result = parse_h2load(out, log_file.read_text())
    result.proxy_cpu_s = cpu
    return result


class LatencySampler:
    """During a load run: one keep-alive client alternating GET /status and a proxied GET."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status: list[float] = []
        self.proxied: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        # Every half second: each /status makes the writer flush at once, and a busier poll
        # would turn the measurement of batching into one of polling.
        pair = [("/status", self.status), ("/sample", self.proxied)]
        while not self._stop.wait(0.5):
            pair.reverse()  # neither always goes first, after the pause
            for path, into in pair:
                start = time.perf_counter()
                conn.request("GET", path)
                conn.getresponse().read()
                into.append((time.perf_counter() - start) * 1000)
        conn.close()

    def __enter__(self) -> LatencySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def start_origin(
    workdir: Path, origin_port: int, proxy_port: int, origin_tls_port: int, tls: Path
) -> subprocess.Popen[bytes]:
    """nginx with benchmarks/nginx.conf, in `workdir`/nginx: the fast origin on `origin_port`
    (a small `200 ok`, /big, /upload), the same over TLS and h2 on `origin_tls_port` (its
    certificate from a CA made in `tls`), and nginx as a reverse proxy of it on `proxy_port`.
    Returns once the origin answers. benchmarks/load_balanced.py uses it too."""
    directory = workdir / "nginx"
    (directory / "uploads").mkdir(parents=True)
    # nginx's workers drop root for nobody: let them read the file and write uploads.
    workdir.chmod(0o755)
    directory.chmod(0o755)
    (directory / "uploads").chmod(0o777)
    with open(directory / "big.bin", "wb") as f:
        f.truncate(GIB)  # sparse: served from the page cache, no disk reads
    conf = (ROOT / "benchmarks" / "nginx.conf").read_text()
    conf = conf.replace("@DIR@", str(directory))
    conf = conf.replace("@ORIGIN_PORT@", str(origin_port))
    conf = conf.replace("@PROXY_PORT@", str(proxy_port))
    # The TLS origin's certificate, for 127.0.0.1, from a CA the h2-upstream proxies trust.
    ca = make_ca(tls, "bench CA")
    identity = issue_server_cert(ca, tls, "origin")
    conf = conf.replace("@ORIGIN_TLS_PORT@", str(origin_tls_port))
    conf = conf.replace("@TLS_CERT@", str(identity.cert_file))
    conf = conf.replace("@TLS_KEY@", str(identity.key_file))
    (directory / "nginx.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    out = open(directory / "stdout.log", "wb")
    process = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    wait_http(f"http://127.0.0.1:{origin_port}/", process)
    return process


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.origin_port = free_port()
        self.nginx_proxy_port = free_port()
        self.origin_tls_port = free_port()  # the same origin over TLS, speaking h2 by ALPN
        self.tls = workdir / "tls"
        self.redis = EmbeddedRedis(free_port(), workdir / "redis", "--appendonly", "no")
        self.redis_url = self.redis.url
        self.results: dict[str, object] = {
            "wrk": [],
            "pairs": [],
            "transfers": [],
            "h2": [],
            "h2_pairs": [],
            "h2_memory": [],
        }
        origin = f"http://127.0.0.1:{self.origin_port}"
        mitmdump = [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1"]
        confdir = ["--set", f"confdir={workdir / 'confdir'}"]
        addon = ["-s", str(ROOT / "counting_addon" / "addon.py")]
        self.variants: list[Variant] = []

        def variant(
            name: str, description: str, *extra: str, counts: bool = True, upstream: str = origin
        ) -> Variant:
            v = Variant(name, description, [], counts=counts)
            v.command = [*mitmdump, "-p", str(v.port), "--mode", f"reverse:{upstream}", *confdir]
            v.command += list(extra)
            return v

        def mitm(name: str, description: str, *extra: str, counts: bool = True) -> None:
            self.variants.append(variant(name, description, *extra, counts=counts))

        mitm("bare", "mitmdump, no addon", counts=False)
        # Only in the paired runs: bare against bare shows how far apart two identical
        # proxies measure on this machine.
        self.control = variant(
            "bare_again", "a second bare mitmdump, the paired runs' control", counts=False
        )
        mitm(
            "counting_addon",
            "mitmdump + counting_addon, defaults",
            *addon,
            "--set",
            f"counter_redis_url={self.redis_url}",
        )
        by = ["--set", "counter_by=route,method"]
        for route in ROUTES:
            by += ["--set", f"counter_routes={route}"]
        mitm(
            "counting_addon_by",
            f"mitmdump + counting_addon, counter_by=route,method over {len(ROUTES)} routes",
            *addon,
            "--set",
            f"counter_redis_url={self.redis_url}",
            "--set",
            "counter_key=by",
            *by,
        )
        mitm(
            "counting_addon_stream_all",
            "mitmdump + counting_addon, counter_stream_threshold=0",
            *addon,
            "--set",
            f"counter_redis_url={self.redis_url}",
            "--set",
            "counter_stream_threshold=0",
        )
        mitm(
            "naive",
            "mitmdump + an addon awaiting INCR in requestheaders",
            "-s",
            str(ROOT / "benchmarks" / "naive_addon.py"),
            "--set",
            f"naive_redis_url={self.redis_url}",
        )
        predecessor = Variant(
            "predecessor",
            "Starlette + httpx + redis.asyncio under uvicorn, as in the blog post",
            [],
            env={**os.environ, "UPSTREAM": origin, "REDIS_URL": self.redis_url},
            mitmproxy=False,
        )
        predecessor.command = [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(ROOT),
            "benchmarks.predecessor:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(predecessor.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        self.variants.append(predecessor)
        # The HTTP/2 phase with an h2 upstream: the same three, toward the origin's TLS port,
        # trusting the bench's own CA. Started for that phase only.
        tls_origin = f"https://127.0.0.1:{self.origin_tls_port}"
        trust = ("--set", f"ssl_verify_upstream_trusted_ca={self.tls / 'bench-CA.pem'}")
        ours = (*addon, "--set", f"counter_redis_url={self.redis_url}")
        self.h2_upstream_group = (
            variant("bare", "", *trust, counts=False, upstream=tls_origin),
            variant("bare_again", "", *trust, counts=False, upstream=tls_origin),
            variant("counting_addon", "", *ours, *trust, upstream=tls_origin),
            variant("counting_addon_by", "", *ours, "--set", "counter_key=by", *by, *trust,
                    upstream=tls_origin),
        )  # fmt: skip
        nginx = Variant("nginx", "nginx reverse proxy (the far limit)", [], mitmproxy=False)
        nginx.port = self.nginx_proxy_port
        nginx.counts = False
        self.variants.append(nginx)
        self.nginx_process: subprocess.Popen[bytes] | None = None

    # -- the fixed parts -------------------------------------------------------------------

    def start_nginx(self) -> None:
        self.nginx_process = start_origin(
            self.workdir,
            self.origin_port,
            self.nginx_proxy_port,
            self.origin_tls_port,
            self.tls,
        )
        self.variants[-1].process = self.nginx_process

    def redis_writes(self) -> int:
        with redis.Redis.from_url(self.redis_url) as client:
            stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in REDIS_WRITES)

    def series_counted(self) -> dict[str, int]:
        """What counting_addon_by counted, by series, all phases together."""
        with redis.Redis.from_url(self.redis_url, decode_responses=True) as client:
            counted = client.hgetall(series_key("by", "route,method"))
        return {values: int(n) for values, n in sorted(counted.items())}

    def reset_redis_stats(self) -> None:
        with redis.Redis.from_url(self.redis_url) as client:
            client.config_resetstat()

    # -- the measurements --------------------------------------------------------------------

    def load_round(self, round_number: int) -> None:
        order = self.variants[round_number % len(self.variants) :]
        order += self.variants[: round_number % len(self.variants)]
        for connections in self.args.connections:
            for v in order:
                assert v.process is not None
                self.reset_redis_stats()
                cpu_before = cpu_seconds(v.process.pid)
                with LatencySampler(v.port) as sampler:
                    result = wrk(f"{v.url}/", connections, self.args.seconds)
                cpu = cpu_seconds(v.process.pid) - cpu_before
                writes = self.redis_writes()
                proxied = result.requests + len(sampler.proxied)
                served = proxied + len(sampler.status)
                entry = {
                    "round": round_number,
                    "variant": v.name,
                    "connections": connections,
                    **result.__dict__,
                    "redis_writes_per_request": writes / proxied if v.counts else None,
                    "status_ms": sampler.status,
                    "sampled_proxied_ms": sampler.proxied,
                    "peak_rss_mib": status_bytes(v.process.pid, "VmHWM") / MiB,
                    # nginx's work happens in its worker, not in the process we started.
                    "cpu_us_per_request": cpu / served * 1e6 if v.name != "nginx" else None,
                }
                self.results["wrk"].append(entry)  # type: ignore[attr-defined]
                log(
                    f"round {round_number + 1} c={connections:<3} {v.name:<26} "
                    f"{result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
                )

    @property
    def paired_group(self) -> tuple[Variant, ...]:
        """bare, the control, counting_addon and counting_addon_by: the paired runs' group."""
        return (self.variants[0], self.control, *self.variants[1:3])

    def pair_up(
        self,
        setting: dict[str, object],
        group: tuple[Variant, ...],
        load: Callable[[Variant], LoadResult],
        pairs: int,
        into: str,
        runs_into: str | None = None,
        restart_every: int = 0,
    ) -> None:
        """bare against each other variant of the group (bare first, then the control: a second
        bare), back to back, `pairs` times under one `setting` of the `load`: the machine's
        drift cancels out of each pair's ratio. The ratios go to results[into], each run's own
        figures to results[runs_into] if given.

        `restart_every` K > 0: every process of the group is started afresh every K pairs and
        warmed up with one unmeasured run of the load. A process keeps for its whole life what
        chance gave it at start (its hash seed, hence the layout of every dict and set, and
        where its code and heap lie in memory), which made two identical bare mitmdumps read
        0.92 to 1.09 of each other from one run of this bench to the next: fresh processes
        spread that chance over the pairs, so that their median measures the variants and not
        the luck of their processes."""
        bare, *others = group
        label = " ".join(f"{k}={v}" for k, v in setting.items())
        for i in range(pairs):
            if restart_every and i and i % restart_every == 0:
                for v in group:
                    v.stop()
                    v.start(self.workdir)
                    load(v)
            for other in others:
                measured: dict[str, tuple[LoadResult, float]] = {}
                for v in (bare, other) if i % 2 == 0 else (other, bare):
                    assert v.process is not None
                    cpu_before = cpu_seconds(v.process.pid)
                    result = load(v)
                    cpu = cpu_seconds(v.process.pid) - cpu_before
                    if result.proxy_cpu_s is not None:  # over the measured part alone
                        cpu = result.proxy_cpu_s
                    if not result.requests:
                        raise RuntimeError(f"{v.name} {label}: no request done")
                    measured[v.name] = (result, cpu / result.requests * 1e6)
                    if runs_into is not None:
                        run = {"variant": v.name, **setting, "pair": i, **result.__dict__}
                        del run["proxy_cpu_s"]
                        run["cpu_us_per_request"] = measured[v.name][1]
                        self.results[runs_into].append(run)  # type: ignore[attr-defined]
                (b, b_cpu), (o, o_cpu) = measured[bare.name], measured[other.name]
                entry = {
                    "variant": other.name,
                    **setting,
                    "pair": i,
                    "rps": o.rps / b.rps,
                    "p50": o.p50_ms / b.p50_ms,
                    "p99": o.p99_ms / b.p99_ms,
                    "cpu_per_request": o_cpu / b_cpu,
                }
                self.results[into].append(entry)  # type: ignore[attr-defined]
                log(
                    f"pair {i + 1:>2} {label} {other.name + '/bare':<20} "
                    f"req/s {entry['rps']:.2f}  p50 {entry['p50']:.2f}  "
                    f"p99 {entry['p99']:.2f}  CPU/request {entry['cpu_per_request']:.2f}"
                    + (f"  errors {b.errors}/{o.errors}" if b.errors or o.errors else "")
                )

    def paired_runs(self) -> None:
        group = self.paired_group
        for connections in self.args.connections:

            def load(v: Variant, connections: int = connections) -> LoadResult:
                return wrk(f"{v.url}/", connections, self.args.pair_seconds)

            self.pair_up(
                {"connections": connections},
                group,
                load,
                self.args.pairs,
                "pairs",
                restart_every=self.args.restart_every,
            )

    def h2_phase(self) -> None:
        """HTTP/2 over TLS with h2load, paired like the HTTP/1.1 runs, toward the HTTP/1.1
        origin (mitmproxy then opens an upstream connection per stream) and, if asked, toward
        the origin's h2 port (one upstream connection per client connection, multiplexed).
        Each proxy's RSS before and after the whole phase."""
        groups = {
            "http/1.1": ("http1", self.paired_group),
            "h2": ("h2", self.h2_upstream_group),
        }
        for upstream, (option, group) in groups.items():
            if option not in self.args.h2_upstreams:
                continue
            if group is self.h2_upstream_group:
                log("bare, the control, counting_addon and _by toward nginx's h2 port")
                for v in group:
                    v.start(self.workdir)
            for v in group:  # every setting once, unmeasured, before the baseline of memory
                for connections, streams in self.args.h2_loads:
                    h2load(v, connections, streams, 1, 0, self.workdir)
            before = {v.port: status_bytes(v.pid, "VmRSS") for v in group}
            for connections, streams in self.args.h2_loads:

                def load(v: Variant, c: int = connections, m: int = streams) -> LoadResult:
                    args = self.args
                    return h2load(v, c, m, args.h2_seconds, args.h2_warm_up, self.workdir)

                setting = {"upstream": upstream, "connections": connections, "streams": streams}
                self.pair_up(setting, group, load, self.args.h2_pairs, "h2_pairs", "h2")
            for v in group:
                entry = {
                    "variant": v.name,
                    "upstream": upstream,
                    "rss_before_mib": before[v.port] / MiB,
                    "rss_after_mib": status_bytes(v.pid, "VmRSS") / MiB,
                    "peak_rss_mib": status_bytes(v.pid, "VmHWM") / MiB,
                }
                self.results["h2_memory"].append(entry)  # type: ignore[attr-defined]
                log(
                    f"h2 upstream={upstream} {v.name:<16} RSS {entry['rss_before_mib']:.1f} -> "
                    f"{entry['rss_after_mib']:.1f} MiB over the phase, "
                    f"peak {entry['peak_rss_mib']:.1f} MiB"
                )

    @contextmanager
    def rss_growth(self, pid: int) -> Iterator[list[int]]:
        """Yields a list that, afterwards, holds the RSS growth in KiB over the baseline."""
        baseline = status_bytes(pid, "VmRSS") // KiB
        peak = [baseline]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                peak[0] = max(peak[0], status_bytes(pid, "VmRSS") // KiB)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        growth: list[int] = []
        try:
            yield growth
        finally:
            stop.set()
            thread.join()
            growth.append(peak[0] - baseline)

    def transfer(self, v: Variant, direction: str) -> None:
        assert v.process is not None
        size = self.args.transfer_bytes
        with self.rss_growth(v.process.pid) as growth:
            start = time.perf_counter()
            if direction == "download":
                out = subprocess.run(
                    ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                     "-r", f"0-{size - 1}", f"{v.url}/big"],
                    capture_output=True, text=True, check=True, timeout=600,
                ).stdout  # fmt: skip
            else:
                zeros = subprocess.Popen(
                    ["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE
                )
                out = subprocess.run(
                    ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                     "-T", "-", f"{v.url}/upload"],
                    stdin=zeros.stdout, capture_output=True, text=True, check=True, timeout=600,
                ).stdout  # fmt: skip
                zeros.wait()
            seconds = time.perf_counter() - start
        code, moved = out.split()
        if direction == "upload":  # curl counts the chunk framing too: ask the origin
            moved = str((self.workdir / "nginx" / "uploads" / "upload").stat().st_size)
        if not code.startswith("2") or int(moved) != size:
            raise RuntimeError(f"{v.name} {direction}: HTTP {code}, {moved} of {size} bytes")
        entry = {
            "variant": v.name,
            "direction": direction,
            "mib_per_s": size / seconds / 2**20,
            "rss_growth_mib": growth[0] / 1024,
        }
        self.results["transfers"].append(entry)  # type: ignore[attr-defined]
        log(
            f"{direction:<8} {v.name:<26} {entry['mib_per_s']:7.0f} MiB/s  "
            f"RSS growth {entry['rss_growth_mib']:6.1f} MiB"
        )

    def http1_phase(self) -> None:
        log("warming up")
        for v in self.variants:
            wrk(f"{v.url}/", 16, 1)
        for r in range(self.args.rounds):
            log(f"load round {r + 1} of {self.args.rounds}")
            self.load_round(r)
        if self.args.pairs:
            log(f"{self.args.pairs} paired runs per connection count")
            self.paired_runs()
        if self.args.profile:
            log(f"profiling counting_addon for {self.args.profile} s (twice: data, flame graph)")
            ours = next(v for v in self.variants if v.name == "counting_addon")
            load = ["wrk", "-t1", "-c16", f"-d{self.args.profile}s", f"{ours.url}/"]
            profile(ours.pid, load, self.args.out, self.args.profile)
        if self.args.transfer_bytes:
            for r in range(self.args.transfer_rounds):
                log(f"transfer round {r + 1} of {self.args.transfer_rounds}")
                for v in self.variants:
                    if v.mitmproxy:
                        self.transfer(v, "download")
                        self.transfer(v, "upload")

    def run(self) -> None:
        log(f"work directory {self.workdir}")
        if PROXY_CPUS is not None:
            others = set(range(os.cpu_count() or 1)) - PROXY_CPUS
            os.sched_setaffinity(0, others)  # inherited by wrk, h2load, nginx, Redis and curl
            log(f"proxies on CPU {sorted(PROXY_CPUS)}, everything else on {sorted(others)}")
        self.redis.start()
        self.start_nginx()
        try:
            if self.args.h2_only:  # the HTTP/2 phase's bare, control and counting_addons
                for v in self.paired_group:
                    v.start(self.workdir)
            else:
                for v in [*self.variants[:-1], self.control]:
                    v.start(self.workdir)
                self.http1_phase()
            if self.args.h2_pairs:
                log(f"HTTP/2: {self.args.h2_pairs} paired h2load runs per load and upstream")
                self.h2_phase()
            self.results["series"] = self.series_counted()
            log(f"counting_addon_by counted by route,method: {self.results['series']}")
        finally:
            for v in [*self.variants[:-1], self.control, *self.h2_upstream_group]:
                v.stop()
            if self.nginx_process:
                stop_process(self.nginx_process, 15)
            self.redis.stop()


def h2_load(text: str) -> tuple[int, int]:
    """--h2-loads' CxM, e.g. 4x10."""
    connections, _, streams = text.partition("x")
    try:
        return int(connections), int(streams)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not CxM (e.g. 4x10): {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved load rounds")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--pairs", type=int, default=10, help="bare/counting_addon pairs; 0 skips")
    parser.add_argument("--pair-seconds", type=int, default=2, help="seconds per paired wrk run")
    parser.add_argument(
        "--restart-every",
        type=int,
        default=0,
        help="start the paired runs' proxies afresh every this many pairs (HTTP/1.1); 0: never",
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--transfer-bytes", type=int, default=GIB, help="0 skips transfers")
    parser.add_argument("--transfer-rounds", type=int, default=2)
    parser.add_argument("--profile", type=int, default=10, help="seconds of py-spy; 0 skips")
    parser.add_argument(
        "--h2-pairs", type=int, default=10, help="HTTP/2 bare/counting_addon pairs; 0 skips HTTP/2"
    )
    parser.add_argument("--h2-seconds", type=int, default=2, help="seconds measured per h2load run")
    parser.add_argument(
        "--h2-warm-up", type=int, default=1, help="seconds unmeasured before each h2load run"
    )
    parser.add_argument(
        "--h2-loads",
        type=h2_load,
        nargs="+",
        default=[(4, 10), (2, 100)],
        metavar="CxM",
        help="h2load settings: C connections, M streams in flight on each (default: 4x10 2x100)",
    )
    parser.add_argument(
        "--h2-upstreams",
        nargs="+",
        choices=["http1", "h2"],
        default=["http1", "h2"],
        help="the proxies' upstream in the HTTP/2 phase: nginx over HTTP/1.1, over TLS with h2",
    )
    parser.add_argument(
        "--h2-only",
        action="store_true",
        help="skip the HTTP/1.1 phase (wrk, transfers, profile); its report replaces --out's",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="counting-bench-", dir=base) as tmp:
        bench = Bench(args, Path(tmp))
        started = time.monotonic()
        bench.run()
        bench.results["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(),
            "pinned": PROXY_CPUS is not None,
            "duration_s": round(time.monotonic() - started),
            "args": {k: str(v) for k, v in vars(args).items()},
            "variants": {v.name: v.description for v in bench.variants},
            "control": {bench.control.name: bench.control.description},
        }
    from benchmarks.report import write_report

    (args.out / "results.json").write_text(json.dumps(bench.results, indent=1))
    write_report(bench.results, args.out)
    log(f"wrote {args.out / 'results.md'} and {args.out / 'results.png'}")


if __name__ == "__main__":
    main()
