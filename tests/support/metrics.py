"""/metrics from the tests' side: expositions parsed by prometheus_client's own parsers."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

# What Prometheus 2.42 sends when it scrapes: OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Samples:
    """Every sample of an exposition, by name and labels."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in families
            for sample in family.samples
        }

    def names(self) -> set[str]:
        return {name for name, _ in self.values}

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        key = (name, frozenset((labels or {}).items()))
        assert key in self.values, f"no sample {name}{labels or ''} in {sorted(self.names())}"
        return self.values[key]


def parse_text(text: str) -> Samples:
    return Samples(text_families(text))


def parse_openmetrics(text: str) -> Samples:
    """Strict: fails on anything OpenMetrics forbids, a missing `# EOF` included."""
    return Samples(openmetrics_families(text))  # type: ignore[no-untyped-call]


def scrape(url: str, path: str = "/metrics", **kwargs: object) -> Samples:
    """A 200 Prometheus text answer from `url`/metrics, parsed; fails the test on anything else."""
    r = httpx.get(f"{url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == TEXT_CONTENT_TYPE, r.headers
    return parse_text(r.text)
