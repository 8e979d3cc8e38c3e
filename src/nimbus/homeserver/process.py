"""Starting, watching and stopping Synapse processes by PID.

Owns: the PID file of a data folder, spawning Synapse in its own process group with stdout/stderr to
a file, waiting until `GET /_matrix/client/versions` answers (spec:
https://spec.matrix.org/v1.12/client-server-api/#get_matrixclientversions), and stopping by PID
(SIGTERM to the group, SIGKILL after a grace period).

Rules: every wait has a deadline (no hang); processes are found only through PIDs we recorded,
checked against /proc so a reused PID is never signalled; a stale PID file is removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from nimbus.homeserver.config import ServerPaths
from nimbus.homeserver.errors import AlreadyRunning, StartFailed, StopFailed

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
POLL_INTERVAL = 0.05


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports free right now on `host` (held open together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether `pid` is a live (non-zombie) process whose command line contains `marker`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else (e.g. postgres run as its own user)
    proc = Path("/proc") / str(pid)
    if not proc.exists():
        return sys.platform != "linux"
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if marker is not None:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            return marker in cmdline
    except (OSError, IndexError):
        return False
    return True


def read_pid(path: Path) -> int | None:
    """The PID on the first line of `path` (None if missing or not a number)."""
    try:
        return int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def wait_for_exit(
    pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, marker: str | None = None
) -> bool:
    """Wait up to `timeout` s for `pid` to end (reaping it if it is our child). True if it ended."""
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
        if not pid_alive(pid, marker):
            return True
        time.sleep(POLL_INTERVAL)
    return not pid_alive(pid, marker)


def terminate(
    pid: int,
    grace: float = 10.0,
    proc: subprocess.Popen[bytes] | None = None,
    marker: str | None = None,
    group: bool = True,
    first_signal: signal.Signals = signal.SIGTERM,
) -> None:
    """Stop `pid` (its whole process group if `group`): `first_signal`, then SIGKILL after `grace` s."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                try:
                    os.killpg(pid, sig)
                    return
                except (ProcessLookupError, PermissionError):
                    pass
            os.kill(pid, sig)

    send(first_signal)
    if wait_for_exit(pid, grace, proc, marker):
        return
    send(signal.SIGKILL)
    if not wait_for_exit(pid, 5.0, proc, marker):
        raise StopFailed(f"process {pid} survived SIGTERM and SIGKILL")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server process: ours without proxy settings (loopback needs none)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(extra or {})
    return env


class SynapseProcess:
    """The Synapse process of one data folder, tracked through `paths.pid_file`."""

    def __init__(self, paths: ServerPaths) -> None:
        self.paths = paths
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def marker(self) -> str:
        """A string in the process's command line that ties it to this data folder."""
        return str(self.paths.config)

    def running_pid(self) -> int | None:
        """The PID of this folder's live server, or None (removing a stale PID file)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        pid = read_pid(self.paths.pid_file)
        if pid is None:
            return None
        if pid_alive(pid, self.marker):
            return pid
        self.paths.pid_file.unlink(missing_ok=True)
        return None

    def spawn(self, env: Mapping[str, str] | None = None) -> int:
        """Start Synapse without waiting for it; raises AlreadyRunning if one runs from this folder."""
        pid = self.running_pid()
        if pid is not None:
            raise AlreadyRunning(f"a server is already running from {self.paths.root} (pid {pid})", pid)
        cmd = [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.paths.config)]
        with self.paths.output.open("ab") as out:
            out.write(f"--- nimbus.homeserver: starting at {time.ctime()}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.paths.root,
                env=child_env(env),
                start_new_session=True,  # own process group: stop() signals the group
            )
        self.paths.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def log_tail(self, lines: int = 25) -> str:
        parts = [f"[{self.paths.output.name}]\n{tail(self.paths.output, lines)}"]
        log = tail(self.paths.log, lines)
        if log:
            parts.append(f"[{self.paths.log.name}]\n{log}")
        return "\n".join(parts)

    def wait_ready(self, client_url: str, deadline: float) -> None:
        """Poll /_matrix/client/versions until it answers 200 or `deadline` (time.monotonic()) passes.

        Raises StartFailed quoting the log if the process exits meanwhile or the deadline passes.
        """
        url = client_url.rstrip("/") + "/_matrix/client/versions"
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while True:
                if self._proc is not None:
                    code = self._proc.poll()
                    if code is not None:
                        self._proc = None
                        self.paths.pid_file.unlink(missing_ok=True)
                        raise StartFailed(
                            f"Synapse in {self.paths.root} exited with code {code} during start-up",
                            self.log_tail(),
                        )
                elif self.running_pid() is None:
                    raise StartFailed(f"Synapse in {self.paths.root} is not running", self.log_tail())
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop(grace=5.0)
                    raise StartFailed(
                        f"Synapse in {self.paths.root} did not answer {url} before the deadline",
                        self.log_tail(),
                    )
                time.sleep(POLL_INTERVAL)

    def stop(self, grace: float = 10.0) -> bool:
        """Stop the server if it runs. Returns whether there was one to stop."""
        pid = self.running_pid()
        if pid is None:
            return False
        proc = self._proc if self._proc is not None and self._proc.pid == pid else None
        terminate(pid, grace, proc, self.marker)
        self._proc = None
        self.paths.pid_file.unlink(missing_ok=True)
        return True
