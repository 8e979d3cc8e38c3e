"""`Homeserver`: one Synapse in one data folder, as a Python object.

Owns: configuring a data folder (config.py), remembering it in `server.json`, starting and stopping
its process (process.py) and, when it uses PostgreSQL, its cluster (postgres.py), and creating users
(admin.py).

Rules: a data folder is the unit of ownership; `Homeserver.open(dir)` in another process finds the
same server through `server.json` and the PID file. Starting never hangs (deadlines everywhere).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from nimbus.homeserver.admin import RegisteredUser, register_user
from nimbus.homeserver.config import (
    HomeserverConfig,
    PostgresDatabase,
    Profile,
    Secrets,
    ServerPaths,
    config_from_record,
    config_to_record,
)
from nimbus.homeserver.errors import ConfigError, NotRunning
from nimbus.homeserver.postgres import PostgresCluster
from nimbus.homeserver.process import SynapseProcess, free_ports

DatabaseKind = Literal["sqlite", "postgres"]
DEFAULT_START_TIMEOUT = 90.0


@dataclass(frozen=True)
class ServerStatus:
    server_name: str
    client_url: str
    data_dir: str
    running: bool
    pid: int | None
    responding: bool
    federation_port: int | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Homeserver:
    """One Synapse server. Build it with `start`, `configure` or `open`; use it as a context manager."""

    def __init__(
        self,
        config: HomeserverConfig,
        postgres_owner: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.paths = ServerPaths(config.data_dir)
        self.env: dict[str, str] = dict(env or {})
        self._postgres_owner = postgres_owner
        self._process = SynapseProcess(self.paths)

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def configure(
        cls,
        data_dir: Path | str,
        *,
        profile: Profile = "dev",
        database: DatabaseKind = "sqlite",
        port: int | None = None,
        server_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Homeserver:
        """Write the config of a new single server into `data_dir` (no federation listener)."""
        data_dir = Path(data_dir).absolute()
        port = port or free_ports(1)[0]
        cfg = HomeserverConfig(
            server_name=server_name or f"localhost:{port}",
            data_dir=data_dir,
            client_port=port,
            profile=profile,
            extra=dict(extra or {}),
        )
        hs = cls(cfg, postgres_owner=data_dir if database == "postgres" else None, env=env)
        if database == "postgres":
            hs.config = dataclasses.replace(cfg, database=PostgresDatabase("synapse"))
        hs.save()
        return hs

    @classmethod
    def open(cls, data_dir: Path | str, env: Mapping[str, str] | None = None) -> Homeserver:
        """The server already configured in `data_dir` (reads its server.json)."""
        paths = ServerPaths(Path(data_dir).absolute())
        try:
            rec = json.loads(paths.state.read_text())
        except OSError:
            raise ConfigError(f"no server is configured in {paths.root} (no {paths.state.name})") from None
        except ValueError as e:
            raise ConfigError(f"{paths.state} is not valid JSON: {e}") from None
        owner = rec.get("postgres_owner")
        return cls(config_from_record(rec["config"]), Path(owner) if owner else None, env)

    @classmethod
    def start(
        cls,
        data_dir: Path | str,
        *,
        profile: Profile = "dev",
        database: DatabaseKind = "sqlite",
        port: int | None = None,
        server_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> Homeserver:
        """Configure `data_dir` if it is new (else reuse its config) and start the server."""
        if ServerPaths(Path(data_dir).absolute()).state.exists():
            hs = cls.open(data_dir, env=env)
        else:
            hs = cls.configure(
                data_dir,
                profile=profile,
                database=database,
                port=port,
                server_name=server_name,
                extra=extra,
                env=env,
            )
        hs.launch(timeout=timeout)
        return hs

    def save(self) -> None:
        """Write homeserver.yaml (and friends) and server.json."""
        self.config.write()
        rec = {
            "config": config_to_record(self.config),
            "postgres_owner": str(self._postgres_owner) if self._postgres_owner else None,
        }
        self.paths.state.write_text(json.dumps(rec, indent=2) + "\n")

    # --- properties -----------------------------------------------------------------------------
    @property
    def server_name(self) -> str:
        return self.config.server_name

    @property
    def client_url(self) -> str:
        return self.config.client_url

    @property
    def data_dir(self) -> Path:
        return self.paths.root

    @property
    def federation_port(self) -> int | None:
        return self.config.federation.port if self.config.federation else None

    @property
    def pid(self) -> int | None:
        return self._process.running_pid()

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def postgres(self) -> PostgresCluster | None:
        if isinstance(self.config.database, PostgresDatabase) and self._postgres_owner is not None:
            return PostgresCluster(self._postgres_owner)
        return None

    def log_tail(self, lines: int = 25) -> str:
        return self._process.log_tail(lines)

    # --- lifecycle ------------------------------------------------------------------------------
    def prepare_database(self, timeout: float = 60.0) -> None:
        """Start this server's PostgreSQL (if any), create its database, follow a changed port."""
        pg = self.postgres
        db = self.config.database
        if pg is None or not isinstance(db, PostgresDatabase):
            return
        pg.start(timeout=timeout)
        new_db = pg.create_database(db.database)
        if new_db != db:
            self.config = dataclasses.replace(self.config, database=new_db)
            self.save()

    def spawn(self, env: Mapping[str, str] | None = None) -> int:
        """Start the process without waiting (the database must be ready). Returns its PID."""
        return self._process.spawn({**self.env, **(env or {})})

    def wait_ready(self, deadline: float) -> None:
        """Wait (until `deadline`, a time.monotonic() value) for the client API to answer."""
        self._process.wait_ready(self.client_url, deadline)

    def launch(self, timeout: float = DEFAULT_START_TIMEOUT, env: Mapping[str, str] | None = None) -> None:
        """Start this (configured, stopped) server and wait until it answers.

        Raises AlreadyRunning if it runs already, StartFailed (quoting its log) if it exits or does
        not answer within `timeout` s.
        """
        deadline = time.monotonic() + timeout
        if self._process.running_pid() is None:
            self.prepare_database(timeout=timeout)
        self.spawn(env)
        self.wait_ready(deadline)

    def stop(self, grace: float = 10.0, *, stop_database: bool = True) -> bool:
        """Stop the server (and its own PostgreSQL). Returns whether the server was running."""
        was_running = self._process.stop(grace)
        pg = self.postgres
        if stop_database and pg is not None and self._postgres_owner == self.data_dir:
            pg.stop()
        return was_running

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.stop(stop_database=False)
        self.launch(timeout=timeout)

    def status(self, probe_timeout: float = 2.0) -> ServerStatus:
        pid = self.pid
        responding = False
        if pid is not None:
            try:
                with httpx.Client(trust_env=False, timeout=probe_timeout) as http:
                    r = http.get(self.client_url + "/_matrix/client/versions")
                    responding = r.status_code == 200
            except httpx.HTTPError:
                responding = False
        return ServerStatus(
            server_name=self.server_name,
            client_url=self.client_url,
            data_dir=str(self.data_dir),
            running=pid is not None,
            pid=pid,
            responding=responding,
            federation_port=self.federation_port,
        )

    # --- users ------------------------------------------------------------------------------------
    def create_user(
        self,
        localpart: str,
        password: str | None = None,
        *,
        admin: bool = False,
        displayname: str | None = None,
    ) -> RegisteredUser:
        """Register a user with the shared-secret admin API (a random password if none is given)."""
        if not self.is_running:
            raise NotRunning(f"the server in {self.data_dir} is not running")
        secret = Secrets.load(self.paths).registration_shared_secret
        return register_user(
            self.client_url,
            secret,
            localpart,
            password if password is not None else secrets.token_urlsafe(16),
            admin=admin,
            displayname=displayname,
        )

    def __enter__(self) -> Homeserver:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Homeserver({self.server_name!r}, {str(self.data_dir)!r})"
