"""The homeserver kit: real Synapse servers and local federations for tests, the demo and self-hosters.

Stands alone: imports nothing from other nimbus packages (an import-linter contract checks it).
Public API: `Homeserver` (one server in one data folder), `Lab` / `ServerSpec` (a local federation),
`HomeserverConfig` and friends (config as typed data), `RegisteredUser`, the errors, and the CLI's
`add_subcommands` in `nimbus.homeserver.cli`.
"""

from nimbus.homeserver.admin import RegisteredUser, register_user
from nimbus.homeserver.ca import CertificateAuthority, IssuedCertificate
from nimbus.homeserver.config import (
    FederationTLS,
    HomeserverConfig,
    Listener,
    PostgresDatabase,
    Profile,
    Secrets,
    ServerPaths,
    SqliteDatabase,
)
from nimbus.homeserver.errors import (
    AlreadyRunning,
    ConfigError,
    HomeserverError,
    NotRunning,
    PostgresError,
    RegistrationFailed,
    StartFailed,
    StopFailed,
)
from nimbus.homeserver.lab import Lab, ServerSpec
from nimbus.homeserver.postgres import PostgresCluster
from nimbus.homeserver.server import Homeserver, ServerStatus

__all__ = [
    "AlreadyRunning",
    "CertificateAuthority",
    "ConfigError",
    "FederationTLS",
    "Homeserver",
    "HomeserverConfig",
    "HomeserverError",
    "IssuedCertificate",
    "Lab",
    "Listener",
    "NotRunning",
    "PostgresCluster",
    "PostgresDatabase",
    "PostgresError",
    "Profile",
    "RegisteredUser",
    "RegistrationFailed",
    "Secrets",
    "ServerPaths",
    "ServerSpec",
    "ServerStatus",
    "SqliteDatabase",
    "StartFailed",
    "StopFailed",
    "register_user",
]
