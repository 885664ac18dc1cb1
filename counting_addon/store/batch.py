"""The batch script (apply_batch.lua), and the one place its keys and arguments are laid out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from counting_addon.store.keys import responses_key, writer_key
from counting_addon.store.ledger import Batch

# Read once, at import: the script travels by its SHA (EVALSHA), its source only on NOSCRIPT.
APPLY_BATCH = Path(__file__).with_name("apply_batch.lua").read_text()
# A writer's key outlives its last write this long; a dead process's key then goes by itself.
WRITER_KEY_TTL = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The keys one writer (one counter in one process) touches, all in the counter's Cluster
    slot: the counter, the writer's last applied sequence number, the responses by class."""

    counter: str
    writer: str
    responses: str

    @classmethod
    def of(cls, key: str, writer: str) -> BatchKeys:
        return cls(key, writer_key(key, writer), responses_key(key))


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of apply_batch.lua: `keys` is its KEYS, `args` its ARGV, in the order the
    script's header lists them."""

    keys: list[str]
    args: list[int]

    @classmethod
    def of(cls, keys: BatchKeys, batch: Batch, writer_ttl: int = WRITER_KEY_TTL) -> ScriptCall:
        return cls(
            [keys.counter, keys.writer, keys.responses],
            [batch.seq, batch.requests, writer_ttl, *batch.responses, int(batch.reset)],
        )
