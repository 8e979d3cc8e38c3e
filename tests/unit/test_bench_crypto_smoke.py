"""Smoke test of bench/crypto.py: it runs with a small N, exits 0 and ends with one JSON object.

No timing thresholds (benchmarks are not timed tests): only that both modes measured every message,
the figures are positive and the ratio is derived from them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crypto.py"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_crypto_bench_runs_and_reports_json(store: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--messages", "30", "--block", "10", "--store", store, "--profile"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "crypto" and result["messages"] == 30 and result["store"] == store
    for mode in ("pipeline", "nimbus", "raw"):
        assert result[mode]["n"] == 30 and result[mode]["mean_us"] > 0
    assert result["ratio_mean"] == pytest.approx(
        result["pipeline"]["mean_us"] / result["raw"]["mean_us"], rel=0.01
    )
    assert set(result["nimbus_phases_us"]) == {"encrypt", "commit_sender", "decrypt", "commit_receiver"}
    assert result["profile_top"] and all("function" in row for row in result["profile_top"])
