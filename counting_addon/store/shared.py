"""What Redis holds for all the proxies sharing a key, as read back from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring

from counting_addon.code_class import CodeClass, no_responses
from counting_addon.store.ledger import Values


@dataclass(frozen=True, slots=True)
class Windows:
    """The shared requests whose headers arrived in the last minute, hour and day (windows.py),
    each including the current, partial second, minute or hour."""

    last_minute: int
    last_hour: int
    last_day: int


@dataclass(frozen=True, slots=True)
class Shared:
    """The shared counts: requests, responses by class, body bytes both ways, requests over
    the last minute, hour and day (None when not read) and by series (label values to count;
    None when not read, or not counted by labels)."""

    requests: int
    responses: dict[CodeClass, int] = field(default_factory=no_responses)
    series: dict[Values, int] | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    windows: Windows | None = None


@dataclass(frozen=True, slots=True)
class Reads:
    """What a script's reply brings back besides the totals, classes and bytes: the series
    hash, the window sums."""

    series: bool = False
    windows: bool = False

    def __or__(self, other: Reads) -> Reads:
        return Reads(self.series or other.series, self.windows or other.windows)

    def covered_by(self, shared: Shared) -> bool:
        """Whether `shared` holds everything asked for here."""
        return (shared.series is not None or not self.series) and (
            shared.windows is not None or not self.windows
        )


TOTALS = Reads()


def integer(raw: bytes | str | int | None) -> int | None:
    """A value Redis holds as an integer; 0 for none; None for one that is not an integer."""
    try:
        return int(raw or 0)
    except ValueError:
        return None


# Every label's value in the series a request counts in once counter_max_series is reached.
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """How a counter counts requests by series: its labels as configured (`route`,
    `header:X-Client-Id`; none: no series) and the most series kept, across all proxies."""

    labels: tuple[str, ...] = ()
    max_series: int = 0

    @property
    def name(self) -> str:
        """The list's name in its key: `route,method`."""
        return ",".join(self.labels)

    @property
    def other(self) -> str:
        """The overflow series' field: every label `(other)`."""
        return encode_values((OTHER,) * len(self.labels))


NO_SERIES = SeriesSpec()


def largest_first(series: dict[Values, int]) -> list[tuple[Values, int]]:
    """The series by count, the largest first, then by their values."""
    return sorted(series.items(), key=lambda item: (-item[1], item[0]))


def encode_values(values: Values) -> str:
    """A series' field in Redis: its label values as a compact JSON array, the same text from
    every process (values hold anything: commas, quotes, slashes). Exactly what
    `json.dumps(values, ensure_ascii=False, separators=(",", ":"))` writes, by json's own
    string encoder, without the encoder json.dumps makes for each call: the writer encodes
    every series of every batch (5 times faster, benchmarks/instructions.sh)."""
    return "[" + ",".join(map(encode_basestring, values)) + "]"


def decode_values(field: bytes | str) -> Values:
    return tuple(json.loads(field))


def parse_shared(values: list[bytes | int | None], reads: Reads = TOTALS) -> Shared | None:
    """A script's reply (counts_reply.lua): the counter, the five classes (1xx first), request
    and response bytes, then the three window sums if `reads` has them, then, if it has the
    series, the series hash as field, value, ...; None if a count is not an integer."""
    fixed = 1 + len(CodeClass) + 2 + (3 if reads.windows else 0)
    numbers = [n for n in map(integer, values[:fixed]) if n is not None]
    if len(numbers) != fixed:
        return None
    requests, *responses = numbers[: 1 + len(CodeClass)]
    request_bytes, response_bytes, *sums = numbers[1 + len(CodeClass) :]
    by: dict[Values, int] | None = None
    if reads.series:
        flat = values[fixed:]
        by = {}
        for field_, raw in zip(flat[::2], flat[1::2], strict=True):
            count = integer(raw)
            if not isinstance(field_, bytes | str) or count is None:
                return None
            by[decode_values(field_)] = count
    return Shared(
        requests,
        dict(zip(CodeClass, responses, strict=True)),
        by,
        request_bytes,
        response_bytes,
        Windows(*sums) if sums else None,
    )
