"""How many batch-script calls a second one Redis takes, and so how many proxies it serves.

    .venv/bin/python -m benchmarks.capacity [--seconds S] [--out FILE]

Starts Debian's redis-server 7 (/usr/bin/redis-server) on a free port on 127.0.0.1, twice:
without persistence, and with `appendonly yes, appendfsync everysec`. Against each it runs
the product's real write, APPLY_BATCH through counting_addon's RedisClient (redis.asyncio,
no pipelining, one connection per writer, each writer with a writer key of its own and
increasing sequence numbers, a realistic batch), from simulated proxies in client processes
of their own:

- saturation: writers calling back to back (closed loop), from one and from several client
  processes, so that the table shows whether the clients or Redis ran out of CPU first;
- paced: N simulated proxies each writing once per WRITE_INTERVAL, as proxies under load do:
  the latency of a write as the load on Redis grows, and Redis's CPU per proxy;
- redis-benchmark (C, 50 connections) sending the same EVALSHA, as a cross-check of the
  ceiling without Python clients;
- the memory of a writer key, of the counter and of the responses hash.

Redis's side comes from Redis itself: `INFO commandstats` (calls, usec_per_call of evalsha)
and `INFO cpu` (used_cpu_sys + used_cpu_user) before and after each run. Writes
docs/benchmarks/capacity.md. About 2.5 minutes with the default --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import multiprocessing
import multiprocessing.pool
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from counting_addon.store.batch import APPLY_BATCH, BatchKeys, ScriptCall
from counting_addon.store.client import RedisClient
from counting_addon.store.counter import WRITE_INTERVAL
from counting_addon.store.keys import responses_key, writer_key
from counting_addon.store.ledger import Batch
from counting_addon.store.url import parse

# The tests' helpers for Debian's redis-server, one copy of each.
from tests.support.debian_redis import REDIS_SERVER, ServerProcess, client, free_ports

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks" / "capacity.md"
REDIS_BENCHMARK = Path("/usr/bin/redis-benchmark")
# Measured by benchmarks/series_cap.py (instructions.md), not by this benchmark.
SERIES_COST = (
    "- These batches count no series. With `counter_by`, each distinct series in a batch "
    "costs Redis about 13 k instructions more, on some 127 k for a batch without "
    "([instructions.md](instructions.md#redis-side-the-batch-script-below-and-at-the-cap)): "
    "plan for about 1/2.2 of the calls per CPU-second above with 10 distinct series per "
    "batch, 1/8 with 70."
)
KEY = "counter"
# One batch of a proxy under load: 0.1 s at ~700 requests/s (one mitmdump's core, see
# results.md), nearly all 2xx and a few 4xx, so that the script increments two hash fields.
BATCH_REQUESTS = 70
BATCH_RESPONSES = (0, 68, 0, 2, 0)
# Since issue 20 a batch also credits its requests to the buckets of their second, minute and
# hour, and adds its body bytes: small bodies both ways.
BATCH_REQUEST_BYTES = 70 * 100
BATCH_RESPONSE_BYTES = 70 * 1000


def batch(seq: int, now: float) -> Batch:
    """A batch of a proxy under load whose requests all arrived in the second of `now`."""
    return Batch(
        seq,
        BATCH_REQUESTS,
        BATCH_RESPONSES,
        seconds=((int(now), BATCH_REQUESTS),),
        request_bytes=BATCH_REQUEST_BYTES,
        response_bytes=BATCH_RESPONSE_BYTES,
    )


WRITES_PER_SECOND = 1 / WRITE_INTERVAL
PERSISTENCE: dict[str, list[str]] = {
    "none": ["--appendonly", "no"],
    "AOF everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
}
# Saturation: (client processes, writers in all). One process with one writer is the latency
# floor; one process with many shows what one Python client drives; more processes show whether
# Redis had more to give.
SATURATION = ((1, 1), (1, 32), (2, 64), (4, 128))
# Paced: simulated proxies, each writing once per WRITE_INTERVAL.
PACED = (100, 250, 500, 1000)
# A client process takes at most this many paced writers (one event loop each).
PACED_PER_PROCESS = 250
# Writers connecting at once in a client process.
SET_UP_WAVE = 50
# Redis's CPU (of one core) above which the run counts as Redis-bound.
REDIS_BOUND = 0.85


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the client processes ------------------------------------------------------------------------


@dataclass
class Job:
    port: int
    writers: int
    # None: back to back; else each writer starts a write every `interval` seconds.
    interval: float | None
    # Wall-clock time at which to start (all processes at once), and for how long.
    start_at: float
    seconds: float


@dataclass
class Outcome:
    calls: int = 0
    latencies: list[float] = field(default_factory=list)
    # Paced writes that started over one interval late: the client could not keep up.
    late: int = 0
    # This process's CPU seconds over the measured window.
    cpu: float = 0.0
    # The writers were not all connected by start_at.
    set_up_late: bool = False
    # Writes that failed (a timeout: 2.5 s without a reply).
    errors: int = 0


def run_job(job: Job) -> Outcome:
    return asyncio.run(_run_job(job))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run_job(job: Job) -> Outcome:
    outcome = Outcome()
    target = parse(f"redis://127.0.0.1:{job.port}/0")
    writers = [RedisClient(target) for _ in range(job.writers)]
    scripts = [w.client.register_script(APPLY_BATCH) for w in writers]
    keys = [BatchKeys.of(KEY, uuid.uuid4().hex) for _ in writers]
    sequence = [0] * job.writers

    async def write(i: int) -> None:
        sequence[i] += 1
        now = time.time()
        call = ScriptCall.of(keys[i], batch(sequence[i], now), now=now)
        # The product's own call: EVALSHA, no pipeline, no WAIT (counter_redis_replicas=0).
        await writers[i].run_script(scripts[i], call.keys, call.args, 0)

    async def set_up(i: int) -> None:
        for _ in range(5):
            try:
                return await write(i)
            except (redis.ConnectionError, redis.TimeoutError):
                await asyncio.sleep(0.1)
        await write(i)

    async def measured_write(i: int) -> bool:
        try:
            await write(i)
        except redis.RedisError:
            outcome.errors += 1
            return False
        return True

    # Connected (in waves: the product's 1 s connect timeout is short for hundreds at once on
    # a busy machine), the script in Redis's cache.
    for wave in range(0, job.writers, SET_UP_WAVE):
        await asyncio.gather(
            *(set_up(i) for i in range(wave, min(wave + SET_UP_WAVE, job.writers)))
        )
    delay = job.start_at - time.time()
    outcome.set_up_late = delay < 0
    start = time.monotonic() + max(0.0, delay)
    end = start + job.seconds
    await asyncio.sleep(max(0.0, delay))
    cpu = _cpu_seconds()

    async def back_to_back(i: int) -> None:
        while time.monotonic() < end:
            began = time.monotonic()
            if await measured_write(i):
                outcome.latencies.append(time.monotonic() - began)
                outcome.calls += 1

    async def paced(i: int, interval: float) -> None:
        due = start + random.uniform(0, interval)
        while due < end:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            began = time.monotonic()
            if began - due > interval:
                outcome.late += 1
            if await measured_write(i):
                outcome.latencies.append(time.monotonic() - began)
                outcome.calls += 1
            due = max(due + interval, time.monotonic())

    interval = job.interval
    if interval is None:
        await asyncio.gather(*(back_to_back(i) for i in range(job.writers)))
    else:
        await asyncio.gather(*(paced(i, interval) for i in range(job.writers)))
    outcome.cpu = _cpu_seconds() - cpu
    await asyncio.gather(*(w.aclose() for w in writers))
    return outcome


# --- Redis's own view ----------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float
    cpu: float
    calls: int
    usec: float

    @staticmethod
    def of(admin: redis.Redis) -> Snapshot:
        info = admin.info("cpu")
        stats = admin.info("commandstats").get("cmdstat_evalsha", {})
        return Snapshot(
            time.monotonic(),
            float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            int(stats.get("calls", 0)),
            float(stats.get("usec", 0)),
        )


@dataclass
class Row:
    persistence: str
    what: str
    processes: int
    writers: int
    # Calls a second Redis ran (its own count), its CPU (share of one core), µs per call.
    rate: float
    redis_cpu: float
    usec_per_call: float
    # The client processes' CPU (cores), the latencies they saw, late paced writes.
    client_cpu: float | None = None
    latencies: list[float] = field(default_factory=list)
    late: int = 0
    # The probe's latencies: one paced writer in a process of its own.
    probe: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def calls_per_cpu_second(self) -> float:
        return self.rate / self.redis_cpu if self.redis_cpu else 0.0

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies, p)


def percentile(latencies: Sequence[float], p: float) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def between(before: Snapshot, after: Snapshot) -> tuple[float, float, float]:
    """Calls a second, CPU share of one core, µs per call."""
    seconds = after.at - before.at
    calls = after.calls - before.calls
    usec = (after.usec - before.usec) / calls if calls else 0.0
    return calls / seconds, (after.cpu - before.cpu) / seconds, usec


# --- the runs ------------------------------------------------------------------------------------


@contextmanager
def redis_server(persistence: str, directory: Path) -> Iterator[ServerProcess]:
    (port,) = free_ports(1)
    args = [
        str(REDIS_SERVER),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--save", "",
        "--maxclients", "10000",
        *PERSISTENCE[persistence],
    ]  # fmt: skip
    server = ServerProcess(port, directory, args)
    server.start()
    try:
        server.wait_answering(15)
        yield server
    finally:
        server.stop()


def spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(
    pool: multiprocessing.pool.Pool,
    admin: redis.Redis,
    port: int,
    processes: int,
    writers: int,
    interval: float | None,
    seconds: float,
    command: Sequence[str] = (),
) -> tuple[tuple[float, float, float], list[Outcome], Outcome, subprocess.Popen[str] | None]:
    """`writers` in `processes` for `seconds`, beside a probe (one paced writer in a process
    of its own: the latency one proxy sees), and `command` if any, started with them.

    Redis's figures over the window; the writers' outcomes; the probe's; `command`'s process,
    still running if it outlasted the window."""
    # Time for every process to start its writers and connect them all.
    start_at = time.time() + 1.5 + writers / max(1, processes) / 100
    jobs = [Job(port, n, interval, start_at, seconds) for n in spread(writers, processes)]
    jobs.append(Job(port, 1, WRITE_INTERVAL, start_at, seconds))
    pending = pool.map_async(run_job, jobs, chunksize=1)
    time.sleep(max(0.0, start_at - time.time()))
    background = None
    if command:
        background = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    before = Snapshot.of(admin)
    time.sleep(seconds)
    after = Snapshot.of(admin)
    *outcomes, probe = pending.get(timeout=seconds + 120)
    return between(before, after), outcomes, probe, background


def measured_row(
    persistence: str,
    what: str,
    processes: int,
    writers: int,
    figures: tuple[float, float, float],
    outcomes: Sequence[Outcome],
    probe: Outcome,
    seconds: float,
) -> Row:
    rate, cpu, usec = figures
    notes = ["clients set up late"] if any(o.set_up_late for o in outcomes) else []
    errors = sum(o.errors for o in outcomes)
    if errors:
        notes.append(f"{errors} writes failed")
    note = "; ".join(notes)
    return Row(
        persistence,
        what,
        processes,
        writers,
        rate,
        cpu,
        usec,
        client_cpu=sum(o.cpu for o in outcomes) / seconds,
        latencies=[x for o in outcomes for x in o.latencies],
        late=sum(o.late for o in outcomes),
        probe=probe.latencies,
        note=note,
    )


def redis_benchmark(
    persistence: str, pool: multiprocessing.pool.Pool, admin: redis.Redis, port: int, seconds: float
) -> Row:
    """redis-benchmark's EVALSHA of the script over 50 connections, with a writer key of its own
    per call (a random one: redis-benchmark can't count up a sequence), so that every call
    applies a batch; and the probe beside it."""
    sha = admin.script_load(APPLY_BATCH)
    now = time.time()
    call = ScriptCall.of(BatchKeys.of(KEY, "__rand_int__"), batch(1, now), now=now)
    # A bound in count that outlasts the window below 60k calls/s; past it, its own figure.
    count = int(seconds * 60_000)
    command = [
        str(REDIS_BENCHMARK), "-h", "127.0.0.1", "-p", str(port),
        "-c", "50", "-n", str(count), "-r", "1000000000", "--csv",
        "EVALSHA", sha, str(len(call.keys)), *call.keys, *map(str, call.args),
    ]  # fmt: skip
    figures, _, probe, process = run(pool, admin, port, 0, 0, None, seconds, command)
    assert process is not None
    outlasted = process.poll() is None
    try:
        out, err = process.communicate(timeout=seconds * 20 + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    rows = list(csv.reader(io.StringIO(out)))
    rate, cpu, usec = figures
    if process.returncode != 0 or len(rows) < 2:
        note = f"redis-benchmark failed: {out[-300:]} {err[-300:]}"
    else:
        own = dict(zip(rows[0], rows[1], strict=False))
        note = (
            f"its own count: {float(own.get('rps', 0)):.0f} calls/s, p50 "
            f"{own.get('p50_latency_ms', '?')} ms, p99 {own.get('p99_latency_ms', '?')} ms"
        )
        if not outlasted:
            note += "; it ended within the window, so Redis's figures are low"
    admin.flushall()
    return Row(
        persistence,
        "redis-benchmark connections",
        1,
        50,
        rate,
        cpu,
        usec,
        probe=probe.latencies,
        note=note,
    )


@dataclass
class Memory:
    writer_key: int
    counter: int
    responses: int
    # used_memory grown per writer key, with its expiry and the keyspace's own overhead.
    per_writer_key: float
    keys: int


def memory(admin: redis.Redis, keys: int = 10_000) -> Memory:
    """MEMORY USAGE of each kind of key; and used_memory before and after `keys` writer keys."""
    admin.flushall()
    sha = admin.script_load(APPLY_BATCH)
    now = time.time()
    call = ScriptCall.of(BatchKeys.of(KEY, uuid.uuid4().hex), batch(1, now), now=now)
    admin.evalsha(sha, len(call.keys), *call.keys, *call.args)
    base = int(admin.info("memory")["used_memory"])
    with admin.pipeline(transaction=False) as pipe:
        for _ in range(keys):
            each = ScriptCall.of(BatchKeys.of(KEY, uuid.uuid4().hex), batch(1, now), now=now)
            pipe.evalsha(sha, len(each.keys), *each.keys, *each.args)
        pipe.execute()
    grown = int(admin.info("memory")["used_memory"]) - base
    one = next(iter(admin.scan_iter(match=writer_key(KEY, "*"), count=100)))
    figures = Memory(
        writer_key=int(admin.memory_usage(one, samples=0) or 0),
        counter=int(admin.memory_usage(KEY, samples=0) or 0),
        responses=int(admin.memory_usage(responses_key(KEY), samples=0) or 0),
        per_writer_key=grown / keys,
        keys=keys,
    )
    admin.flushall()
    return figures


def measure(persistence: str, seconds: float, pool: multiprocessing.pool.Pool) -> list[Row]:
    rows: list[Row] = []
    directory = Path(tempfile.mkdtemp(prefix="capacity-"))
    try:
        with redis_server(persistence, directory) as server, client(server.port) as admin:
            admin.script_load(APPLY_BATCH)
            for processes, writers in SATURATION:
                figures, outcomes, probe, _ = run(
                    pool, admin, server.port, processes, writers, None, seconds
                )
                row = measured_row(
                    persistence,
                    "back to back",
                    processes,
                    writers,
                    figures,
                    outcomes,
                    probe,
                    seconds,
                )
                rows.append(row)
                log(describe(row))
            for proxies in PACED:
                processes = -(-proxies // PACED_PER_PROCESS)
                figures, outcomes, probe, _ = run(
                    pool, admin, server.port, processes, proxies, WRITE_INTERVAL, seconds
                )
                what = f"paced, 1 write / {WRITE_INTERVAL:g} s each"
                row = measured_row(
                    persistence, what, processes, proxies, figures, outcomes, probe, seconds
                )
                rows.append(row)
                log(describe(row))
            admin.flushall()
            if REDIS_BENCHMARK.exists():
                row = redis_benchmark(persistence, pool, admin, server.port, seconds)
                rows.append(row)
                log(describe(row))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def describe(row: Row) -> str:
    return (
        f"{row.persistence}, {row.writers} {row.what}, {row.processes} processes: "
        f"{row.rate:.0f} calls/s, Redis CPU {row.redis_cpu:.0%}, {row.usec_per_call:.1f} "
        f"µs/call; writes p50 {ms(row.percentile(50))} p99 {ms(row.percentile(99))} ms; "
        f"probe p50 {ms(percentile(row.probe, 50))} p99 {ms(percentile(row.probe, 99))} ms "
        f"{row.note}"
    )


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| persistence | writers | client processes | calls/s | Redis CPU | Redis µs/call "
        "(evalsha) | calls per Redis CPU-second | client CPU (cores) | writes p50 ms | p99 ms "
        "| late | probe p50 ms | probe p99 ms | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        client_cpu = "-" if r.client_cpu is None else f"{r.client_cpu:.2f}"
        lines.append(
            f"| {r.persistence} | {r.writers} {r.what} | {r.processes} | {r.rate:.0f} | "
            f"{r.redis_cpu:.0%} | {r.usec_per_call:.1f} | {r.calls_per_cpu_second:.0f} | "
            f"{client_cpu} | {ms(r.percentile(50))} | {ms(r.percentile(99))} | "
            f"{r.late if r.latencies else '-'} | {ms(percentile(r.probe, 50))} | "
            f"{ms(percentile(r.probe, 99))} | {r.note} |"
        )
    return lines


def planning(rows: Sequence[Row], persistence: str) -> list[str]:
    mine = [r for r in rows if r.persistence == persistence]
    python = max((r for r in mine if r.what == "back to back"), key=lambda r: r.rate)
    best = max(mine, key=lambda r: r.rate)
    ceiling = max(r.calls_per_cpu_second for r in mine if r.redis_cpu > 0.05)
    paced = [r for r in mine if r.what.startswith("paced")]
    bound = "Redis" if best.redis_cpu >= REDIS_BOUND else "the clients"
    lines = [
        f"- **{persistence}**: measured up to **{best.rate:.0f} calls/s** ({best.writers} "
        f"{best.what}), Redis at {best.redis_cpu:.0%} of a core ({bound} ran out first), so "
        f"**{best.rate / WRITES_PER_SECOND:.0f} proxies** writing {WRITES_PER_SECOND:g} times "
        f"a second each; the product's own client (Python, {python.processes} process"
        f"{'es' if python.processes > 1 else ''}) drove "
        f"{python.rate:.0f} calls/s with Redis at {python.redis_cpu:.0%}. Redis's own cost: "
        f"{ceiling:.0f} calls per CPU-second of Redis at best, i.e. about "
        f"**{ceiling / WRITES_PER_SECOND:.0f} proxies for a whole core** (an extrapolation "
        "where Redis was not saturated); plan at half a core: "
        f"**{ceiling / WRITES_PER_SECOND / 2:.0f} proxies**.",
    ]
    for r in paced:
        per_proxy = r.redis_cpu / r.writers
        lines.append(
            f"  - {r.writers} paced proxies ({r.writers * WRITES_PER_SECOND:.0f} calls/s "
            f"wanted, {r.rate:.0f} done): Redis at {r.redis_cpu:.0%} "
            f"({per_proxy * 100:.3f} % of a core per proxy), writes p50 "
            f"{ms(r.percentile(50))} ms, p99 {ms(r.percentile(99))} ms, {r.late} late; "
            f"probe p50 {ms(percentile(r.probe, 50))} ms, p99 {ms(percentile(r.probe, 99))} ms"
        )
    for r in mine:
        if r.what.startswith("redis-benchmark"):
            lines.append(
                f"  - redis-benchmark: {r.rate:.0f} calls/s at Redis CPU {r.redis_cpu:.0%} "
                f"({r.note}); a proxy's write meanwhile (probe) p50 "
                f"{ms(percentile(r.probe, 50))} ms, p99 {ms(percentile(r.probe, 99))} ms"
            )
    return lines


def report(rows: Sequence[Row], memory_figures: Memory, seconds: float, took: float) -> str:
    first = next(r for r in rows if r.persistence == "none")
    ceiling = max(r.calls_per_cpu_second for r in rows if r.redis_cpu > 0.05)
    m = memory_figures
    lines = [
        "# Capacity: one Redis, many proxies",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} by `.venv/bin/python -m benchmarks.capacity "
        f"--seconds {seconds:g}` on {os.cpu_count()} cores, {platform.platform()}, Python "
        f"{platform.python_version()}, in {took:.0f} s, against Debian's "
        f"{redis_version()} started on loopback (no persistence, then `appendonly yes, "
        "appendfsync everysec`), everything on one machine.",
        "",
        "Each call is the product's own write: APPLY_BATCH by EVALSHA through counting_addon's "
        "RedisClient (redis.asyncio, no pipelining, one connection per writer), each writer "
        "with its own writer key and increasing sequence numbers, a batch of "
        f"{BATCH_REQUESTS} requests ({BATCH_RESPONSES[1]} 2xx, {BATCH_RESPONSES[3]} 4xx) that "
        "arrived in one second (credited to its second, minute and hour buckets, as since "
        f"issue 20) with {BATCH_REQUEST_BYTES:,} and {BATCH_RESPONSE_BYTES:,} body bytes. "
        "Back to back: every writer sends its next call when the last one is answered. Paced: "
        f"each writer is a proxy under load, one call per WRITE_INTERVAL ({WRITE_INTERVAL:g} "
        "s). Calls/s, Redis CPU (used_cpu_sys + used_cpu_user, as a share of one core) and µs "
        "per call are Redis's own (`INFO commandstats`, `INFO cpu`) over each run's "
        f"{seconds:g} s; latencies are the clients' (a whole write, as a proxy sees it). "
        "Calls per Redis CPU-second = calls/s ÷ Redis CPU: what Redis would take with a whole "
        "core, when the clients (sharing the machine) ran out before Redis did. Late: paced "
        "writes that started more than one interval late (the client processes could not keep "
        "up, not Redis). redis-benchmark sends the same EVALSHA, with a new (random) writer key "
        "per call, from C. Probe: one more writer beside every run, paced at one call per "
        "WRITE_INTERVAL in a client process of its own: the latency of one proxy's write as "
        "the load on Redis grows (on a small machine it shares the cores with the load's "
        "clients and Redis, which adds to it).",
        "",
        *table(rows),
        "",
        "## Planning figures",
        "",
        f"A proxy under load makes {WRITES_PER_SECOND:g} script calls a second (one per "
        "WRITE_INTERVAL, whatever its request rate; an idle one none), plus one per `GET "
        "/status` that finds counts of its own not yet written (a reader writes them "
        "through). So one Redis serves (calls/s it takes) ÷ 10 proxies:",
        "",
        *planning(rows, "none"),
        *planning(rows, "AOF everysec"),
        f"- One writer alone, back to back: {ms(first.percentile(50))} ms per write (p50), "
        "the floor of a write's latency on loopback.",
        SERIES_COST,
        "",
        "## Memory and writer keys",
        "",
        f"- The counter: {m.counter} bytes (`MEMORY USAGE`); the responses hash: "
        f"{m.responses} bytes; one writer key: {m.writer_key} bytes by `MEMORY USAGE`, "
        f"{m.per_writer_key:.0f} bytes of `used_memory` each over {m.keys} of them (its "
        "expiry and the keyspace's own tables included).",
        "- One writer key per counter instance: a mitmdump process start, a script reload, or "
        "a change of the counter's options makes a new one (`writer_key(key, "
        "uuid.uuid4().hex)`), and each expires 7 days after its last write. A fleet of P "
        "processes restarted N times a day keeps about 7·N·P writer keys: 100 processes "
        f"restarted 4 times a day, ~2800 keys, ~{2800 * m.per_writer_key / 1024:.0f} KiB. "
        "They are only written to while their process counts, so they cost memory, not "
        "throughput.",
        "",
        "## Past one Redis",
        "",
        "One counter is one key (its writer keys and responses hash share its hash slot), "
        "so it lives on one Redis node: one cluster slot. Redis Cluster spreads many counters "
        "(different keys) across its primaries; it does not split one hot key. For one counter "
        "whose proxies need more calls than one node takes, two ways, neither built:",
        "",
        "- Raise WRITE_INTERVAL (a constant in counting_addon/store/counter.py, not an "
        "option). Calls/s = proxies ÷ WRITE_INTERVAL, so serving P proxies within a budget of "
        "C calls/s needs WRITE_INTERVAL ≥ P ÷ C: with the ceiling measured here "
        f"({ceiling:.0f} calls per Redis CPU-second), kept at half a core "
        f"({ceiling / 2:.0f}/s), {2 * int(ceiling / 2 / WRITES_PER_SECOND)} proxies need "
        f"0.2 s and {10 * int(ceiling / 2 / WRITES_PER_SECOND)} need 1 s. The price: counts "
        "wait that much longer in memory (what a crash loses), and a `/status` during load "
        "still writes through, so it stays exact.",
        "- Shard the count: each proxy writes one of K keys (`counter:{0}` .. `counter:{K-1}`, "
        "in different slots, each with its own writer keys), and readers sum the K keys. A "
        "design only: it changes the counter's storage (no longer one plain integer key), "
        "resets must zero all K, and /status must read K nodes.",
        "",
    ]
    return "\n".join(lines)


def redis_version() -> str:
    done = subprocess.run(
        [str(REDIS_SERVER), "--version"], capture_output=True, text=True, check=False
    )
    return done.stdout.split(" sha=")[0].strip() or "redis-server"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="each run's length")
    parser.add_argument("--out", type=Path, default=OUT)
    options = parser.parse_args()
    if not os.access(REDIS_SERVER, os.X_OK):
        sys.exit(f"{REDIS_SERVER} not found: apt-get install redis-server")
    began = time.monotonic()
    rows: list[Row] = []
    # The most any run takes, and the probe's.
    processes = max(*(p for p, _ in SATURATION), -(-max(PACED) // PACED_PER_PROCESS)) + 1
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        # Start every process now, so that spawning is not measured.
        pool.map(_cpu_seconds_of, range(processes), chunksize=1)
        for persistence in PERSISTENCE:
            rows += measure(persistence, options.seconds, pool)
        directory = Path(tempfile.mkdtemp(prefix="capacity-"))
        try:
            with redis_server("none", directory) as server, client(server.port) as admin:
                figures = memory(admin)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    took = time.monotonic() - began
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(report(rows, figures, options.seconds, took))
    log(f"wrote {options.out} in {took:.0f} s")


def _cpu_seconds_of(_: int) -> float:
    return _cpu_seconds()


if __name__ == "__main__":
    main()
