"""Counts by series from the tests' side: the options that set them up, and /status's "by" read
back, its sum checked against `counter` in every answer."""

from __future__ import annotations

from collections.abc import Sequence

from tests.support.http_client import status_json

# The label values of a series, in the order of counter_by, and its count.
Series = dict[tuple[str, ...], int]
By = list[dict[str, object]]


def series_options(labels: str, *templates: str) -> list[str]:
    """mitmdump's arguments for `counter_by=labels` and the `counter_routes` templates, in order
    (a sequence option: one `--set` each)."""
    routes = [arg for template in templates for arg in ("--set", f"counter_routes={template}")]
    return ["--set", f"counter_by={labels}", *routes]


def count_of(series: dict[str, object]) -> int:
    count = series["count"]
    assert isinstance(count, int) and not isinstance(count, bool), series
    return count


def status_by(url: str, whole: bool = True) -> tuple[int, By]:
    """A 200 /status answer's `counter` and `by`, as it gave them. Fails the test unless the
    series come the largest first and, with `whole` (counter_by's list in force since the count
    began or was last reset), sum exactly to the counter."""
    code, body = status_json(url)
    assert code == 200, body
    counter, by = body["counter"], body["by"]
    assert isinstance(counter, int) and isinstance(by, list), body
    counts = [count_of(series) for series in by]
    if whole:
        assert sum(counts) == counter, f"the series sum to {sum(counts)}, not {counter}: {body}"
    assert counts == sorted(counts, reverse=True), body
    return counter, by


def as_series(by: By, labels: Sequence[str]) -> Series:
    """`by` as {values of `labels`, in that order: count}; fails the test on a series with
    other keys, or one listed twice."""
    series: Series = {}
    for item in by:
        assert set(item) == {*labels, "count"}, item
        values = tuple(str(item[label]) for label in labels)
        assert values not in series, f"{values} listed twice: {by}"
        series[values] = count_of(item)
    return series


def series_of(url: str, labels: Sequence[str], whole: bool = True) -> tuple[int, Series]:
    """`status_by`'s counter, and its series `as_series`."""
    counter, by = status_by(url, whole)
    return counter, as_series(by, labels)
