"""Redis's side of counting by series: the batch script's cost below and at the cap.

    .venv/bin/python -m benchmarks.series_cap [--calls N] [--repeats R] [--no-callgrind]

counter_max_series is enforced in apply_batch.lua, for every proxy at once; a proxy's own work
per request does not depend on it (benchmarks/instructions.sh measures that side). This
measures the script: Debian's redis-server (/usr/bin/redis-server) on a free port on
127.0.0.1, without persistence, takes N calls of APPLY_BATCH by EVALSHA, one after the other
as a proxy's writer sends them, for each case:

- no series: counter_by empty, today's batch of 70 requests;
- K series per batch (K = 1, 10, 70: a batch is 0.1 s of a proxy's requests, ~70 at full
  load, so 70 is every request a combination of its own), by route,method, either
  - kept, below the cap: the hash holds 1000 series, the cap is 10,000, the batch's series are
    among the 1000;
  - new, below the cap: every series of every batch is new (the hash grows);
  - kept, cap reached: the hash holds 1000 series, the cap is 1000, the batch's are among
    them;
  - new, cap reached: the same full hash, every series of every batch new, so that all of
    them count in (other): what nginx VTS's filter_max_node lost 97% of its throughput to.

Figures: Redis's own µs per call (`INFO commandstats`' usec_per_call of evalsha, reset before
each case; the median of R repeats, wall-clock, so the machine's load shows in it), and,
unless --no-callgrind, the instructions redis-server executes per call under valgrind's
callgrind (the same for the same work whatever the machine does). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from counting_addon.store.batch import APPLY_BATCH, BatchKeys, ScriptCall
from counting_addon.store.ledger import Batch, Values
from counting_addon.store.shared import SeriesSpec, encode_values
from tests.support.debian_redis import REDIS_SERVER, ServerProcess, client, free_ports

LABELS = ("route", "method")
# The series a full hash holds, and the cap of the cases that reach it.
HELD = 1000
CAP_ABOVE = 10 * HELD
REQUESTS = 70
RESPONSES = (0, 68, 0, 2, 0)
SIZES = (1, 10, 70)


@dataclass(frozen=True)
class Case:
    name: str
    # Series per batch (0: counter_by empty), whether each batch's are new, the cap.
    size: int
    new: bool = False
    cap: int = CAP_ABOVE

    @property
    def spec(self) -> SeriesSpec:
        return SeriesSpec(LABELS, self.cap) if self.size else SeriesSpec()


CASES = (
    Case("no series (counter_by empty)", 0),
    *(
        case
        for k in SIZES
        for case in (
            Case(f"{k} series, kept, below the cap", k),
            Case(f"{k} series, new, below the cap", k, new=True, cap=10**9),
            Case(f"{k} series, kept, cap reached", k, cap=HELD),
            Case(f"{k} series, new, cap reached", k, new=True, cap=HELD),
        )
    ),
)


def held(i: int) -> Values:
    """The i-th series a full hash holds."""
    return (f"/api/v1/resource{i}/{{id}}", ("GET", "POST", "PUT", "DELETE")[i % 4])


def calls(case: Case, count: int) -> Iterator[ScriptCall]:
    """`count` calls of one writer for `case`, in a counter of their own."""
    key = f"series-cap-{uuid.uuid4().hex[:8]}"
    keys = BatchKeys.of(key, uuid.uuid4().hex, case.spec)
    fresh = 0
    series: list[Values]
    for seq in range(1, count + 1):
        if case.new:
            series = [(f"/new/{fresh + j}/{{id}}", "GET") for j in range(case.size)]
            fresh += case.size
        else:
            series = [held((seq * case.size + j) % HELD) for j in range(case.size)]
        # The batch's requests spread over its series (at least one each).
        share = [max(1, REQUESTS // case.size)] * case.size if case.size else []
        batch = Batch(
            seq, sum(share) or REQUESTS, RESPONSES, series=tuple(zip(series, share, strict=True))
        )
        yield ScriptCall.of(keys, batch, case.spec, now=time.time())


def prefill(admin: redis.Redis, call: ScriptCall, case: Case) -> None:
    """The hash of `case`'s counter holds HELD series (not for 'no series')."""
    if case.size:
        fields = {encode_values(held(i)): 1 for i in range(HELD)}
        admin.hset(call.keys[3], mapping=fields)  # type: ignore[arg-type]
        admin.sadd(call.keys[4], call.keys[3])


