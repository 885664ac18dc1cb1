"""A counter's phase and deadline, free of I/O: counting, retired, shutting down.

h11-style: the transitions in one place, tested directly (tests/unit/test_lifecycle.py); the
writer loop (counter.py) asks it what to do and does the I/O.
"""

from __future__ import annotations

import enum

BACKOFF_FIRST = 0.05
BACKOFF_CAP = 5.0
# While shutting down, a failed write is retried this soon, until the shutdown's bound passes.
SHUTDOWN_RETRY = 0.1


class Phase(enum.Enum):
    COUNTING = "counting"
    # Replaced after an option change or a script reload: writes what it has left, in the
    # background, within the retirement's bound.
    RETIRED = "retired"
    # The proxy is exiting: writes what it has left at once, within the shutdown's bound.
    SHUTTING_DOWN = "shutting down"


class Lifecycle:
    """Where a counter is in its life, and when its writer gives up (`deadline`, on the event
    loop's clock; None while counting). Times are passed in: the class reads no clock."""

    def __init__(self, backoff_cap: float = BACKOFF_CAP) -> None:
        self.backoff_cap = backoff_cap
        self.phase = Phase.COUNTING
        self.deadline: float | None = None
        # The counts left to write when the retirement was announced; 0 if none was.
        self.left_at_retirement = 0

    def retire(self, now: float | None, bound: float) -> bool:
        """Counting → retired, the writer giving up `bound` s from `now`; with no `now` (no
        event loop: no writer ever ran, nothing was counted), with no deadline to meet. False
        (nothing changes) if the counter is retired or shutting down already."""
        if self.phase is not Phase.COUNTING:
            return False
        self.phase = Phase.RETIRED
        self.deadline = None if now is None else now + bound
        return True

    def announce_retirement(self, unwritten: int) -> bool:
        """Whether a retirement with `unwritten` counts left is worth a line: only while
        retired (a shutdown says what it loses itself), and only with counts left."""
        if not unwritten or self.phase is not Phase.RETIRED:
            return False
        self.left_at_retirement = unwritten
        return True

    def shut_down(self, now: float, bound: float) -> None:
        """Any phase → shutting down, the writer giving up within `bound` s from `now`, or at
        its retirement's deadline if that comes first."""
        self.phase = Phase.SHUTTING_DOWN
        deadline = now + bound
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    @property
    def shutting_down(self) -> bool:
        return self.phase is Phase.SHUTTING_DOWN

    def keeps_writing(self, idle: bool) -> bool:
        """Whether the writer goes on: while counting, and until nothing is left (`idle`)."""
        return self.phase is Phase.COUNTING or not idle

    def retry_delay(self, failures: int, jitter: float) -> float:
        """How long to wait before retrying after `failures` failed writes in a row; `jitter`
        in [0, 1] spreads processes sharing one Redis (they don't reconnect in lockstep).
        Exponential up to `backoff_cap`; at most SHUTDOWN_RETRY while shutting down."""
        cap: float = min(self.backoff_cap, BACKOFF_FIRST * 2.0**failures)
        delay = cap / 2 + jitter * cap / 2
        return min(delay, SHUTDOWN_RETRY) if self.shutting_down else delay
