"""A real Prometheus server (Debian's `prometheus` package) of a test's own, on a free port,
scraping the proxies given to it every second, evaluating the rule files given to it every
second too; and queries of its HTTP API."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import Process, free_port, wait_for

PROMETHEUS = Path("/usr/bin/prometheus")
# An instant query's result: each series' labels (the name as __name__) and value.
Result = dict[frozenset[tuple[str, str]], float]


def by_label(result: Result, label: str) -> dict[str | None, float]:
    """`result`'s values by their value of `label` (None where a series has none); fails the
    test if two series share one."""
    values = {dict(labels).get(label): value for labels, value in result.items()}
    assert len(values) == len(result), f"series with the same {label}: {result}"
    return values


CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: counting_addon
    metrics_path: /metrics
    scheme: http
    static_configs:
      - targets: [{targets}]
rule_files: [{rule_files}]
"""


class Prometheus(Process):
    """Started by `with`, which waits until it is ready; stopped (by pid) when the block ends."""

    def __init__(
        self, directory: Path, targets: list[str], rule_files: Sequence[Path] = ()
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(
            CONFIG.format(
                targets=", ".join(f"'{t}'" for t in targets),
                rule_files=", ".join(f"'{f}'" for f in rule_files),
            )
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        super().__init__(command, directory / "prometheus.log")

    def __enter__(self) -> Prometheus:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"prometheus exited early:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, f"prometheus at {self.url}")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful answer of the HTTP API at /api/v1/`path`; fails the test
        on an error (a query Prometheus can't parse or evaluate, say)."""
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", r.text
        return body["data"]

    def query(self, promql: str) -> Result:
        """An instant query's result: each series' labels (the name as __name__) and value."""
        return {
            frozenset(series["metric"].items()): float(series["value"][1])
            for series in self.api("query", query=promql)["result"]
        }

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of the rule files as Prometheus loaded them: `name`, `query`,
        `duration` (`for:`, in seconds), `labels`, `annotations`, `health`, `lastError`,
        `alerts` (pending or firing, with their `labels` and `state`)..."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def label_values(self, label: str, match: str) -> set[str]:
        """The values of `label` among the series `match` selects."""
        return set(self.api(f"label/{label}/values", **{"match[]": match}))

    def poll(self, promql: str, expected: float, timeout: float = 60.0) -> None:
        """Query until `promql` gives one series of value `expected`."""
        self.poll_until(
            promql, lambda result: list(result.values()) == [expected], timeout, f"== {expected}"
        )

    def poll_by(
        self, promql: str, label: str, expected: Mapping[str, float], timeout: float = 60.0
    ) -> None:
        """Query until `promql` gives one series per value of `label`, as `expected` says."""

        def holds(result: Result) -> bool:
            return by_label(result, label) == expected

        self.poll_until(promql, holds, timeout, f"by {label}: {expected}")

    def poll_until(
        self, promql: str, holds: Callable[[Result], bool], timeout: float, what: str = ""
    ) -> Result:
        """Query until `holds` accepts `promql`'s result; that result."""
        last: list[Result] = []

        def check() -> bool:
            last[:] = [self.query(promql)]
            return holds(last[0])

        try:
            wait_for(check, timeout, f"{promql} {what or 'to hold'} in prometheus")
        except AssertionError as e:
            raise AssertionError(f"{e}; last result: {last}\n{self.output()[-2000:]}") from None
        return last[0]
