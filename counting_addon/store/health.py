"""What a counter knows of Redis's health, free of I/O: the failure it is in, whether Redis
ever answered, whether its eviction policy was checked.

Each method that changes it says whether the change is one to log: the writer logs one line
per change of state, never one per failed write.
"""

from __future__ import annotations

from counting_addon.store.failures import Failure


class Health:
    def __init__(self) -> None:
        # The failure writes are in; None while they succeed (or before any).
        self.problem: Failure | None = None
        # Redis answered a write or a read of this counter's at least once.
        self.contacted = False
        # The latest read failed (writes may still succeed).
        self.read_failed = False
        # The eviction policy was read once (eviction.py).
        self.eviction_checked = False

    @property
    def redis_up(self) -> bool:
        """Redis answered the latest contact (a write, or a read) and no write has failed
        since; False before any contact."""
        return self.contacted and self.problem is None and not self.read_failed

    def write_failed(self, failure: Failure) -> bool:
        """A write failed; whether it is a new kind of failure (to log)."""
        new = self.problem is None or failure.kind is not self.problem.kind
        self.problem = failure
        return new

    def wrote(self) -> bool:
        """A write succeeded; whether that ends a failure (to log)."""
        recovered = self.problem is not None
        self.problem = None
        self.answered()
        return recovered

    def answered(self) -> None:
        """Redis answered a read or a write."""
        self.contacted = True
        self.read_failed = False

    def read_failure(self) -> None:
        self.read_failed = True
