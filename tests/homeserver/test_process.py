"""Unit tests of PID bookkeeping (local processes only, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nimbus.homeserver.config import ServerPaths
from nimbus.homeserver.errors import AlreadyRunning
from nimbus.homeserver.process import SynapseProcess, pid_alive, read_pid, tail, terminate


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    return p.pid


def test_read_pid_takes_the_first_line(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("1234\n/var/lib/x\n")
    assert read_pid(tmp_path / "p") == 1234
    (tmp_path / "q").write_text("garbage")
    assert read_pid(tmp_path / "q") is None
    assert read_pid(tmp_path / "missing") is None


def test_pid_alive_checks_the_marker() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), marker="no-such-marker-in-my-cmdline")
    assert not pid_alive(dead_pid())


def test_stale_pid_file_is_cleaned_up(tmp_path: Path) -> None:
    paths = ServerPaths(tmp_path)
    paths.pid_file.write_text(f"{dead_pid()}\n")
    assert SynapseProcess(paths).running_pid() is None
    assert not paths.pid_file.exists()


def test_pid_of_an_unrelated_live_process_is_not_ours(tmp_path: Path) -> None:
    paths = ServerPaths(tmp_path)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Synapse of this folder
    assert SynapseProcess(paths).running_pid() is None


def test_live_server_blocks_a_second_spawn(tmp_path: Path) -> None:
    paths = ServerPaths(tmp_path)
    # A stand-in process whose command line names this folder's config, as Synapse's does.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(60)", str(paths.config)],
        start_new_session=True,
    )
    try:
        paths.pid_file.write_text(f"{proc.pid}\n")
        with pytest.raises(AlreadyRunning, match=f"pid {proc.pid}") as e:
            SynapseProcess(paths).spawn()
        assert e.value.pid == proc.pid
    finally:
        terminate(proc.pid, grace=5, proc=proc)
    assert proc.returncode is not None


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ok', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"  # handler installed
    terminate(proc.pid, grace=0.3, proc=proc)
    assert proc.returncode == -9


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("\n".join(f"line {i}" for i in range(100)))
    assert tail(tmp_path / "log", 3) == "line 97\nline 98\nline 99"
    assert tail(tmp_path / "missing") == ""
