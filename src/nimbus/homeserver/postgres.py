"""A private PostgreSQL cluster owned by a server's (or a lab's) data folder.

Owns: finding the PostgreSQL binaries, `initdb` (C locale, UTF8, trust auth on loopback), starting
`postgres` on 127.0.0.1 and a free port with its unix socket directory inside the cluster folder,
waiting until it is ready, creating databases the way Synapse requires (`ENCODING 'UTF8' LC_COLLATE
'C' LC_CTYPE 'C' TEMPLATE template0`) and stopping it by PID.

Rules: initdb/postgres refuse to run as root, so when we are root they run as the `postgres` user
(Popen user=/group=, so the PID we hold is the postmaster's own) and the cluster folder is owned by
that user. If that user cannot reach the data folder (e.g. pytest's 0700 temp root), the cluster
lives in a private folder under the system temp dir and the data folder holds a symlink to it;
`destroy()` removes both. Every wait has a deadline.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from nimbus.homeserver.config import PostgresDatabase
from nimbus.homeserver.errors import PostgresError, StartFailed
from nimbus.homeserver.process import free_ports, pid_alive, port_is_free, read_pid, tail, terminate

PG_USER = "postgres"  # the OS user that runs the cluster when we are root, and the DB superuser
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MAX_SOCKET_DIR = 90  # unix socket paths are limited to ~107 bytes, ".s.PGSQL.NNNNN" included


def find_bin_dir() -> Path:
    """The directory holding initdb/postgres/pg_isready/psql (newest Debian version first)."""
    env = os.environ.get("NIMBUS_POSTGRES_BIN")
    candidates = [env] if env else []

    def version(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "postgres").exists():
            return Path(c)
    raise PostgresError(
        "PostgreSQL binaries not found (apt-get install postgresql, or set NIMBUS_POSTGRES_BIN)"
    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _user_kwargs() -> dict[str, Any]:
    return {"user": PG_USER, "group": PG_USER, "extra_groups": []} if _as_root() else {}


def _chown_to_pg(path: Path) -> None:
    if _as_root():
        shutil.chown(path, PG_USER, PG_USER)


class PostgresCluster:
    """The cluster of `owner` (a data folder): home at `owner/postgres`, state in `owner/postgres.json`."""

    def __init__(self, owner: Path) -> None:
        self.owner = owner
        self.link = owner / "postgres"
        self.state_file = owner / "postgres.json"
        self._proc: subprocess.Popen[bytes] | None = None

    # --- layout -------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.link.resolve()

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def port(self) -> int:
        port = self._state().get("port")
        if not isinstance(port, int):
            raise PostgresError(f"the cluster in {self.owner} has never been started")
        return port

    def database(self, name: str) -> PostgresDatabase:
        return PostgresDatabase(database=name, host="127.0.0.1", port=self.port, user=PG_USER)

    # --- lifecycle ----------------------------------------------------------------------------
    def _pg_can_reach(self, folder: Path) -> bool:
        if not _as_root():
            return True
        r = subprocess.run(["test", "-x", str(folder)], timeout=10, check=False, **_user_kwargs())
        return r.returncode == 0

    def initialise(self) -> None:
        """Create the cluster (once). Idempotent."""
        if self.link.exists() and (self.data_dir / "PG_VERSION").exists():
            return
        bin_dir = find_bin_dir()
        self.owner.mkdir(parents=True, exist_ok=True)
        if not self.link.exists():
            if self._pg_can_reach(self.owner):
                self.link.mkdir()
            else:
                external = Path(tempfile.mkdtemp(prefix="nimbus-pg-"))
                os.chmod(external, 0o700)
                self.link.symlink_to(external, target_is_directory=True)
        _chown_to_pg(self.home)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_to_pg(self.socket_dir)
        cmd = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "--locale=C", "-E", "UTF8"]
        cmd += ["--auth=trust", "-U", PG_USER, "--no-sync"]
        try:
            r = subprocess.run(
                cmd, cwd=self.home, capture_output=True, timeout=120, check=False, **_user_kwargs()
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(f"initdb in {self.data_dir} did not finish within 120 s") from None
        if r.returncode != 0:
            out = (r.stdout + r.stderr).decode("utf-8", "replace")[-2000:]
            raise PostgresError(f"initdb failed in {self.data_dir} (exit {r.returncode}):\n{out}")

    def running_pid(self) -> int | None:
        if not self.link.exists():
            return None
        pid = read_pid(self.data_dir / "postmaster.pid")  # first line is the postmaster's PID
        if pid is not None and pid_alive(pid, str(self.data_dir)):
            return pid
        return None

    def start(self, timeout: float = 60.0) -> int:
        """Initialise if needed, start (if not running) and wait until ready. Returns the port."""
        self.initialise()
        if self.running_pid() is not None:
            return self.port
        bin_dir = find_bin_dir()
        port = self._state().get("port")
        if not isinstance(port, int) or not port_is_free(port):
            port = free_ports(1)[0]
        sock = str(self.socket_dir) if len(str(self.socket_dir)) <= _MAX_SOCKET_DIR else ""
        cmd = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(port)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}"]
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
                **_user_kwargs(),
            )
        self.state_file.write_text(json.dumps({"port": port, "home": str(self.home)}) + "\n")
        self._wait_ready(bin_dir, port, time.monotonic() + timeout)
        return port

    def _wait_ready(self, bin_dir: Path, port: int, deadline: float) -> None:
        cmd = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-t", "1"]
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise StartFailed(
                    f"PostgreSQL in {self.data_dir} exited with code {self._proc.returncode}",
                    tail(self.log),
                )
            r = subprocess.run(cmd, capture_output=True, timeout=10, check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop(grace=5.0)
                raise StartFailed(
                    f"PostgreSQL in {self.data_dir} not ready before the deadline", tail(self.log)
                )
            time.sleep(0.05)

    def create_database(self, name: str) -> PostgresDatabase:
        """Create database `name` (if missing) with the C collation Synapse requires."""
        if not _DB_NAME.match(name):
            raise PostgresError(f"invalid database name {name!r}")
        psql = [str(find_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER]
        psql += ["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tA", "-c"]

        def run(sql: str) -> str:
            r = subprocess.run([*psql, sql], capture_output=True, timeout=60, check=False)
            if r.returncode != 0:
                raise PostgresError(f"psql failed: {r.stderr.decode('utf-8', 'replace').strip()}")
            return r.stdout.decode().strip()

        # `name` matched _DB_NAME above, so it is safe inside the SQL text.
        if run(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":  # noqa: S608
            run(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        return self.database(name)

    def stop(self, grace: float = 10.0) -> bool:
        """Fast shutdown (SIGINT), SIGKILL after `grace`. Returns whether it was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        proc = self._proc if self._proc is not None and self._proc.pid == pid else None
        terminate(pid, grace, proc, str(self.data_dir), first_signal=signal.SIGINT)
        self._proc = None
        return True

    def destroy(self) -> None:
        """Stop the cluster and delete it (and its external folder, if any)."""
        self.stop()
        if self.link.is_symlink():
            shutil.rmtree(self.home, ignore_errors=True)
            self.link.unlink()
        elif self.link.exists():
            shutil.rmtree(self.link, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
