"""A profile: the per-account data directory, and the lock that lets one process at a time write it.

Layout of a profile directory (mode 0700):
  store.db (+ -wal/-shm)   everything the store keeps (see nimbus.store)
  lock                     held with flock(2) by the one process that may write the profile

The default location is $NIMBUS_HOME, else $XDG_DATA_HOME/nimbus, else ~/.local/share/nimbus, with one
sub-directory per profile name ("default" unless told). The lock is advisory and released by the
kernel when the process dies, so a SIGKILLed process never leaves a profile locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from nimbus.types.errors import NimbusError


class ProfileLocked(NimbusError):
    """Another process holds the profile's write lock."""


def default_profiles_root() -> Path:
    env = os.environ.get("NIMBUS_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "nimbus"


@dataclass
class Profile:
    """An account's data directory. `acquire()` takes the write lock; `release()` gives it back."""

    path: Path
    _lock_fd: int | None = field(default=None, repr=False)

    @classmethod
    def named(cls, name: str = "default") -> Profile:
        return cls(default_profiles_root() / name)

    @property
    def store_path(self) -> Path:
        return self.path / "store.db"

    def exists(self) -> bool:
        return self.store_path.exists()

    def acquire(self) -> None:
        """Create the directory (0700) and take the write lock, or raise ProfileLocked at once."""
        if self._lock_fd is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ProfileLocked(
                f"profile {self.path} is in use by another nimbus process (pid {holder}); "
                "wait for it to finish or use another --profile"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._lock_fd, 0)
        os.close(self._lock_fd)  # closing drops the flock
        self._lock_fd = None

    def __enter__(self) -> Profile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
