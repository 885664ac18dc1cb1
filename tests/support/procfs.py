"""The proxy process seen from outside: its memory, read from /proc (Linux)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

KiB = 1024
MiB = 1024 * KiB
MAX_RSS_GROWTH = 64 * MiB


def status_bytes(pid: int, field: str) -> int:
    """A `field:   N kB` line of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * KiB
    raise AssertionError(f"no {field} in /proc/{pid}/status")


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

    def check(self, what: str) -> None:
        assert self.samples >= 2, f"too few RSS samples ({self.samples}) during {what}"
        assert self.growth < MAX_RSS_GROWTH, (
            f"mitmdump RSS grew by {self.growth / MiB:.1f} MiB during {what} "
            f"(baseline {self.baseline / MiB:.1f} MiB, peak {self.peak / MiB:.1f} MiB)"
        )
