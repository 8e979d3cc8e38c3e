"""The README's main job: `nimbus demo` exchanges messages across two federated servers and stops
its servers cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; its parent (the demo) has exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_demo_exchanges_messages_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "nimbus.apps.cli.main", "demo", "--dir", str(tmp_path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    results = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            results.append(json.loads(line))
            if results[-1]["type"] == "demo_done":
                break
        assert results and results[-1]["type"] == "demo_done", demo.stderr.read() if demo.stderr else ""
        lab = json.loads((tmp_path / "lab" / "lab.json").read_text())
        pids = [s["pid"] for s in lab["servers"]]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0
    messages = [r for r in results if r["type"] == "demo_message"]
    assert [(m["from"].split(":")[0], m["to"].split(":")[0]) for m in messages] == [
        ("@alice", "@bob"),
        ("@bob", "@alice"),
    ]
    servers = {m["from"].split(":", 1)[1] for m in messages}
    assert len(servers) == 2  # the two people are on different homeservers
    assert not any(alive(pid) for pid in pids)
