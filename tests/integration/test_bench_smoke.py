"""Smoke test of bench/latency.py: the script runs end to end against real Synapse and reports figures.

It asserts no timing threshold (benchmarks are scripts, not timed tests: ARCHITECTURE.md); it only
shows the script starts its server, measures both modes, stops cleanly and ends with its JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_latency_bench_runs_and_reports_both_modes(tmp_path: Path) -> None:
    work = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "latency.py"),
            "--messages",
            "5",
            "--topology",
            "single",
            "--dir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    assert report["bench"] == "latency"
    assert report["messages"] == 5
    assert report["synapse_start_s"] > 0
    assert "federation" not in report
    single = report["single"]
    for mode in ("nimbus", "bare"):
        assert single[mode]["n"] == 5
        assert single[mode]["p50_ms"] > 0
        assert single[mode]["p99_ms"] >= single[mode]["p50_ms"]
    assert single["ratio_p50"] > 0 and single["ratio_p99"] > 0
    # The servers were stopped: no Synapse pid left running from the lab the script started.
    lab = json.loads((work / "lab1" / "lab.json").read_text())
    for server in lab["servers"]:
        assert server["pid"] is None
