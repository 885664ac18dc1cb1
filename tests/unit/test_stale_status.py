"""`Cache-Control: max-stale` on /status: the counts in Redis now, without waiting for this
process's own (the in-process half; counter.py's read is tested in test_redis_counter.py)."""

from __future__ import annotations

import pytest

from counting_addon.endpoints.status import accepts_stale


@pytest.mark.parametrize(
    ("cache_control", "stale"),
    [
        ("", False),
        ("no-cache", False),
        ("max-age=0", False),
        ("max-stale", True),
        ("max-stale=5", True),
        ("MAX-STALE", True),
        ("no-cache, max-stale=1", True),
        (" max-stale , no-store", True),
        ("max-staleness", False),
        ('private="max-stale"', False),
    ],
)
def test_a_request_takes_older_figures_only_with_max_stale(cache_control: str, stale: bool) -> None:
    assert accepts_stale(cache_control) is stale
