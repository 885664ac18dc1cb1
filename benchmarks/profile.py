"""scripts/bench --profile: where counting_addon's proxy spends its CPU under load.

Samples mitmdump + counting_addon with py-spy while wrk loads it, and reports the share of
samples spent in the addon's own code and in redis-py (the background writer), against
mitmproxy itself. Writes docs/benchmarks/profile.md and profile.svg (a flame graph).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent

# Frames are "function (package/module.py:line)"; a sample belongs to the first of these its
# stack contains.
PARTS = {
    "counting_addon": "(counting_addon/",
    "redis-py (the writer)": "(redis/",
}


def attribute(collapsed: str) -> tuple[Counter[str], int]:
    """Samples per part, from py-spy's collapsed stacks ("frame;frame;... count" lines)."""
    parts: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for part, marker in PARTS.items():
            if marker in stack:
                parts[part] += n
                break
    return parts, total


def profile(pid: int, load: list[str], out: Path, seconds: int) -> None:
    """Record `pid` for `seconds` while `load` (a wrk command) runs."""
    raw = out / "profile.txt"
    record = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(seconds)]
    # Two recordings, as py-spy writes one format at a time: the numbers, then the picture.
    for form, path in (("raw", raw), ("flamegraph", out / "profile.svg")):
        wrk = threading.Thread(target=subprocess.run, args=(load,), kwargs={"capture_output": True})
        wrk.start()
        subprocess.run([*record, "--format", form, "--output", str(path)], check=True)
        wrk.join()
    parts, total = attribute(raw.read_text())
    raw.unlink()
    lines = [
        "# Where the CPU goes",
        "",
        f"py-spy sampled mitmdump + counting_addon (defaults) for {seconds} s under "
        f"`{' '.join(load[:-1])}`: {total} samples. Share of samples whose stack is in:",
        "",
        "| part | samples | share |",
        "| --- | --- | --- |",
    ]
    for part in PARTS:
        lines.append(f"| {part} | {parts[part]} | {parts[part] / total:.1%} |")
    rest = total - sum(parts.values())
    lines += [
        f"| mitmproxy and the rest | {rest} | {rest / total:.1%} |",
        "",
        "The addon's hooks and its Redis writes are the whole cost of counting: what is not in "
        "them is what bare mitmdump does too. [Flame graph](profile.svg).",
        "",
    ]
    (out / "profile.md").write_text("\n".join(lines))
