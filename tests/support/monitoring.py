"""docs/monitoring/ from the tests' side: the Grafana dashboard's queries and the alert rules,
read from the files people import (never copied into a test), and the metric names a query
uses, checked against what /metrics exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest

from counting_addon.endpoints.scrape import registry
from counting_addon.process import ProcessStats
from counting_addon.store.shared import Shared
from tests.support.metrics import parse_text
from tests.support.processes import ROOT

MONITORING = ROOT / "docs" / "monitoring"
DASHBOARD = MONITORING / "counting-addon.json"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
SCRAPE_CONFIG = MONITORING / "prometheus.yml"
PROMTOOL = Path("/usr/bin/promtool")

# The datasource every panel, query and variable names: the input Grafana asks for on import.
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Grafana's own variables a query may use, besides the dashboard's templating ones.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}

# What /metrics exports is ours or prometheus_client's process metrics; label names
# (code_class, instance) and functions never start so.
METRIC_NAME = re.compile(r"\b(?:counting_addon|process)_[a-z_]+\b")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
VARIABLE = re.compile(r"\$(\w+)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ALERT_NAME = re.compile(r"^\s*- alert: (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Query:
    """One query of a dashboard panel."""

    panel: str
    ref_id: str
    expr: str
    legend: str

    def legend_labels(self) -> set[str]:
        """The labels its legend shows (`{{instance}}`): every series must have them."""
        return set(LEGEND_LABEL.findall(self.legend))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(model: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
        for panel in model["panels"]
        for target in panel["targets"]
    ]


def variables(model: dict[str, Any]) -> dict[str, str]:
    """The dashboard's template variables: name and the query that lists their values."""
    return {v["name"]: v["definition"] for v in model["templating"]["list"]}


def variables_used(text: str) -> set[str]:
    return set(VARIABLE.findall(text))


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with `$name` replaced by `values[name]`, as Grafana does before querying."""
    return VARIABLE.sub(lambda m: values[m.group(1)], expr)


def metric_names(promql: str) -> set[str]:
    """The names of ours and of prometheus_client's that `promql` uses (label values, quoted,
    aside)."""
    return set(METRIC_NAME.findall(STRING.sub('""', promql)))


def alert_names() -> list[str]:
    """The alerts alerts.yml defines, in order."""
    return ALERT_NAME.findall(ALERTS.read_text())


def exported_names() -> set[str]:
    """Every sample name /metrics can export, from the collector itself: each family present
    (Redis read, counts by series), histograms' _bucket, _sum and _count included."""
    shared = Shared(requests=1, series={("/users/{id}", "GET"): 1})
    scrape = registry(ProcessStats(), 0, shared, ("route", "method"))
    return parse_text(generate_latest(scrape).decode()).names()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS` run in docs/monitoring/ (where the files name each other); fails the test
    with its output unless it succeeds."""
    assert shutil.which(str(PROMTOOL)), f"no {PROMTOOL}"
    done = subprocess.run(
        [str(PROMTOOL), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done
