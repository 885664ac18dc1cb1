"""The batch script (apply_batch.lua) and the read script (read_counts.lua), and the one place
their keys and arguments are laid out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from counting_addon.store.keys import (
    bytes_key,
    responses_key,
    series_key,
    series_lists_key,
    writer_key,
)
from counting_addon.store.ledger import Batch
from counting_addon.store.shared import NO_SERIES, TOTALS, Reads, SeriesSpec, encode_values
from counting_addon.store.windows import WINDOWS, bucket_writes, read_keys


def _script(name: str) -> str:
    """A script, after counts_reply.lua, the reply both scripts end with."""
    here = Path(__file__).parent
    return (here / "counts_reply.lua").read_text() + (here / name).read_text()


# Read once, at import: the script travels by its SHA (EVALSHA), its source only on NOSCRIPT.
APPLY_BATCH = _script("apply_batch.lua")
READ_COUNTS = _script("read_counts.lua")
# A writer's key outlives its last write this long; a dead process's key then goes by itself.
WRITER_KEY_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The keys one writer (one counter in one process) touches, all in the counter's Cluster
    slot: the counter, the writer's last applied sequence number, the responses by class, the
    series of its counter_by list, the set of every list's series and the body bytes. The
    window buckets' keys depend on the time (windows.py)."""

    counter: str
    writer: str
    responses: str
    series: str
    lists: str
    bytes: str

    @classmethod
    def of(cls, key: str, writer: str, series: SeriesSpec = NO_SERIES) -> BatchKeys:
        return cls(
            key,
            writer_key(key, writer),
            responses_key(key),
            series_key(key, series.name),
            series_lists_key(key),
            bytes_key(key),
        )


def window_buckets(
    key: str, windows: bool, now: float, reset: bool = False
) -> tuple[list[str], list[int]]:
    """The buckets the windows cover at `now`, if a reply sums them (`windows`) or a reset
    deletes them, and how many each window's sum takes (0 each: none)."""
    groups = read_keys(key, now) if windows or reset else []
    sizes = [len(group) for group in groups] if windows else [0] * len(WINDOWS)
    return [k for group in groups for k in group], sizes


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of a script: `keys` is its KEYS, `args` its ARGV, in the order the script's
    header lists them; its reply brings back `reads` (shared.parse_shared)."""

    keys: list[str]
    args: list[int | str]
    reads: Reads = TOTALS

    @classmethod
    def of(
        cls,
        keys: BatchKeys,
        batch: Batch,
        series: SeriesSpec = NO_SERIES,
        reads: Reads = TOTALS,
        *,
        now: float,
        writer_ttl: int = WRITER_KEY_TTL,
    ) -> ScriptCall:
        """apply_batch.lua's call for `batch`, made at `now` (Unix seconds: the buckets'
        lifetimes count from it); the reply brings back `reads` too. A reset also deletes
        the buckets the windows cover at `now`."""
        writes = bucket_writes(keys.counter, batch.seconds, now)
        read, sizes = window_buckets(keys.counter, reads.windows, now, batch.reset)
        counts: list[int | str] = [batch.seq, batch.requests, writer_ttl, *batch.responses]
        limits: list[int | str] = [int(batch.reset), series.max_series, series.other]
        flags: list[int | str] = [int(reads.series), batch.request_bytes, batch.response_bytes]
        buckets: list[int | str] = [len(writes), *sizes]
        for write in writes:
            buckets += [write.amount, write.lifetime_ms]
        by = [item for values, n in batch.series for item in (encode_values(values), n)]
        fixed = [keys.counter, keys.writer, keys.responses, keys.series, keys.lists, keys.bytes]
        return cls(
            [*fixed, *(write.key for write in writes), *read],
            [*counts, *limits, *flags, *buckets, *by],
            reads,
        )

    @classmethod
    def read(cls, keys: BatchKeys, reads: Reads = TOTALS, *, now: float) -> ScriptCall:
        """read_counts.lua's call, at `now`."""
        read, sizes = window_buckets(keys.counter, reads.windows, now)
        return cls(
            [keys.counter, keys.responses, keys.bytes, keys.series, *read],
            [int(reads.series), *sizes],
            reads,
        )