def run_case(admin: redis.Redis, sha: str, case: Case, count: int) -> tuple[list[ScriptCall], str]:
    planned = list(calls(case, count + 1))
    prefill(admin, planned[0], case)
    admin.evalsha(sha, len(planned[0].keys), *planned[0].keys, *planned[0].args)  # warm-up
    return planned[1:], planned[0].keys[3]


def send(admin: redis.Redis, sha: str, planned: list[ScriptCall]) -> None:
    for call in planned:
        admin.evalsha(sha, len(call.keys), *call.keys, *call.args)


def usec_per_call(admin: redis.Redis) -> float:
    stats = admin.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec_per_call", 0.0)) if isinstance(stats, dict) else 0.0


def check(admin: redis.Redis, case: Case, hash_key: str) -> str:
    """What the case left in its hash: the series kept and (other)'s count."""
    if not case.size:
        return "-"
    other = int(admin.hget(hash_key, case.spec.other) or 0)
    return f"{admin.hlen(hash_key) - (1 if other else 0)} kept, (other) {other}"


@contextmanager
def server(directory: Path, valgrind: bool) -> Iterator[ServerProcess]:
    (port,) = free_ports(1)
    args = [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no"]
    if valgrind:
        out = directory / "redis.callgrind.%p"
        args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args]
    process = ServerProcess(port, directory, args)
    process.start()
    try:
        process.wait_answering(120 if valgrind else 10)
        yield process
    finally:
        process.stop(60)


def timed(count: int, repeats: int) -> dict[Case, tuple[float, str]]:
    figures: dict[Case, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory(prefix="series-cap-") as directory:
        with server(Path(directory), valgrind=False) as process, client(process.port) as admin:
            sha = admin.script_load(APPLY_BATCH)
            for case in CASES:
                usecs = []
                for _ in range(repeats):
                    planned, hash_key = run_case(admin, sha, case, count)
                    admin.config_resetstat()
                    send(admin, sha, planned)
                    usecs.append(usec_per_call(admin))
                    left = check(admin, case, hash_key)
                    admin.flushall()
                figures[case] = (statistics.median(usecs), left)
                print(f"{case.name}: {figures[case][0]:.1f} µs/call ({left})", flush=True)
    return figures


def instructions(count: int) -> dict[Case, float]:
    figures: dict[Case, float] = {}
    with tempfile.TemporaryDirectory(prefix="series-cap-") as directory:
        with server(Path(directory), valgrind=True) as process, client(process.port) as admin:
            sha = admin.script_load(APPLY_BATCH)
            for dump, case in enumerate(CASES, start=1):
                planned, _ = run_case(admin, sha, case, count)
                control = ["callgrind_control", str(process.pid)]
                subprocess.run([*control, "-z"], check=True, capture_output=True)
                send(admin, sha, planned)
                subprocess.run([*control, "-d"], check=True, capture_output=True)
                out = Path(directory) / f"redis.callgrind.{process.pid}.{dump}"
                for _ in range(100):
                    if out.exists() and "summary:" in out.read_text():
                        break
                    time.sleep(0.1)
                summary = next(
                    line for line in out.read_text().splitlines() if line.startswith("summary:")
                )
                figures[case] = int(summary.split()[1]) / count
                print(f"{case.name}: {figures[case] / 1000:.1f} k instructions/call", flush=True)
                admin.flushall()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="calls per case")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--no-callgrind", action="store_true")
    options = parser.parse_args()
    times = timed(options.calls, options.repeats)
    counts = {} if options.no_callgrind else instructions(min(options.calls, 500))
    base_time = times[CASES[0]][0]
    base_count = counts.get(CASES[0])
    print()
    print("| batch | Redis µs per call | vs no series | k instructions per call | vs no series "
          "| left in the hash |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for case in CASES:
        usec, left = times[case]
        count = counts.get(case)
        instr = "-" if count is None else f"{count / 1000:.1f}"
        ratio = "-" if count is None or not base_count else f"{count / base_count:.2f}x"
        print(
            f"| {case.name} | {usec:.1f} | {usec / base_time:.2f}x | {instr} | {ratio} | {left} |"
        )


if __name__ == "__main__":
    main()
