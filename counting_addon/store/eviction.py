"""Which Redis eviction policies keep the count exact.

The idempotency of a resent batch rests on the writer keys (`{counter}:writer:<id>`), which
expire after 7 days while the counter and the responses hash don't. A `volatile-*` policy
evicts exactly those first when Redis reaches `maxmemory`, and a batch resent after that
counts twice; an `allkeys-*` policy may evict the counter itself. Only `noeviction` is safe:
when Redis is full, writes fail cleanly and the counts wait.
"""

from __future__ import annotations

SAFE = "noeviction"


def eviction_warning(policy: str, key: str) -> str | None:
    """What to tell the user of Redis's `maxmemory-policy`; None when it is safe."""
    if policy == SAFE:
        return None
    at_risk = (
        f"the counter itself ({key!r}), losing the count, or the keys"
        if policy.startswith("allkeys")
        else "the keys"
    )
    return (
        f"Redis's maxmemory-policy is {policy}: once Redis reaches maxmemory it may evict "
        f"{at_risk} that make a resent batch count once, and a batch resent after that counts "
        f"twice. Set maxmemory-policy {SAFE} (when Redis is full, counts then wait)."
    )
