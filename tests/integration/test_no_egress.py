"""Nothing leaves the machine: a federated lab and nimbus clients use loopback and nothing else.

Two layers, both checked here:
1. a network namespace with only `lo` (`unshare --net`): the whole scenario (_egress_scenario.py:
   two Synapse servers federating over TLS, two nimbus clients, a message each way) runs where no
   other network exists, so a connection outward cannot succeed;
2. an audit hook in every Python process of the scenario (tests/netguard/sitecustomize.py on
   PYTHONPATH, for the client process and, through the lab's `env=`, for each Synapse) records every
   connect / sendto / sendmsg destination and every getaddrinfo host, so an attempt that merely
   failed would still be seen. Every record must be loopback, a unix socket or the kernel, and each
   process must have recorded connects, so the guard cannot pass vacuously.
The guard itself is checked too: it flags non-loopback destinations, and does nothing when its
variable is unset. We run as root; if `unshare --net` does not work the tests fail (never skip).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from nimbus.homeserver import Lab

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NETGUARD_DIR = REPO / "tests" / "netguard"
SCENARIO_TIMEOUT = 240.0
# Within the namespace: bring loopback up, then become the given program ("$0" "$@").
IN_NAMESPACE = 'ip link set lo up && exec "$0" "$@"'

Record = dict[str, Any]


def in_loopback_namespace(
    argv: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare(1) is not installed: cannot build a loopback-only namespace"
    return subprocess.run(
        [unshare, "--net", "sh", "-c", IN_NAMESPACE, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def guarded_env(log: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NIMBUS_NETGUARD_LOG" and "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(NETGUARD_DIR)
    if log is not None:
        env["NIMBUS_NETGUARD_LOG"] = str(log)
    return env


def read_records(log: Path) -> list[Record]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def is_local(rec: Record) -> bool:
    """Loopback (127.0.0.0/8, ::1, localhost), a unix socket, or the kernel (netlink)."""
    if rec["family"] in ("AF_UNIX", "AF_NETLINK"):
        return True
    host = rec["host"]
    if host is None:
        # getaddrinfo(None, port): a local (bind) lookup; sendto/sendmsg without an address go to
        # the peer of a connected socket, whose connect was recorded.
        return bool(rec["event"] != "socket.connect")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_unshare_gives_a_loopback_only_namespace() -> None:
    probe = "import socket; print(','.join(sorted(n for _, n in socket.if_nameindex())))"
    proc = in_loopback_namespace([sys.executable, "-c", probe], guarded_env(None), timeout=30)
    assert proc.returncode == 0, f"unshare --net failed (we should be root): {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "lo"


def test_netguard_records_and_flags_outward_destinations(tmp_path: Path) -> None:
    """The guard sees a connect, a datagram and a name lookup aimed outward (in the namespace, so
    nothing can actually leave), and the checker flags exactly those."""
    log = tmp_path / "guard.jsonl"
    sock_path = tmp_path / "s.sock"
    script = f"""
import socket
def attempt(f):
    try:
        f()
    except OSError:
        pass
tcp = lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)
attempt(lambda: tcp().connect(("192.0.2.1", 443)))
attempt(lambda: tcp().connect_ex(("127.0.0.1", 9)))
attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("198.51.100.7", 53)))
attempt(lambda: socket.getaddrinfo("example.org", 443))
attempt(lambda: socket.getaddrinfo("localhost", 443))
attempt(lambda: socket.socket(socket.AF_UNIX).connect({str(sock_path)!r}))
"""
    proc = in_loopback_namespace([sys.executable, "-c", script], guarded_env(log), timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = read_records(log)
    flagged = sorted((r["event"], r["host"]) for r in records if not is_local(r))
    assert flagged == [
        ("socket.connect", "192.0.2.1"),
        ("socket.getaddrinfo", "example.org"),
        ("socket.sendto", "198.51.100.7"),
    ]
    local = sorted((r["event"], r["host"]) for r in records if is_local(r))
    assert ("socket.connect", "127.0.0.1") in local  # connect_ex is audited as socket.connect too
    assert ("socket.getaddrinfo", "localhost") in local
    assert ("socket.connect", str(sock_path)) in local


def test_netguard_is_inert_without_its_variable(tmp_path: Path) -> None:
    script = (
        "import socket, sys, sitecustomize; s = socket.socket(); s.connect_ex(('127.0.0.1', 9));"
        "socket.getaddrinfo('localhost', 9); print(sitecustomize.__file__, sitecustomize._LOG)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=guarded_env(None),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    # The guard module is the one loaded at start-up, found no log path, and broke nothing.
    assert proc.stdout.split() == [str(NETGUARD_DIR / "sitecustomize.py"), "None"]
    assert list(tmp_path.iterdir()) == []


def test_nothing_leaves_the_machine(tmp_path: Path) -> None:
    log = tmp_path / "netguard.jsonl"
    work = tmp_path / "scenario"
    work.mkdir()
    argv = [sys.executable, "-m", "tests.integration._egress_scenario", str(work)]
    try:
        proc = in_loopback_namespace(argv, guarded_env(log), timeout=SCENARIO_TIMEOUT)
    finally:
        # The scenario stops its lab itself; if it was killed (timeout), stop what it left running.
        if (work / "lab" / "lab.json").exists():
            Lab.open(work / "lab").stop()
    assert proc.returncode == 0, f"scenario failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["interfaces"] == ["lo"], "the scenario did not run in a loopback-only namespace"
    assert result["received"] == {"bob": True, "alice": True}

    records = read_records(log)
    outward = [r for r in records if not is_local(r)]
    assert outward == [], f"non-loopback destinations: {outward[:20]}"
    connects = Counter(r["pid"] for r in records if r["event"] == "socket.connect")
    client_pid, server_pids = result["client_pid"], result["server_pids"]
    assert connects[client_pid] > 0, "the client process recorded no connects: is the guard loaded?"
    for pid in server_pids:  # federation: each Synapse connected to the other
        assert connects[pid] > 0, f"Synapse pid {pid} recorded no connects: is the guard loaded there?"
    lookups = {r["host"] for r in records if r["event"] == "socket.getaddrinfo"}
    assert "localhost" in lookups  # server names localhost:<port> were resolved, locally
