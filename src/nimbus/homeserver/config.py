"""Synapse configuration as typed data, rendered to YAML.

Owns: the layout of one server's data folder (`ServerPaths`), its secrets (`Secrets`, generated with
`secrets`, one file each, mode 0600, read by Synapse through the `*_path` options so that
homeserver.yaml itself holds no secret), the two profiles (`dev`, `secure`) and the rendering of
`HomeserverConfig` to homeserver.yaml plus a logging config.

Rules: never `--generate-config`; the signing key is created by Synapse (we only give its path);
listeners bind 127.0.0.1 unless told otherwise; `trusted_key_servers: []` always (the generated
default points at a public server).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nimbus.homeserver.errors import ConfigError

Profile = Literal["dev", "secure"]
PROFILES: tuple[Profile, ...] = ("dev", "secure")

# Every rate limiter Synapse 1.163 knows (synapse/config/ratelimiting.py), relaxed for tests.
_RELAXED = {"per_second": 10000, "burst_count": 100000}
RELAXED_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _RELAXED,
    "rc_registration": _RELAXED,
    "rc_registration_token_validity": _RELAXED,
    "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
    "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
    "rc_joins_per_room": _RELAXED,
    "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
    "rc_key_requests": _RELAXED,
    "rc_3pid_validation": _RELAXED,
    "rc_admin_redaction": _RELAXED,
    "rc_third_party_invite": _RELAXED,
    "rc_media_create": _RELAXED,
    "rc_presence": {"per_user": _RELAXED},
    "rc_delayed_event_mgmt": _RELAXED,
    "rc_room_creation": _RELAXED,
    "rc_reports": _RELAXED,
    "rc_user_directory": _RELAXED,
    "rc_profile": _RELAXED,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 10000,
        "sleep_delay": 1,
        "reject_limit": 100000,
        "concurrent": 1000,
    },
}

# Fast catch-up after a peer's outage (field notes: missed events arrive ~1 s after it returns).
FAST_FEDERATION_RETRY: dict[str, Any] = {
    "max_long_retry_delay": "1s",
    "max_short_retry_delay": 500,
    "destination_min_retry_interval": "1s",
    "destination_max_retry_interval": "2s",
}

LOOPBACK_RANGES = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class ServerPaths:
    """Where everything of one server lives inside its data folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "homeserver.yaml"

    @property
    def log_config(self) -> Path:
        return self.root / "log_config.yaml"

    @property
    def log(self) -> Path:
        """Synapse's own log (written through log_config)."""
        return self.root / "homeserver.log"

    @property
    def output(self) -> Path:
        """The process's stdout and stderr (config errors and tracebacks land here)."""
        return self.root / "synapse.out"

    @property
    def pid_file(self) -> Path:
        return self.root / "synapse.pid"

    @property
    def state(self) -> Path:
        """The kit's own record of this server (ports, names, database), JSON."""
        return self.root / "server.json"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def signing_key(self) -> Path:
        return self.keys / "signing.key"

    @property
    def media_store(self) -> Path:
        return self.root / "media_store"

    @property
    def sqlite_db(self) -> Path:
        return self.root / "homeserver.db"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    def secret(self, name: str) -> Path:
        return self.keys / name


_SECRET_NAMES = ("registration_shared_secret", "macaroon_secret_key", "form_secret")


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (0600), replacing any older content."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Secrets:
    """The three server secrets. `repr` hides them so they never reach a log or traceback."""

    registration_shared_secret: str = field(repr=False)
    macaroon_secret_key: str = field(repr=False)
    form_secret: str = field(repr=False)

    @classmethod
    def load_or_create(cls, paths: ServerPaths) -> Secrets:
        """Read the secrets from `paths.keys`, generating (and storing, 0600) any that are missing."""
        paths.keys.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.keys, 0o700)
        values: dict[str, str] = {}
        for name in _SECRET_NAMES:
            path = paths.secret(name)
            if path.exists():
                values[name] = path.read_text(encoding="utf-8").strip()
            else:
                values[name] = secrets.token_urlsafe(32)
                _write_private(path, values[name] + "\n")
        return cls(**values)

    @classmethod
    def load(cls, paths: ServerPaths) -> Secrets:
        try:
            return cls(**{n: paths.secret(n).read_text(encoding="utf-8").strip() for n in _SECRET_NAMES})
        except OSError as e:
            raise ConfigError(f"cannot read the server secrets in {paths.keys}: {e.strerror}") from None


