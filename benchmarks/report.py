"""Turns scripts/bench's measurements into docs/benchmarks/results.md and results.png."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def medians(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    """Median of every numeric field, per combination of `keys`."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out = {}
    for group, members in groups.items():
        out[group] = {
            field: statistics.median(m[field] for m in members)
            for field, value in members[0].items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and all(m[field] is not None for m in members)
        } | {"n": len(members)}
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def write_report(results: Results, out: Path) -> None:
    meta = results["meta"]
    load = medians(results["wrk"], ("variant", "connections"))
    variants = list(meta["variants"])
    connections = sorted({c for _, c in load})
    lines = [
        "# Benchmarks",
        "",
        f"Run {meta['date']} by `scripts/bench` on {meta['machine']}, Python {meta['python']}, "
        f"in {meta['duration_s']} s. Everything on loopback: nginx as the origin (a small "
        "`200 ok` for the load, a 1 GiB file and a PUT sink for the transfers), one Redis, "
        "`wrk -t1` as the load. Rounds interleaved (every variant once per round, order "
        "rotating); figures are medians over "
        f"{meta['args']['rounds']} rounds of {meta['args']['seconds']} s.",
        "",
        "| variant | what |",
        "| --- | --- |",
        *(f"| {name} | {what} |" for name, what in meta["variants"].items()),
        "",
        "## Small GETs",
        "",
        "| variant | conns | req/s | vs bare | p50 ms | p99 ms | CPU µs/request "
        "| Redis writes/request | /status p50 ms | proxied p50 ms | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in connections:
        bare = load[("bare", c)]
        for name in variants:
            m = load.get((name, c))
            if m is None:
                continue
            writes = m.get("redis_writes_per_request")
            cpu = m.get("cpu_us_per_request")
            lines.append(
                f"| {name} | {c} | {m['rps']:.0f} | {ratio(m['rps'], bare['rps'])} "
                f"| {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {'-' if cpu is None else f'{cpu:.0f}'} "
                f"| {'-' if writes is None else f'{writes:.3f}'} "
                f"| {m['status_p50_ms']:.2f} | {m['sampled_proxied_p50_ms']:.2f} "
                f"| {m['peak_rss_mib']:.0f} |"
            )
    lines += [
        "",
        "CPU µs/request: user + system time of the proxy process over the run, per request "
        "(steadier than req/s on a shared machine). "
        "Redis writes/request: the commands the proxy sends to count (INCR for naive and "
        "predecessor, EVALSHA for counting_addon; `INFO commandstats`), per proxied request; "
        "each EVALSHA runs GET, INCRBY and SET inside Redis. "
        "/status and proxied p50: one keep-alive client alternating "
        "`GET /status` and a proxied GET while wrk runs (for bare and nginx /status is an "
        "ordinary proxied request).",
        "",
    ]
    transfers = medians(results["transfers"], ("variant", "direction"))
    if transfers:
        lines += [
            f"## 1 GiB through each mitmproxy variant (median of "
            f"{meta['args']['transfer_rounds']})",
            "",
            "| variant | download MiB/s | RSS growth MiB | upload (chunked) MiB/s "
            "| RSS growth MiB |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in variants:
            if (name, "download") not in transfers:
                continue
            d, u = transfers[(name, "download")], transfers[(name, "upload")]
            lines.append(
                f"| {name} | {d['mib_per_s']:.0f} | {d['rss_growth_mib']:.1f} "
                f"| {u['mib_per_s']:.0f} | {u['rss_growth_mib']:.1f} |"
            )
        lines.append("")
    lines += ["## Targets", "", *targets(load, transfers, connections), ""]
    lines += ["![requests per second](results.png)", ""]
    (out / "results.md").write_text("\n".join(lines))
    plot(load, transfers, variants, connections, out / "results.png")


def targets(
    load: dict[tuple[Any, ...], Any],
    transfers: dict[tuple[Any, ...], Any],
    connections: list[int],
) -> list[str]:
    out = []
    for c in connections:
        bare, ours = load[("bare", c)], load[("counting_addon", c)]
        pred = load[("predecessor", c)]
        latency_ok = (
            ours["p50_ms"] <= 1.05 * bare["p50_ms"] and ours["p99_ms"] <= 1.05 * bare["p99_ms"]
        )
        out += [
            f"- c={c}: throughput {ratio(ours['rps'], bare['rps'])} bare (target >= 0.97): "
            f"{check(ours['rps'] >= 0.97 * bare['rps'])}",
            f"- c={c}: throughput {ratio(ours['rps'], pred['rps'])} the predecessor "
            f"(target >= 1.3): {check(ours['rps'] >= 1.3 * pred['rps'])}",
            f"- c={c}: {ours['redis_writes_per_request']:.3f} Redis writes per request "
            f"(target <= 0.05): {check(ours['redis_writes_per_request'] <= 0.05)}",
            f"- c={c}: p50 {ratio(ours['p50_ms'], bare['p50_ms'])}, "
            f"p99 {ratio(ours['p99_ms'], bare['p99_ms'])} bare (target <= 1.05): "
            f"{check(latency_ok)}",
            f"- c={c}: /status p50 {ours['status_p50_ms']:.2f} ms, proxied p50 "
            f"{ours['sampled_proxied_p50_ms']:.2f} ms (target: no worse): "
            f"{check(ours['status_p50_ms'] <= ours['sampled_proxied_p50_ms'])}",
        ]
    for direction in ("download", "upload"):
        if ("counting_addon", direction) not in transfers:
            continue
        ours, bare = transfers[("counting_addon", direction)], transfers[("bare", direction)]
        out.append(
            f"- 1 GiB {direction}: RSS growth {ours['rss_growth_mib']:.1f} MiB (target < 64): "
            f"{check(ours['rss_growth_mib'] < 64)}; {ratio(ours['mib_per_s'], bare['mib_per_s'])} "
            f"bare's throughput (target >= 1.00): {check(ours['mib_per_s'] >= bare['mib_per_s'])}"
        )
    return out


def plot(
    load: dict[tuple[Any, ...], Any],
    transfers: dict[tuple[Any, ...], Any],
    variants: list[str],
    connections: list[int],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(connections) + (1 if transfers else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    for ax, c in zip(axes[0], connections, strict=False):
        names = [v for v in variants if (v, c) in load]
        values = [load[(v, c)]["rps"] for v in names]
        colors = ["tab:orange" if v.startswith("counting_addon") else "tab:gray" for v in names]
        ax.barh(names, values, color=colors)
        ax.set_title(f"small GETs, {c} connections")
        ax.set_xscale("log")  # nginx is ~60x the rest
        ax.set_xlabel("requests/s (median, log scale)")
        ax.invert_yaxis()
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.0f}", va="center", fontsize=8)
    if transfers:
        ax = axes[0][-1]
        names = [v for v in variants if (v, "download") in transfers]
        ys = range(len(names))
        down = [transfers[(v, "download")]["mib_per_s"] for v in names]
        up = [transfers[(v, "upload")]["mib_per_s"] for v in names]
        ax.barh([y - 0.2 for y in ys], down, height=0.4, label="download")
        ax.barh([y + 0.2 for y in ys], up, height=0.4, label="upload (chunked)")
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.set_title("1 GiB transfers")
        ax.set_xlabel("MiB/s (median)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
