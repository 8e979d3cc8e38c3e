"""Smoke test of bench/fanout.py: the script runs end to end (real Synapse, a nimbus sender and a
matrix-js-sdk sender in Node) at 10 devices and reports figures for both sides.

It asserts no timing threshold (benchmarks are scripts, not timed tests: ARCHITECTURE.md); it checks
that the script completes, ends with its JSON line, and that both senders really shared the room key
with all 10 devices over Olm (10 m.room.encrypted to-device messages each).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nimbus.homeserver import Homeserver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "interop" / "node_modules" / ".bin" / "node"


def test_fanout_bench_runs_and_reports_both_sides(tmp_path: Path) -> None:
    assert NODE.exists(), "scripts/setup_node.sh installs the interop peer's Node (never skipped)"
    work = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fanout.py"), "--sizes", "10", "--dir", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bench"] == "fanout"
    assert report["sizes"] == [10]
    assert report["sharing"] == "all"
    result = report["results"]["10"]
    assert result["devices"] == 10
    assert result["nimbus_s"] > 0
    assert result["js_s"] > 0
    assert result["ratio"] == pytest.approx(result["nimbus_s"] / result["js_s"], rel=0.01)
    assert result["nimbus_to_device"].get("m.room.encrypted") == 10
    assert result["js_to_device"].get("m.room.encrypted") == 10
    # nimbus's timed send did the whole first-message work: query, claim, to-device, send.
    for phase in ("http_keys_query", "http_keys_claim", "http_to_device", "http_send"):
        assert result["nimbus_phases"][phase]["n"] >= 1, phase
    for phase in ("keys_query", "keys_claim", "to_device", "send"):
        assert result["js_phases"][phase]["n"] >= 1, phase
    # The server was stopped.
    assert not Homeserver.open(work / "hs").is_running