@dataclass(frozen=True)
class Listener:
    """One HTTP listener (Synapse `listeners` item)."""

    port: int
    resources: tuple[str, ...] = ("client",)
    tls: bool = False
    bind_addresses: tuple[str, ...] = ("127.0.0.1",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "type": "http",
            "tls": self.tls,
            "x_forwarded": False,
            "bind_addresses": list(self.bind_addresses),
            "resources": [{"names": list(self.resources), "compress": False}],
        }


@dataclass(frozen=True)
class SqliteDatabase:
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"name": "sqlite3", "args": {"database": str(self.path)}}


@dataclass(frozen=True)
class PostgresDatabase:
    """A database on a (local) PostgreSQL server; created with C collation (Synapse requires it)."""

    database: str
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "psycopg2",
            "args": {
                "user": self.user,
                "host": self.host,
                "port": self.port,
                "database": self.database,
                "cp_min": 1,
                "cp_max": 5,
            },
        }


Database = SqliteDatabase | PostgresDatabase


@dataclass(frozen=True)
class FederationTLS:
    """A TLS federation listener and the private CA that peers' certificates chain to."""

    port: int
    certificate: Path
    private_key: Path
    ca_certificates: tuple[Path, ...]


@dataclass(frozen=True)
class HomeserverConfig:
    """Everything the kit decides about one Synapse; `to_dict()` is the homeserver.yaml content.

    `federation_whitelist`: None leaves federation open (to whoever the network reaches); a tuple is
    the explicit allowed set, `()` meaning no federation at all. `extra` is laid over the result
    (top-level keys replace).
    """

    server_name: str
    data_dir: Path
    client_port: int
    profile: Profile = "dev"
    database: Database | None = None
    federation: FederationTLS | None = None
    federation_whitelist: tuple[str, ...] | None = None
    fast_federation_retry: bool = False
    bind_address: str = "127.0.0.1"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r} (choose from {', '.join(PROFILES)})")

    @property
    def paths(self) -> ServerPaths:
        return ServerPaths(self.data_dir)

    @property
    def client_url(self) -> str:
        wildcard = self.bind_address in ("0.0.0.0", "::")  # noqa: S104 (only compared, never bound)
        host = "127.0.0.1" if wildcard else self.bind_address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.client_port}"

    def listeners(self) -> list[Listener]:
        binds = (self.bind_address,)
        out = [Listener(self.client_port, ("client",), bind_addresses=binds)]
        if self.federation is not None:
            out.append(Listener(self.federation.port, ("federation",), tls=True, bind_addresses=binds))
        return out

    def to_dict(self) -> dict[str, Any]:
        p = self.paths
        db = self.database if self.database is not None else SqliteDatabase(p.sqlite_db)
        cfg: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.client_url + "/",
            "pid_file": str(p.root / "synapse.internal.pid"),
            "listeners": [li.to_dict() for li in self.listeners()],
            "database": db.to_dict(),
            "log_config": str(p.log_config),
            "media_store_path": str(p.media_store),
            "signing_key_path": str(p.signing_key),
            "registration_shared_secret_path": str(p.secret("registration_shared_secret")),
            "macaroon_secret_key_path": str(p.secret("macaroon_secret_key")),
            "form_secret_path": str(p.secret("form_secret")),
            "report_stats": False,
            "enable_metrics": False,
            "url_preview_enabled": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
        }
        if self.federation is not None:
            cfg["tls_certificate_path"] = str(self.federation.certificate)
            cfg["tls_private_key_path"] = str(self.federation.private_key)
            cfg["federation_custom_ca_list"] = [str(c) for c in self.federation.ca_certificates]
            cfg["ip_range_whitelist"] = list(LOOPBACK_RANGES)
        if self.federation_whitelist is not None:
            cfg["federation_domain_whitelist"] = list(self.federation_whitelist)
        if self.fast_federation_retry:
            cfg["federation"] = dict(FAST_FEDERATION_RETRY)
        cfg.update(_profile_settings(self.profile))
        cfg.update(self.extra)
        return cfg

    def render(self) -> str:
        header = (
            f"# Synapse config for {self.server_name}, written by nimbus.homeserver "
            f"(profile {self.profile}). Secrets are in {self.paths.keys}, not here.\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def write(self) -> Path:
        """Create the data folder, its secrets and log config, and write homeserver.yaml (0600)."""
        p = self.paths
        p.root.mkdir(parents=True, exist_ok=True)
        os.chmod(p.root, 0o700)  # the database holds password hashes and access tokens
        p.media_store.mkdir(exist_ok=True)
        Secrets.load_or_create(p)
        _write_private(p.log_config, render_log_config(p.log))
        _write_private(p.config, self.render())
        return p.config


def _profile_settings(profile: Profile) -> dict[str, Any]:
    if profile == "dev":
        # Tests and the demo, on loopback only: fast hashing, no rate limits, open registration
        # (so client code can exercise /register, spec: Client-Server API "Account registration").
        return {
            "bcrypt_rounds": 4,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "presence": {"enabled": True},
            **RELAXED_RATE_LIMITS,
        }
    # secure: what a self-hoster wants. Default rate limits (no rc_* key), default bcrypt rounds.
    return {
        "enable_registration": False,
        "encryption_enabled_by_default_for_room_type": "all",
        "presence": {"enabled": False},
        "require_auth_for_profile_requests": True,
        "limit_profile_requests_to_users_who_share_rooms": True,
        "include_profile_data_on_invite": False,
        "allow_public_rooms_without_auth": False,
        "allow_public_rooms_over_federation": False,
    }


def render_log_config(log_file: Path, level: str = "INFO") -> str:
    """A Python logging config for Synapse writing to `log_file` (rotated at 10 MB, 3 kept)."""
    cfg = {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
            }
        },
        "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "formatter": "precise",
                "filters": ["context"],
                "filename": str(log_file),
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 3,
                "encoding": "utf8",
            }
        },
        "loggers": {
            "synapse.storage.SQL": {"level": "WARNING"},
            "twisted": {"level": "WARNING"},
        },
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def config_to_record(cfg: HomeserverConfig) -> dict[str, Any]:
    """A JSON-able record of `cfg` (what the kit saves in server.json to rebuild it later)."""
    db: dict[str, Any] | None = None
    if isinstance(cfg.database, SqliteDatabase):
        db = {"kind": "sqlite", "path": str(cfg.database.path)}
    elif isinstance(cfg.database, PostgresDatabase):
        d = cfg.database
        db = {"kind": "postgres", "database": d.database, "host": d.host, "port": d.port, "user": d.user}
    fed: dict[str, Any] | None = None
    if cfg.federation is not None:
        f = cfg.federation
        fed = {
            "port": f.port,
            "certificate": str(f.certificate),
            "private_key": str(f.private_key),
            "ca_certificates": [str(c) for c in f.ca_certificates],
        }
    wl = list(cfg.federation_whitelist) if cfg.federation_whitelist is not None else None
    return {
        "server_name": cfg.server_name,
        "data_dir": str(cfg.data_dir),
        "client_port": cfg.client_port,
        "profile": cfg.profile,
        "database": db,
        "federation": fed,
        "federation_whitelist": wl,
        "fast_federation_retry": cfg.fast_federation_retry,
        "bind_address": cfg.bind_address,
        "extra": dict(cfg.extra),
    }


