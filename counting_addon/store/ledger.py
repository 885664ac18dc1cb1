"""The counter's bookkeeping, free of I/O: what is pending, in flight and acknowledged."""

from __future__ import annotations

from dataclasses import dataclass

from counting_addon.code_class import CodeClass, no_responses

# A batch's responses by class, in CodeClass's order (1xx first).
Responses = tuple[int, ...]
NO_RESPONSES: Responses = (0,) * len(CodeClass)
# A request's label values (series/labels.py), in counter_by's order.
Values = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """One write to Redis, numbered `seq` so that a resend can be recognised: `requests`
    counts, `responses` by class and requests by `series` (label values, count), or
    (`reset`) the shared counts set back to 0."""

    seq: int
    requests: int
    responses: Responses = NO_RESPONSES
    reset: bool = False
    series: tuple[tuple[Values, int], ...] = ()


class Ledger:
    """Counts accumulate as integers; at most one batch is in flight at a time.

    A batch leaves flight only when acknowledged. Until then `next_batch` hands out the very
    same batch again, so a write whose reply was lost is retried with the same sequence
    number and never merged with newer counts.

    A reset (`request_reset`) drops the counts not yet in a batch, which it sets to 0 with the
    rest, and becomes the next batch after the one in flight: counts made after it follow it.
    """

    def __init__(self) -> None:
        self.pending = 0
        self.pending_responses = no_responses()
        self.pending_series: dict[Values, int] = {}
        self.in_flight: Batch | None = None
        self.reset_due = False
        # Requests, then responses: counted here, acknowledged by Redis, dropped by a reset.
        self.counted = 0
        self.acknowledged = 0
        self.dropped = 0
        self.responses_counted = 0
        self.responses_acknowledged = 0
        self.responses_dropped = 0
        self.resets = 0
        self.resets_acknowledged = 0
        self._last_seq = 0

    def add(self, amount: int = 1, series: Values | None = None) -> None:
        """`amount` requests, in `series` when they are counted by labels."""
        self.pending += amount
        self.counted += amount
        if series is not None:
            self.pending_series[series] = self.pending_series.get(series, 0) + amount

    def add_response(self, code_class: CodeClass) -> None:
        self.pending_responses[code_class] += 1
        self.responses_counted += 1

    def request_reset(self) -> None:
        self.dropped += self.pending
        self.responses_dropped += sum(self.pending_responses.values())
        self.pending = 0
        self.pending_responses = no_responses()
        self.pending_series = {}
        if not self.reset_due:  # resets asked for before the writer gets to them are one
            self.reset_due = True
            self.resets += 1

    def next_batch(self) -> Batch | None:
        """The batch to write now: the unacknowledged one, else a reset if one is due, else a
        new one of all pending counts."""
        if self.in_flight is None:
            if self.reset_due:
                self._last_seq += 1
                self.in_flight = Batch(self._last_seq, 0, reset=True)
                self.reset_due = False
            elif self.pending or self.responses_unwritten:
                self._last_seq += 1
                responses = tuple(self.pending_responses.values())
                series = tuple(self.pending_series.items())
                self.in_flight = Batch(self._last_seq, self.pending, responses, series=series)
                self.pending = 0
                self.pending_responses = no_responses()
                self.pending_series = {}
        return self.in_flight

    def ack(self, batch: Batch) -> None:
        if batch != self.in_flight:
            raise ValueError(f"{batch} is not the batch in flight ({self.in_flight})")
        self.in_flight = None
        self.acknowledged += batch.requests
        self.responses_acknowledged += sum(batch.responses)
        self.resets_acknowledged += batch.reset

    @property
    def unwritten(self) -> int:
        """Requests counted and neither acknowledged by Redis nor dropped by a reset."""
        return self.counted - self.acknowledged - self.dropped

    @property
    def responses_unwritten(self) -> int:
        """Responses counted and neither acknowledged by Redis nor dropped by a reset."""
        return self.responses_counted - self.responses_acknowledged - self.responses_dropped

    @property
    def idle(self) -> bool:
        """Nothing to write: every count settled, no reset due."""
        return self.written_through(self.mark())

    def mark(self) -> int:
        """A mark for `written_through`: every count (request or response) and reset so far."""
        return self.counted + self.responses_counted + self.resets

    def written_through(self, mark: int) -> bool:
        """Whether every count and reset up to `mark` is acknowledged by Redis (a count
        dropped by a reset is settled too)."""
        resets_unwritten = self.resets - self.resets_acknowledged
        unsettled = self.unwritten + self.responses_unwritten + resets_unwritten
        return self.mark() - unsettled >= mark
