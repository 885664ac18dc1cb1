"""A process seen from outside, read from /proc (Linux): its memory, CPU time, descriptors,
sockets and children. The one place the tests (and the benchmark) read /proc."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from tests.support.processes import Process, wait_for

KiB = 1024
MiB = 1024 * KiB
MAX_RSS_GROWTH = 64 * MiB
# A leak would never settle; a busy machine settles within a second or two.
SETTLE_TIMEOUT = 20.0
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


def status_bytes(pid: int, field: str) -> int:
    """A `field:   N kB` line of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * KiB
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    """How many descriptors `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """Live child processes of `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    """`pid`'s command line, arguments joined by spaces; "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); whether that worked."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples VmRSS of `pid` in a background thread; the baseline is taken on entry."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                rss = status_bytes(self.pid, "VmRSS")
            except (OSError, AssertionError):
                return  # the process is gone: the transfer fails and says so
            self.peak = max(self.peak, rss)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self.hwm_reset = reset_peak_rss(self.pid)
        self.baseline = status_bytes(self.pid, "VmRSS")
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.hwm_reset:
            # Catches a spike that fell between two samples.
            self.peak = max(self.peak, status_bytes(self.pid, "VmHWM"))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def check(self, what: str, limit: int = MAX_RSS_GROWTH) -> None:
        """The process's RSS grew by less than `limit` during `what`."""
        assert self.samples >= 2, f"too few RSS samples ({self.samples}) during {what}"
        assert self.growth < limit, (
            f"mitmdump RSS grew by {self.growth / MiB:.1f} MiB during {what} "
            f"(baseline {self.baseline / MiB:.1f} MiB, peak {self.peak / MiB:.1f} MiB)"
        )


def socket_inodes(pid: int) -> tuple[int, set[int]]:
    """How many descriptors `pid` has open, and the inodes of those that are sockets."""
    fd_dir = f"/proc/{pid}/fd"
    fds = 0
    inodes: set[int] = set()
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except FileNotFoundError:  # closed since the listing
            continue
        fds += 1
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return fds, inodes


def fd_targets(pid: int) -> list[str]:
    """What each of `pid`'s descriptors is, for failure messages."""
    targets = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            targets.append(f"{name}: {os.readlink(f'/proc/{pid}/fd/{name}')}")
        except FileNotFoundError:
            pass
    return targets


def tcp_sockets(pid: int) -> dict[int, tuple[int, str]]:
    """Every TCP socket in `pid`'s network namespace: inode -> (remote port, state)."""
    sockets: dict[int, tuple[int, str]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rpartition(":")[2], 16)
            sockets[int(fields[9])] = (remote_port, fields[3])
    return sockets


def unix_socket_inodes(pid: int) -> set[int]:
    """The inodes of every Unix socket in `pid`'s network namespace."""
    lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    return {int(line.split()[6]) for line in lines}


@dataclass(frozen=True)
class Snapshot:
    """The proxy's open descriptors, TCP connections and resident memory at one moment."""

    fds: int
    # Sockets to Redis, whatever their state: the counter's connection pool, which may keep a
    # second connection it opened when /status read while a write was in flight.
    redis_sockets: int
    # Established TCP connections other than to Redis: clients and upstream.
    connections: int
    # Sockets other than to Redis, the listening one and Unix ones (asyncio's self-pipe), in
    # any state: a connection closed at the TCP level still holds a descriptor until closed.
    other_sockets: int
    rss: int

    @property
    def fds_besides_redis(self) -> int:
        return self.fds - self.redis_sockets

    def __str__(self) -> str:
        return (
            f"{self.fds} fds ({self.redis_sockets} to Redis), {self.connections} connections "
            f"({self.other_sockets} sockets) besides Redis, RSS {self.rss / MiB:.1f} MiB"
        )


class Resources:
    """What the proxy holds, against a baseline taken while it is idle."""

    def __init__(self, proxy: Process, redis_url: str) -> None:
        self.pid = proxy.pid
        port = urlsplit(redis_url).port
        assert port is not None, redis_url
        self.redis_port = port
        self.baseline = self.idle("the proxy to be idle before the test")
        print(f"\nbaseline: {self.baseline}")

    def now(self) -> Snapshot:
        fds, inodes = socket_inodes(self.pid)
        tcp = tcp_sockets(self.pid)
        redis_sockets = connections = other_sockets = 0
        for inode in inodes - unix_socket_inodes(self.pid):
            # A TCP socket fully closed (reset, say) but not yet released is in no table.
            remote_port, state = tcp.get(inode, (0, "closed"))
            if state == TCP_LISTEN:
                continue
            if remote_port == self.redis_port:
                redis_sockets += 1
            else:
                other_sockets += 1
                if state == TCP_ESTABLISHED:
                    connections += 1
        rss = status_bytes(self.pid, "VmRSS")
        return Snapshot(fds, redis_sockets, connections, other_sockets, rss)

    def idle(self, what: str, fds: int | None = None) -> Snapshot:
        """Wait until the proxy has no socket but to Redis and its listening one (and, given
        `fds`, that many descriptors besides Redis's), twice in a row; that snapshot."""
        last: list[Snapshot] = []

        def idle(snapshot: Snapshot) -> bool:
            return snapshot.other_sockets == 0 and fds in (None, snapshot.fds_besides_redis)

        def check() -> bool:
            # Twice: a connection closing while its snapshot is taken may escape one.
            last[:] = [*last[-1:], self.now()]
            return (
                len(last) == 2
                and all(map(idle, last))
                and last[0].fds_besides_redis == last[1].fds_besides_redis
            )

        try:
            wait_for(check, SETTLE_TIMEOUT, what)
        except AssertionError as e:
            expected = "" if fds is None else f"; expected {fds} fds besides Redis's"
            raise AssertionError(
                f"{e}: now {last[-1]}{expected}; descriptors: {fd_targets(self.pid)}"
            ) from None
        return last[-1]

    def settle(self, what: str) -> Snapshot:
        """Wait until the proxy is back to its baseline of descriptors and connections."""
        start = time.monotonic()
        snapshot = self.idle(
            f"the proxy's fds and connections to return to baseline after {what}",
            self.baseline.fds_besides_redis,
        )
        print(f"after {what}: {snapshot}, settled in {time.monotonic() - start:.2f}s")
        return snapshot

    def check_rss(self, snapshot: Snapshot, what: str) -> None:
        growth = snapshot.rss - self.baseline.rss
        assert growth < MAX_RSS_GROWTH, (
            f"mitmdump RSS is {growth / MiB:.1f} MiB above baseline after {what}: {snapshot}"
        )


def check_peak_rss(sampler: RssSampler, baseline: Snapshot, what: str) -> None:
    growth = sampler.peak - baseline.rss
    print(
        f"peak RSS during {what}: {sampler.peak / MiB:.1f} MiB, {growth / MiB:+.1f} MiB on "
        f"baseline ({sampler.samples} samples{', VmHWM included' if sampler.hwm_reset else ''})"
    )
    assert sampler.samples >= 2, f"too few RSS samples ({sampler.samples}) during {what}"
    assert growth < MAX_RSS_GROWTH, f"mitmdump RSS grew by {growth / MiB:.1f} MiB in {what}"