def config_from_record(rec: Mapping[str, Any]) -> HomeserverConfig:
    """Inverse of `config_to_record`; raises ConfigError on a malformed record."""
    try:
        db_rec = rec.get("database")
        database: Database | None = None
        if db_rec is not None and db_rec["kind"] == "sqlite":
            database = SqliteDatabase(Path(db_rec["path"]))
        elif db_rec is not None:
            database = PostgresDatabase(
                db_rec["database"], db_rec["host"], int(db_rec["port"]), db_rec["user"]
            )
        fed_rec = rec.get("federation")
        fed = None
        if fed_rec is not None:
            fed = FederationTLS(
                int(fed_rec["port"]),
                Path(fed_rec["certificate"]),
                Path(fed_rec["private_key"]),
                tuple(Path(c) for c in fed_rec["ca_certificates"]),
            )
        wl = rec.get("federation_whitelist")
        return HomeserverConfig(
            server_name=str(rec["server_name"]),
            data_dir=Path(rec["data_dir"]),
            client_port=int(rec["client_port"]),
            profile=rec["profile"],
            database=database,
            federation=fed,
            federation_whitelist=tuple(wl) if wl is not None else None,
            fast_federation_retry=bool(rec.get("fast_federation_retry", False)),
            bind_address=str(rec.get("bind_address", "127.0.0.1")),
            extra=dict(rec.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"malformed server record: {e!r}") from None
