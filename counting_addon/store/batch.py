"""The batch script (apply_batch.lua) and the read script (read_counts.lua), and the one place
their keys and arguments are laid out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from counting_addon.store.keys import responses_key, series_key, series_lists_key, writer_key
from counting_addon.store.ledger import Batch
from counting_addon.store.shared import NO_SERIES, SeriesSpec, encode_values

# Read once, at import: the script travels by its SHA (EVALSHA), its source only on NOSCRIPT.
APPLY_BATCH = Path(__file__).with_name("apply_batch.lua").read_text()
READ_COUNTS = Path(__file__).with_name("read_counts.lua").read_text()
# A writer's key outlives its last write this long; a dead process's key then goes by itself.
WRITER_KEY_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The keys one writer (one counter in one process) touches, all in the counter's Cluster
    slot: the counter, the writer's last applied sequence number, the responses by class, the
    series of its counter_by list and the set of every list's series."""

    counter: str
    writer: str
    responses: str
    series: str
    lists: str

    @classmethod
    def of(cls, key: str, writer: str, series: SeriesSpec = NO_SERIES) -> BatchKeys:
        return cls(
            key,
            writer_key(key, writer),
            responses_key(key),
            series_key(key, series.name),
            series_lists_key(key),
        )

    def read(self, series: bool) -> list[str]:
        """READ_COUNTS's KEYS: with the series hash, or without."""
        keys = [self.counter, self.responses]
        return [*keys, self.series] if series else keys


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of apply_batch.lua: `keys` is its KEYS, `args` its ARGV, in the order the
    script's header lists them."""

    keys: list[str]
    args: list[int | str]

    @classmethod
    def of(
        cls,
        keys: BatchKeys,
        batch: Batch,
        series: SeriesSpec = NO_SERIES,
        with_series: bool = False,
        writer_ttl: int = WRITER_KEY_TTL,
    ) -> ScriptCall:
        """`with_series`: the reply carries the series hash too (a reader waits for it)."""
        counts: list[int | str] = [batch.seq, batch.requests, writer_ttl, *batch.responses]
        limits: list[int | str] = [int(batch.reset), series.max_series, series.other]
        by = [item for values, n in batch.series for item in (encode_values(values), n)]
        return cls(
            [keys.counter, keys.writer, keys.responses, keys.series, keys.lists],
            [*counts, *limits, int(with_series), *by],
        )
