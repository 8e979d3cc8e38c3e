"""`Lab`: a local federation of N Synapse servers on loopback.

Owns: picking free ports, naming servers `localhost:<federation port>`, a private CA (ca.py) and a
TLS federation listener per server (Server-Server API over HTTPS:
https://spec.matrix.org/v1.12/server-server-api/#server-discovery; an explicit port skips
.well-known and SRV), closed federation (`federation_domain_whitelist`: by default the lab's own
servers; `no_federation` = `[]` and no federation listener), fast federation retry, one shared
PostgreSQL cluster when asked, and the lab's state in `lab.json` so another process can find it.

Rules: servers start in parallel (spawn all, then wait for each against one deadline); a failed start
stops whatever this call started; every wait has a deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from nimbus.homeserver.admin import RegisteredUser
from nimbus.homeserver.ca import CertificateAuthority
from nimbus.homeserver.config import FederationTLS, HomeserverConfig, PostgresDatabase, Profile
from nimbus.homeserver.errors import ConfigError, HomeserverError
from nimbus.homeserver.postgres import PostgresCluster
from nimbus.homeserver.process import free_ports
from nimbus.homeserver.server import DEFAULT_START_TIMEOUT, DatabaseKind, Homeserver, ServerStatus

LAB_FILE = "lab.json"


@dataclass(frozen=True)
class ServerSpec:
    """How one lab server differs from the lab's defaults.

    `allow`: the servers it federates with, as lab indices or server names (None: every lab server).
    `no_federation`: federate with nobody and have no federation listener.
    """

    allow: tuple[int | str, ...] | None = None
    no_federation: bool = False
    profile: Profile | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Lab:
    """A running (or stopped) local federation. Build it with `Lab.start(...)` or `Lab.open(path)`."""

    def __init__(
        self, path: Path, servers: list[Homeserver], postgres: PostgresCluster | None = None
    ) -> None:
        self.path = path
        self.servers = servers
        self.postgres = postgres

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def configure(
        cls,
        path: Path | str,
        servers: int | Sequence[ServerSpec] = 2,
        *,
        profile: Profile = "dev",
        database: DatabaseKind = "sqlite",
        no_federation: bool = False,
        allow: Sequence[int | str] | None = None,
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Lab:
        """Write the configs of a new lab into `path` (nothing is started).

        `servers`: a count, or one ServerSpec per server. `no_federation` and `allow` are defaults
        for servers whose spec does not say otherwise.
        """
        path = Path(path).absolute()
        if (path / LAB_FILE).exists():
            raise ConfigError(f"a lab is already configured in {path}")
        specs = [ServerSpec() for _ in range(servers)] if isinstance(servers, int) else list(servers)
        if not specs:
            raise ConfigError("a lab needs at least one server")
        path.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * len(specs))
        client_ports, fed_ports = ports[: len(specs)], ports[len(specs) :]
        names = [f"localhost:{p}" for p in fed_ports]
        ca = CertificateAuthority.load_or_create(path / "ca")
        pg = PostgresCluster(path) if database == "postgres" else None

        def resolve(items: Sequence[int | str]) -> tuple[str, ...]:
            out = []
            for it in items:
                if isinstance(it, int) or (isinstance(it, str) and it.isdigit()):
                    idx = int(it)
                    if not 0 <= idx < len(names):
                        raise ConfigError(f"--allow {it}: the lab has servers 0..{len(names) - 1}")
                    out.append(names[idx])
                else:
                    out.append(it)
            return tuple(out)

        hss = []
        for i, spec in enumerate(specs):
            data_dir = path / f"hs{i}"
            closed = spec.no_federation or no_federation
            fed = None
            if not closed:
                cert = ca.issue(data_dir / "tls")
                fed = FederationTLS(fed_ports[i], cert.certificate, cert.private_key, (ca.certificate_path,))
            allowed = spec.allow if spec.allow is not None else allow
            whitelist = () if closed else resolve(allowed) if allowed is not None else tuple(names)
            cfg = HomeserverConfig(
                server_name=names[i],
                data_dir=data_dir,
                client_port=client_ports[i],
                profile=spec.profile or profile,
                database=PostgresDatabase(f"synapse_hs{i}") if pg else None,
                federation=fed,
                federation_whitelist=whitelist,
                fast_federation_retry=True,
                extra={**(extra or {}), **spec.extra},
            )
            hs = Homeserver(cfg, postgres_owner=path if pg else None, env=env)
            hs.save()
            hss.append(hs)
        lab = cls(path, hss, pg)
        lab.save()
        return lab

    @classmethod
    def open(cls, path: Path | str, env: Mapping[str, str] | None = None) -> Lab:
        """The lab configured in `path` (reads lab.json), running or not."""
        path = Path(path).absolute()
        try:
            state = json.loads((path / LAB_FILE).read_text())
        except OSError:
            raise ConfigError(f"no lab in {path} (no {LAB_FILE})") from None
        except ValueError as e:
            raise ConfigError(f"{path / LAB_FILE} is not valid JSON: {e}") from None
        servers = [Homeserver.open(s["dir"], env=env) for s in state["servers"]]
        pg = PostgresCluster(path) if state.get("postgres") else None
        return cls(path, servers, pg)

    @classmethod
    def start(
        cls,
        path: Path | str,
        servers: int | Sequence[ServerSpec] = 2,
        *,
        profile: Profile = "dev",
        database: DatabaseKind = "sqlite",
        no_federation: bool = False,
        allow: Sequence[int | str] | None = None,
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> Lab:
        """Configure a lab in `path` (or reuse the one there) and start all its servers."""
        if (Path(path) / LAB_FILE).exists():
            lab = cls.open(path, env=env)
        else:
            lab = cls.configure(
                path,
                servers,
                profile=profile,
                database=database,
                no_federation=no_federation,
                allow=allow,
                extra=extra,
                env=env,
            )
        lab.start_all(timeout=timeout)
        return lab

    def save(self) -> None:
        state = {
            "version": 1,
            "postgres": self.postgres is not None,
            "servers": [
                {
                    "dir": str(hs.data_dir),
                    "server_name": hs.server_name,
                    "client_url": hs.client_url,
                    "client_port": hs.config.client_port,
                    "federation_port": hs.federation_port,
                    "pid": hs.pid,
                }
                for hs in self.servers
            ],
        }
        (self.path / LAB_FILE).write_text(json.dumps(state, indent=2) + "\n")

    # --- lifecycle ------------------------------------------------------------------------------
    def start_all(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Start every stopped server, in parallel; on failure stop what this call started."""
        deadline = time.monotonic() + timeout
        started: list[Homeserver] = []
        try:
            if self.postgres is not None:
                self.postgres.start(timeout=timeout)
            todo = [hs for hs in self.servers if not hs.is_running]
            for hs in todo:
                hs.prepare_database(timeout=max(1.0, deadline - time.monotonic()))
                hs.spawn()
                started.append(hs)
            for hs in todo:
                hs.wait_ready(deadline)
        except BaseException:
            for hs in started:
                try:
                    hs.stop(grace=5.0)
                except HomeserverError:
                    pass
            raise
        finally:
            self.save()

    def stop(self, grace: float = 10.0) -> None:
        """Stop every server, then the lab's PostgreSQL. Tries them all even if one fails."""
        errors: list[HomeserverError] = []
        for hs in self.servers:
            try:
                hs.stop(grace)
            except HomeserverError as e:
                errors.append(e)
        if self.postgres is not None:
            try:
                self.postgres.stop(grace)
            except HomeserverError as e:
                errors.append(e)
        self.save()
        if errors:
            raise errors[0]

    def stop_server(self, i: int, grace: float = 10.0) -> None:
        self.servers[i].stop(grace)
        self.save()

    def start_server(self, i: int, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if self.postgres is not None:
            self.postgres.start(timeout=timeout)
        try:
            self.servers[i].launch(timeout=timeout)
        finally:
            self.save()

    def status(self) -> list[ServerStatus]:
        return [hs.status() for hs in self.servers]

    def create_user(
        self, i: int, localpart: str, password: str | None = None, *, admin: bool = False
    ) -> RegisteredUser:
        return self.servers[i].create_user(localpart, password, admin=admin)

    def destroy_database(self) -> None:
        """Stop everything and delete the lab's PostgreSQL cluster (if any)."""
        self.stop()
        if self.postgres is not None:
            self.postgres.destroy()

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Lab({str(self.path)!r}, {[hs.server_name for hs in self.servers]})"
