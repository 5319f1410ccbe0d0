"""``bench/bench_api.py --quick`` runs on the local platform, so the API benchmark cannot rot.

The bench (docs/benchmarks.md, "The REST API") as a process, at its small sizes: ``agent-tree api``
as a real process, 40 SSE clients on 4 live runs whose steps a publisher writes as workers do, one
direct Redis reader per run as the baseline, then list-runs and steps pages over a separate history
database. Asserted on its JSON report: every client got every step exactly once, in order, then
``end`` (the bench itself exits 1 otherwise), the lags and latencies were measured on both sides,
and each history query uses an index.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from platformlib import REPO, Platform

pytestmark = pytest.mark.e2e

TIMEOUT_S = 600  # it takes well under 2 minutes on an idle machine; shared CI machines can be far slower


def test_bench_api_quick(platform: Platform, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_api.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=platform.process_env(), cwd=REPO,
    )  # fmt: skip
    took = time.monotonic() - began
    assert proc.returncode == 0, f"bench_api.py --quick exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
    live, size = report["live"], report["size"]

    delivery = live["delivery"]
    assert delivery["clients"] == size["clients"] == 40
    assert delivery["complete"] == delivery["clients"], delivery["failures"]
    assert delivery["events"] == size["clients"] * size["steps"]
    assert live["baseline_delivery"]["complete"] == size["runs"], live["baseline_delivery"]["failures"]
    assert live["lag_api"]["n"] == size["clients"] * size["steps"]
    assert live["lag_xread"]["n"] == size["runs"] * size["steps"]
    assert live["lag_api"]["p50_ms"] > 0 and live["lag_xread"]["p50_ms"] > 0
    assert live["api_rss_peak_mib"] > 0 and live["api_cpu_s"] > 0
    assert live["api_metric_delivered"] == size["clients"] * size["steps"]  # the API's own lag histogram

    cases = report["queries"]["cases"]
    assert [c["case"].split(" (")[0] for c in cases] == [
        "runs, first page", "runs, deep page", "runs, tree filter", "runs, phase filter", "runs, tree + phase filter",
        "steps, first page", "steps, deep page",
    ]  # fmt: skip
    for case in cases:
        assert case["api"]["n"] == case["sql"]["n"] == size["requests"], case["case"]
        assert case["index_used"], f"{case['case']}: no index in\n" + "\n".join(case["explain"])
    print(f"bench_api.py --quick took {took:.0f}s; lag p50 API {live['lag_api']['p50_ms']:.0f} ms, "
          f"XREAD {live['lag_xread']['p50_ms']:.0f} ms")  # fmt: skip
