"""Response classes and this process's figures, without any I/O."""

from __future__ import annotations

import pytest

from counting_addon.code_class import CodeClass, code_class
from counting_addon.process import Histogram, ProcessStats


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (100, CodeClass.C1XX),
        (101, CodeClass.C1XX),
        (200, CodeClass.C2XX),
        (299, CodeClass.C2XX),
        (304, CodeClass.C3XX),
        (404, CodeClass.C4XX),
        (502, CodeClass.C5XX),
        (599, CodeClass.C5XX),
        (99, None),
        (600, None),
        (0, None),
        (999, None),
    ],
)
def test_code_class(status_code: int, expected: CodeClass | None) -> None:
    assert code_class(status_code) is expected


def test_histogram_buckets_are_cumulative_with_bounds_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert h.sum == pytest.approx(4.65)


def test_stats_start_at_zero_in_every_class() -> None:
    stats = ProcessStats()
    assert stats.responses == dict.fromkeys(CodeClass, 0)
    assert stats.request_duration.cumulative()[-1] == ("+Inf", 0)
