"""What Redis holds for all the proxies sharing a key, as read back from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring

from counting_addon.code_class import CodeClass, no_responses
from counting_addon.store.ledger import Values


@dataclass(frozen=True, slots=True)
class Shared:
    """The shared counts: requests, responses by class, and requests by series (label values
    to count; None when not read, or not counted by labels)."""

    requests: int
    responses: dict[CodeClass, int] = field(default_factory=no_responses)
    series: dict[Values, int] | None = None


def integer(raw: bytes | str | None) -> int | None:
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


def parse_shared(values: list[bytes | None], series: bool = False) -> Shared | None:
    """The batch script's reply, or the read script's: the counter, then the five classes
    (1xx first), then, with `series`, the series hash as field, value, ...; None if a count is
    not an integer."""
    counts = values[: 1 + len(CodeClass)]
    numbers = [n for n in map(integer, counts) if n is not None]
    if len(numbers) != len(counts):
        return None
    requests, *responses = numbers
    by: dict[Values, int] | None = None
    if series:
        flat = values[len(counts) :]
        by = {}
        for field_, raw in zip(flat[::2], flat[1::2], strict=True):
            count = integer(raw)
            if field_ is None or count is None:
                return None
            by[decode_values(field_)] = count
    return Shared(requests, dict(zip(CodeClass, responses, strict=True)), by)
