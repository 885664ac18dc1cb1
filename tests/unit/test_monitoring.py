"""docs/monitoring/: the Grafana dashboard has the structure Grafana imports and queries only
what /metrics exports; the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`, which fire and clear every alert), and the example scrape config
passes `promtool check config`. tests/e2e/test_monitoring.py runs every query against a real
Prometheus."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest

from tests.support.monitoring import (
    ALERT_TESTS,
    ALERTS,
    DATASOURCE,
    GRAFANA_VARIABLES,
    PROMTOOL,
    SCRAPE_CONFIG,
    Query,
    alert_names,
    dashboard,
    exported_names,
    metric_names,
    promtool,
    queries,
    variables,
    variables_used,
)

# Panel types Grafana ships (no plugin to install).
GRAFANA_PANELS = {
    "timeseries", "stat", "gauge", "bargauge", "table", "piechart", "state-timeline",
    "status-history", "heatmap", "histogram", "barchart", "text",
}  # fmt: skip
# Units of Grafana's value formats that the dashboard may use.
GRAFANA_UNITS = {"none", "short", "reqps", "wps", "percentunit", "s", "bytes", "Bps"}
GRID_COLUMNS = 24

MODEL = dashboard()
PANELS: list[dict[str, Any]] = MODEL["panels"]
QUERIES = queries(MODEL)


def title(panel: dict[str, Any]) -> str:
    return str(panel["title"])


def test_the_dashboard_has_the_keys_grafana_imports() -> None:
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time", "__inputs"):
        assert key in MODEL, key
    assert isinstance(MODEL["schemaVersion"], int) and MODEL["schemaVersion"] >= 36
    assert MODEL["id"] is None, "an exported dashboard leaves its database id to the importer"
    assert PANELS and QUERIES


def test_the_datasource_is_an_input_asked_for_on_import() -> None:
    (datasource,) = MODEL["__inputs"]
    assert datasource["name"] == "DS_PROMETHEUS" and DATASOURCE["uid"] == "${DS_PROMETHEUS}"
    assert (datasource["type"], datasource["pluginId"]) == ("datasource", "prometheus")
    every = [
        *(p["datasource"] for p in PANELS),
        *(t["datasource"] for p in PANELS for t in p["targets"]),
        *(v["datasource"] for v in MODEL["templating"]["list"]),
    ]
    assert all(d == DATASOURCE for d in every), every


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in PANELS]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), ids


@pytest.mark.parametrize("panel", PANELS, ids=title)
def test_a_panel_fits_the_24_column_grid(panel: dict[str, Any]) -> None:
    grid = panel["gridPos"]
    assert set(grid) == {"x", "y", "w", "h"}, grid
    assert all(isinstance(v, int) for v in grid.values()), grid
    assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] >= 1 and grid["h"] >= 1, grid
    assert grid["x"] + grid["w"] <= GRID_COLUMNS, grid


def test_no_two_panels_overlap() -> None:
    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        return {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }

    for a, b in combinations(PANELS, 2):
        assert not cells(a) & cells(b), f"{title(a)} overlaps {title(b)}"


@pytest.mark.parametrize("panel", PANELS, ids=title)
def test_a_panel_is_of_a_type_grafana_ships_with_a_unit_and_queries(
    panel: dict[str, Any],
) -> None:
    assert panel["type"] in GRAFANA_PANELS
    assert panel["fieldConfig"]["defaults"]["unit"] in GRAFANA_UNITS
    assert panel["description"] and panel["targets"]
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), ref_ids
    assert all(t["expr"].strip() for t in panel["targets"])


def test_every_panel_type_is_required_as_grafana_exports_them() -> None:
    required = {r["id"] for r in MODEL["__requires"] if r["type"] == "panel"}
    assert required == {p["type"] for p in PANELS}


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.panel} {q.ref_id}")
def test_a_query_uses_only_what_the_metrics_endpoint_exports_and_defined_variables(
    query: Query,
) -> None:
    names = metric_names(query.expr)
    assert names, f"no metric of /metrics in {query.expr}"
    assert names <= exported_names(), names - exported_names()
    assert variables_used(query.expr) <= set(variables(MODEL)) | GRAFANA_VARIABLES


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.panel} {q.ref_id}")
def test_a_shared_count_is_taken_once_whatever_the_instances_reporting_it(query: Query) -> None:
    """Every instance reports the same shared counts: a query of them takes one value over the
    instances (max), where a sum would multiply them by the number of instances."""
    if any(name.startswith("counting_addon_shared_") for name in metric_names(query.expr)):
        assert "max without (instance, job) (" in query.expr, query.expr
        assert "$instance" not in query.expr, "any instance reports the shared counts"


def test_the_template_variables_query_what_the_metrics_endpoint_exports() -> None:
    assert set(variables(MODEL)) == {"job", "instance"}
    for definition in variables(MODEL).values():
        assert metric_names(definition) <= exported_names(), definition


def test_the_alert_rules_name_only_what_the_metrics_endpoint_exports() -> None:
    text = ALERTS.read_text()
    assert metric_names(text) and metric_names(text) <= exported_names()
    assert alert_names() == [
        "CountingAddonRedisUnreachable",
        "CountingAddonPendingCountsGrowing",
        "CountingAddonHigh5xxShare",
        "CountingAddonCountsNotWritten",
        "CountingAddonDown",
    ]


promtool_present = pytest.mark.skipif(
    not PROMTOOL.exists(),
    reason=f"no {PROMTOOL} (Debian's prometheus package; .ci/run installs it as root)",
)


@promtool_present
def test_promtool_checks_the_alert_rules() -> None:
    out = promtool("check", "rules", ALERTS.name).stdout
    assert f"SUCCESS: {len(alert_names())} rules found" in out, out


@promtool_present
def test_promtool_unit_tests_fire_and_clear_every_alert() -> None:
    text = ALERT_TESTS.read_text()
    for name in alert_names():
        assert f"alertname: {name}" in text, f"no unit test of {name}"
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS.name).stdout


@promtool_present
def test_promtool_checks_the_example_scrape_config_and_its_rule_file() -> None:
    out = promtool("check", "config", SCRAPE_CONFIG.name).stdout
    assert "SUCCESS: 1 rule files found" in out and "valid prometheus config" in out, out
