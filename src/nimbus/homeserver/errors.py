"""The homeserver kit's exception hierarchy.

Owns every error the kit raises. Rules: one base class (`HomeserverError`) so callers can catch the
kit as a whole; messages name what was wrong and where to look (a log path, a tail of the log), and
never contain a secret (shared secret, password, access token).
"""

from __future__ import annotations


class HomeserverError(Exception):
    """Base of every error raised by `nimbus.homeserver`."""


class ConfigError(HomeserverError):
    """A server or lab could not be configured (bad option, unreadable state file...)."""


class AlreadyRunning(HomeserverError):
    """A server (or PostgreSQL cluster) is already running from this data folder."""

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


class NotRunning(HomeserverError):
    """An operation needs a running server, and none runs from this data folder."""


class StartFailed(HomeserverError):
    """A process exited, or did not become ready before its deadline. `log_tail` quotes its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        full = f"{message}\n--- last lines of the log ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail


class StopFailed(HomeserverError):
    """A process survived SIGTERM and SIGKILL within their deadlines."""


class PostgresError(HomeserverError):
    """PostgreSQL could not be found, initialised, started or given a database."""


class RegistrationFailed(HomeserverError):
    """The shared-secret admin registration API refused to create a user."""

    def __init__(self, message: str, status: int | None = None, errcode: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
