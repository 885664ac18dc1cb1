"""scripts/bench's reading of h2load: its summary and its per-request log."""

from __future__ import annotations

import pytest

from benchmarks.bench import parse_h2load

SUMMARY = """\
TLS Protocol: TLSv1.3
Application protocol: h2
finished in 3.00s, 600.00 req/s, 20.60KB/s
requests: 1200 total, 1200 started, 1200 done, 1199 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 1199 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def request_log(durations_us: list[int], statuses: list[int]) -> str:
    return "".join(
        f"17959704728748{i:02d}\t{s}\t{d}\n"
        for i, (s, d) in enumerate(zip(statuses, durations_us, strict=True))
    )


def test_rate_percentiles_and_errors() -> None:
    durations = [1000 * (n + 1) for n in range(100)]  # 1 to 100 ms
    statuses = [200] * 98 + [502, 404]
    result = parse_h2load(SUMMARY, request_log(durations, statuses))
    assert result.rps == 600.0
    assert result.requests == 1200
    assert 50 <= result.p50_ms <= 51
    assert 99 <= result.p99_ms <= 100
    assert result.errors == 2  # the log's two non-2xx outnumber the summary's one failure


def test_refuses_a_run_that_did_not_speak_h2() -> None:
    with pytest.raises(RuntimeError, match="did not speak h2"):
        parse_h2load(SUMMARY.replace("h2", "http/1.1"), request_log([1, 2], [200, 200]))
