"""The counter's bookkeeping, free of I/O: what is pending, in flight and acknowledged."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Batch:
    """One write to Redis: `amount` counts, numbered `seq` so a resend can be recognised."""

    seq: int
    amount: int


class Ledger:
    """Counts accumulate as one integer; at most one batch is in flight at a time.

    A batch leaves flight only when acknowledged. Until then `next_batch` hands out the very
    same batch again, so a write whose reply was lost is retried with the same sequence
    number and never merged with newer counts.
    """

    def __init__(self) -> None:
        self.pending = 0
        self.in_flight: Batch | None = None
        self.acknowledged = 0
        self.counted = 0
        self._last_seq = 0

    def add(self, amount: int = 1) -> None:
        self.pending += amount
        self.counted += amount

    def next_batch(self) -> Batch | None:
        """The batch to write now: the unacknowledged one, else a new one of all pending."""
        if self.in_flight is None and self.pending:
            self._last_seq += 1
            self.in_flight = Batch(self._last_seq, self.pending)
            self.pending = 0
        return self.in_flight

    def ack(self, batch: Batch) -> None:
        if batch != self.in_flight:
            raise ValueError(f"{batch} is not the batch in flight ({self.in_flight})")
        self.in_flight = None
        self.acknowledged += batch.amount

    @property
    def unwritten(self) -> int:
        """Counts not yet acknowledged by Redis."""
        return self.counted - self.acknowledged

    def written_through(self, mark: int) -> bool:
        """Whether every count up to `mark` (a past value of `counted`) is acknowledged."""
        return self.acknowledged >= mark
