"""Turns scripts/bench's measurements into docs/benchmarks/results.md and results.png."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def restarts(args: dict[str, str]) -> str:
    """What the report says of the paired runs' fresh processes (bench.py, --restart-every)."""
    every = int(args.get("restart_every", "0"))
    if not every:
        return " The same processes ran every pair."
    return (
        f" Every {every} pairs all four processes were started afresh (and warmed up "
        "unmeasured), so that what chance gives a process at start (its hash seed, where its "
        "code and heap lie) is spread over the pairs."
    )


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


def pooled_medians(
    rows: list[dict[str, Any]], keys: tuple[str, ...], field: str
) -> dict[Any, float]:
    """Median of the samples in list `field`, pooled over all rounds, per combination of `keys`."""
    pools: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for row in rows:
        pools[tuple(row[k] for k in keys)] += row[field]
    return {group: statistics.median(samples) for group, samples in pools.items()}


PAIR_FIELDS = ("rps", "p50", "p99", "cpu_per_request")
Quartiles = tuple[float, float, float]


def paired(
    rows: list[dict[str, Any]], keys: tuple[str, ...] = ("variant", "connections")
) -> dict[tuple[Any, ...], dict[str, Quartiles]]:
    """Per combination of `keys` (variant and connection count): quartiles of each ratio over
    the pairs."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    out: dict[tuple[Any, ...], dict[str, Quartiles]] = {}
    for group, members in sorted(groups.items()):
        out[group] = {}
        for f in PAIR_FIELDS:
            values = [m[f] for m in members]
            q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
            out[group][f] = (q1, q2, q3)
    return out


def spread_cells(spread: dict[str, Quartiles]) -> str:
    """A paired table's cells: each ratio's median and, in brackets, its middle half."""
    return " | ".join(
        f"{spread[f][1]:.3f} ({spread[f][0]:.2f}-{spread[f][2]:.2f})" for f in PAIR_FIELDS
    )


H2_KEYS = ("variant", "upstream", "connections", "streams")
# counting_addon's RSS may grow over the HTTP/2 phase by at most this much more than bare's.
H2_RSS_MARGIN_MIB = 8.0


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def write_report(results: Results, out: Path) -> None:
    meta = results["meta"]
    load = medians(results["wrk"], ("variant", "connections"))
    for field in ("status_ms", "sampled_proxied_ms"):
        for group, median in pooled_medians(
            results["wrk"], ("variant", "connections"), field
        ).items():
            load[group][f"{field[:-3]}_p50_ms"] = median
    variants = list(meta["variants"])
    connections = sorted({c for _, c in load})
    h2 = results.get("h2", [])
    # --h2-only: no HTTP/1.1 load, only the variants the HTTP/2 phase ran.
    shown = {n: w for n, w in meta["variants"].items() if load or n in {r["variant"] for r in h2}}
    lines = [
        "# Benchmarks",
        "",
        f"Run {meta['date']} by `scripts/bench` on {meta['machine']}, Python {meta['python']}, "
        f"in {meta['duration_s']} s"
        + (
            ", each proxy pinned to a core of its own, everything else on the other"
            if meta.get("pinned")
            else ""
        )
        + ". Everything on loopback: nginx as the origin (a small "
        "`200 ok` for the load, a 1 GiB file and a PUT sink for the transfers), one Redis, "
        + (
            "`wrk -t1` as the HTTP/1.1 load, h2load as the HTTP/2 one. "
            if h2
            else "`wrk -t1` as the load. "
        )
        + (
            "Rounds interleaved (every variant once per round, order rotating); figures are "
            f"medians over {meta['args']['rounds']} rounds of {meta['args']['seconds']} s."
            if load
            else "No HTTP/1.1 load this time (`--h2-only`)."
        ),
        "",
        "| variant | what |",
        "| --- | --- |",
        *(f"| {name} | {what} |" for name, what in shown.items()),
        "",
    ]
    if load:
        lines += [
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
    if load:
        lines += [
            "",
            "CPU µs/request: user + system time of the proxy process over the run, per request "
            "(steadier than req/s on a shared machine). "
            "Redis writes/request: the commands the proxy sends to count (INCR for naive and "
            "predecessor, EVALSHA for counting_addon; `INFO commandstats`), per proxied request; "
            "each EVALSHA runs GET, INCRBY and SET inside Redis. "
            "/status and proxied p50: one keep-alive client sending a `GET /status` and a proxied "
            "GET (in turns, which goes first) every half second while wrk runs; the median of "
            "all rounds' samples (for bare and nginx /status is an ordinary proxied request).",
            "",
        ]
    pairs = paired(results.get("pairs", []))
    if pairs:
        lines += [
            "## Against bare, paired",
            "",
            f"bare and counting_addon ran back to back {meta['args']['pairs']} times per "
            f"connection count ({meta['args']['pair_seconds']} s each, which went first "
            "alternating), and so did bare and a second bare mitmdump (the control: how far "
            "apart two identical proxies measure here). Each pair gives a ratio, variant / "
            "bare; the table shows their median and, in brackets, the middle half of them. "
            "Two runs seconds apart see the same machine, so this is the steadier comparison."
            + restarts(meta["args"]),
            "",
            "| variant | conns | req/s | p50 latency | p99 latency | CPU per request |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for (name, c), spread in pairs.items():
            lines.append(f"| {name} | {c} | {spread_cells(spread)} |")
        lines.append("")
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
    h2_runs = medians(h2, H2_KEYS)
    h2_pairs = paired(results.get("h2_pairs", []), H2_KEYS)
    h2_memory = {(m["variant"], m["upstream"]): m for m in results.get("h2_memory", [])}
    if h2_runs:
        lines += h2_section(meta, h2, h2_runs, h2_pairs, h2_memory)
    lines += ["## Targets", "", *targets(load, pairs, transfers, connections)]
    lines += [*h2_targets(h2_pairs, h2_memory), ""]
    lines += ["![requests per second](results.png)", ""]
    (out / "results.md").write_text("\n".join(lines))
    plot(load, transfers, variants, connections, h2_runs, out / "results.png")


def h2_section(
    meta: dict[str, Any],
    h2: list[dict[str, Any]],
    runs: dict[tuple[Any, ...], Any],
    pairs: dict[tuple[Any, ...], dict[str, Quartiles]],
    memory: dict[tuple[str, str], dict[str, Any]],
) -> list[str]:
    errors: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in h2:
        errors[tuple(row[k] for k in H2_KEYS)] += row["errors"]
    args = meta["args"]
    lines = [
        "## HTTP/2 over TLS (h2load)",
        "",
        "`h2load -c conns -m streams -D seconds` (h2 by ALPN, TLS 1.3, no certificate check) "
        "against the same mitmdump reverse listeners, nginx as the upstream over HTTP/1.1 "
        "(upstream http/1.1) and, for three more mitmdumps, over TLS with h2 (upstream h2; "
        "nginx's certificate from the bench's own CA, which those proxies trust and verify). "
        "conns: h2load's connections; streams: the requests in flight on each. As in the "
        f"paired HTTP/1.1 runs, bare and counting_addon ran back to back {args['h2_pairs']} "
        f"times per setting ({args['h2_seconds']} s measured each, after "
        f"{args['h2_warm_up']} s unmeasured in which the connections are set up; which went "
        "first alternating), and so did bare and the control, bare_again. Requests still in "
        "flight when a run ends are not counted; p50 and p99 come from h2load's per-request "
        "log, CPU from the proxy's user + system time over the measured seconds.",
        "",
        "With an HTTP/1.1 upstream mitmproxy opens a new upstream connection for every "
        "HTTP/2 stream (it never reuses an HTTP/1 upstream connection for an h2 client), so "
        "those rows measure mostly the connection set-up toward nginx, whatever the addon; "
        "with an h2 upstream each client connection's streams share one upstream connection.",
        "",
        "Each run's own figures, the median over the runs (bare's from both kinds of pair); "
        "errors: failed or non-2xx requests, all runs together.",
        "",
        "| upstream | conns | streams | variant | req/s | p50 ms | p99 ms | CPU µs/request "
        "| errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {"bare": 0, "counting_addon": 1, "counting_addon_by": 2, "bare_again": 3}
    for key in sorted(runs, key=lambda k: (k[1], k[2], k[3], order.get(k[0], 4))):
        name, upstream, c, m = key
        r = runs[key]
        lines.append(
            f"| {upstream} | {c} | {m} | {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['cpu_us_per_request']:.0f} | {errors[key]} |"
        )
    lines += [
        "",
        "Against bare, paired: each pair's ratio variant / bare, their median and, in "
        "brackets, the middle half of them.",
        "",
        "| variant | upstream | conns | streams | req/s | p50 latency | p99 latency "
        "| CPU per request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, upstream, c, m), spread in sorted(pairs.items(), key=lambda kv: kv[0][1:]):
        lines.append(f"| {name} | {upstream} | {c} | {m} | {spread_cells(spread)} |")
    lines += [
        "",
        "Memory: each proxy's RSS after a short h2 warm-up and once all of that upstream's "
        "HTTP/2 runs were done; peak: the process's high-water mark since it started.",
        "",
        "| variant | upstream | RSS before MiB | RSS after MiB | growth MiB | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (name, upstream), m in memory.items():
        growth = m["rss_after_mib"] - m["rss_before_mib"]
        lines.append(
            f"| {name} | {upstream} | {m['rss_before_mib']:.1f} | {m['rss_after_mib']:.1f} "
            f"| {growth:+.1f} | {m['peak_rss_mib']:.1f} |"
        )
    lines.append("")
    return lines


def h2_targets(
    pairs: dict[tuple[Any, ...], dict[str, Quartiles]],
    memory: dict[tuple[str, str], dict[str, Any]],
) -> list[str]:
    out = []
    for (name, upstream, c, m), spread in sorted(pairs.items(), key=lambda kv: kv[0][1:]):
        if name not in ("counting_addon", "counting_addon_by"):
            continue
        rps = spread["rps"][1]
        what = "" if name == "counting_addon" else ", counting by route,method"
        out.append(
            f"- HTTP/2, {upstream} upstream, c={c} m={m}{what}: throughput {rps:.3f}x bare, median "
            f"of paired ratios (target >= 0.97): {check(rps >= 0.97)}"
        )
    for (name, upstream), mine in memory.items():
        if name != "counting_addon" or ("bare", upstream) not in memory:
            continue
        bare = memory[("bare", upstream)]
        growth = mine["rss_after_mib"] - mine["rss_before_mib"]
        bare_growth = bare["rss_after_mib"] - bare["rss_before_mib"]
        out.append(
            f"- HTTP/2, {upstream} upstream: RSS growth over the phase {growth:+.1f} MiB, "
            f"bare's {bare_growth:+.1f} MiB (target: flat, within {H2_RSS_MARGIN_MIB:.0f} MiB "
            f"of bare's): {check(growth <= max(bare_growth, 0) + H2_RSS_MARGIN_MIB)}"
        )
    return out


def targets(
    load: dict[tuple[Any, ...], Any],
    pairs: dict[tuple[str, int], dict[str, Quartiles]],
    transfers: dict[tuple[Any, ...], Any],
    connections: list[int],
) -> list[str]:
    out = []
    for c in connections:
        bare, ours = load[("bare", c)], load[("counting_addon", c)]
        pred = load[("predecessor", c)]
        # The paired ratios where there are some, else the ratio of the rounds' medians.
        if ("counting_addon", c) in pairs:
            against_bare = {f: spread[1] for f, spread in pairs[("counting_addon", c)].items()}
        else:
            against_bare = {f: ours[f"{f}_ms"] / bare[f"{f}_ms"] for f in ("p50", "p99")}
            against_bare["rps"] = ours["rps"] / bare["rps"]
        source = "median of paired ratios" if ("counting_addon", c) in pairs else "ratio of medians"
        latency_ok = against_bare["p50"] <= 1.05 and against_bare["p99"] <= 1.05
        out += [
            f"- c={c}: throughput {against_bare['rps']:.3f}x bare, {source} (target >= 0.97): "
            f"{check(against_bare['rps'] >= 0.97)}",
            f"- c={c}: throughput {ratio(ours['rps'], pred['rps'])} the predecessor "
            f"(target >= 1.3): {check(ours['rps'] >= 1.3 * pred['rps'])}",
            f"- c={c}: {ours['redis_writes_per_request']:.3f} Redis writes per request "
            f"(target <= 0.05): {check(ours['redis_writes_per_request'] <= 0.05)}",
            f"- c={c}: p50 {against_bare['p50']:.3f}x, p99 {against_bare['p99']:.3f}x bare, "
            f"{source} (target <= 1.05): {check(latency_ok)}",
            f"- c={c}: /status p50 {ours['status_p50_ms']:.2f} ms, proxied p50 "
            f"{ours['sampled_proxied_p50_ms']:.2f} ms (target: no worse): "
            f"{check(ours['status_p50_ms'] <= ours['sampled_proxied_p50_ms'])}",
        ]
        if ("counting_addon_by", c) in pairs:
            rps = pairs[("counting_addon_by", c)]["rps"][1]
            out.append(
                f"- c={c}: counting by route,method, throughput {rps:.3f}x bare, median of "
                f"paired ratios (target >= 0.97): {check(rps >= 0.97)}"
            )
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
    h2: dict[tuple[Any, ...], Any],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(connections) + (1 if transfers else 0) + (1 if h2 else 0)
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
        ax = axes[0][len(connections)]
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
    if h2:
        ax = axes[0][-1]
        settings = sorted({k[1:] for k in h2})
        ys = range(len(settings))
        for offset, name, color in (
            (-0.2, "bare", "tab:gray"),
            (0.2, "counting_addon", "tab:orange"),
        ):
            values = [h2[(name, *s)]["rps"] if (name, *s) in h2 else 0 for s in settings]
            ax.barh([y + offset for y in ys], values, height=0.4, label=name, color=color)
            for y, value in zip(ys, values, strict=True):
                ax.text(value, y + offset, f" {value:.0f}", va="center", fontsize=8)
        ax.set_yticks(list(ys), [f"{u} upstream\n-c {c} -m {m}" for u, c, m in settings])
        ax.invert_yaxis()
        ax.set_title("HTTP/2 over TLS (h2load)")
        ax.set_xlabel("requests/s (median)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
