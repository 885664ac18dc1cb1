"""The counter's bookkeeping, free of I/O: what is pending, in flight and acknowledged."""

from __future__ import annotations

from dataclasses import dataclass

from counting_addon.code_class import CodeClass, no_responses
from counting_addon.store.windows import compacted

# A batch's responses by class, in CodeClass's order (1xx first).
Responses = tuple[int, ...]
NO_RESPONSES: Responses = (0,) * len(CodeClass)
# A request's label values (series/labels.py), in counter_by's order.
Values = tuple[str, ...]
# Pending stamps past this many are compacted (windows.compacted): a day-long outage then
# holds a few hundred, not 86,400.
MAX_STAMPS = 200


@dataclass(frozen=True, slots=True)
class Batch:
    """One write to Redis, numbered `seq` so that a resend can be recognised: `requests`
    counts, `responses` by class, requests by `series` (label values, count) and by `seconds`
    (the whole Unix second they arrived in, count), body bytes both ways, or (`reset`) the
    shared counts set back to 0."""

    seq: int
    requests: int
    responses: Responses = NO_RESPONSES
    reset: bool = False
    series: tuple[tuple[Values, int], ...] = ()
    seconds: tuple[tuple[int, int], ...] = ()
    request_bytes: int = 0
    response_bytes: int = 0


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
        self.pending_seconds: dict[int, int] = {}
        self.pending_request_bytes = 0
        self.pending_response_bytes = 0
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
        # Body bytes, both ways together.
        self.bytes_counted = 0
        self.bytes_acknowledged = 0
        self.bytes_dropped = 0
        self._last_seq = 0

    def add(self, amount: int = 1, series: Values | None = None, second: int | None = None) -> None:
        """`amount` requests, in `series` when they are counted by labels, stamped with the
        whole Unix `second` they arrived in (None: in no window)."""
        self.pending += amount
        self.counted += amount
        if series is not None:
            self.pending_series[series] = self.pending_series.get(series, 0) + amount
        if second is not None:
            stamps = self.pending_seconds
            stamps[second] = stamps.get(second, 0) + amount
            if len(stamps) > MAX_STAMPS:
                self.pending_seconds = compacted(stamps, max(stamps))

    def add_bytes(self, request: int, response: int) -> None:
        """Body bytes: `request` received from a client, `response` sent to one."""
        self.pending_request_bytes += request
        self.pending_response_bytes += response
        self.bytes_counted += request + response

    def add_response(self, code_class: CodeClass) -> None:
        self.pending_responses[code_class] += 1
        self.responses_counted += 1

    def request_reset(self) -> None:
        self.dropped += self.pending
        self.responses_dropped += sum(self.pending_responses.values())
        self.bytes_dropped += self.pending_request_bytes + self.pending_response_bytes
        self.pending = 0
        self.pending_responses = no_responses()
        self.pending_series = {}
        self.pending_seconds = {}
        self.pending_request_bytes = self.pending_response_bytes = 0
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
            elif self.pending or self.responses_unwritten or self.bytes_unwritten:
                self._last_seq += 1
                self.in_flight = Batch(
                    self._last_seq,
                    self.pending,
                    tuple(self.pending_responses.values()),
                    series=tuple(self.pending_series.items()),
                    seconds=tuple(sorted(self.pending_seconds.items())),
                    request_bytes=self.pending_request_bytes,
                    response_bytes=self.pending_response_bytes,
                )
                self.pending = 0
                self.pending_responses = no_responses()
                self.pending_series = {}
                self.pending_seconds = {}
                self.pending_request_bytes = self.pending_response_bytes = 0
        return self.in_flight

    def ack(self, batch: Batch) -> None:
        if batch != self.in_flight:
            raise ValueError(f"{batch} is not the batch in flight ({self.in_flight})")
        self.in_flight = None
        self.acknowledged += batch.requests
        self.responses_acknowledged += sum(batch.responses)
        self.resets_acknowledged += batch.reset
        self.bytes_acknowledged += batch.request_bytes + batch.response_bytes

    @property
    def unwritten(self) -> int:
        """Requests counted and neither acknowledged by Redis nor dropped by a reset."""
        return self.counted - self.acknowledged - self.dropped

    @property
    def responses_unwritten(self) -> int:
        """Responses counted and neither acknowledged by Redis nor dropped by a reset."""
        return self.responses_counted - self.responses_acknowledged - self.responses_dropped

    @property
    def bytes_unwritten(self) -> int:
        """Body bytes counted and neither acknowledged by Redis nor dropped by a reset."""
        return self.bytes_counted - self.bytes_acknowledged - self.bytes_dropped

    @property
    def idle(self) -> bool:
        """Nothing to write: every count settled, no reset due."""
        return self.written_through(self.mark())

    def mark(self) -> int:
        """A mark for `written_through`: every count (request, response, byte) and reset so
        far."""
        return self.counted + self.responses_counted + self.bytes_counted + self.resets

    def written_through(self, mark: int) -> bool:
        """Whether every count and reset up to `mark` is acknowledged by Redis (a count
        dropped by a reset is settled too)."""
        resets_unwritten = self.resets - self.resets_acknowledged
        unsettled = (
            self.unwritten + self.responses_unwritten + self.bytes_unwritten + resets_unwritten
        )
        return self.mark() - unsettled >= mark
