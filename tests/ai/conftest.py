"""Fixtures for the on-device AI tests: stores of both backends and the shared embedder.

Tests that need a backend package skip (with the pip line) when it is not installed; the store and
registry tests run everywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nimbus.store import MemoryStore, SqliteStore
from nimbus.store.encryption import KdfParams

FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
PASSPHRASE = "correct horse battery staple"

OpenStore = Callable[[Path], Awaitable[SqliteStore]]


@pytest.fixture
async def open_sqlite() -> AsyncIterator[OpenStore]:
    """Open (or reopen) an encrypted SQLite store at a path; all are closed at the end."""
    opened: list[SqliteStore] = []

    async def open_(path: Path) -> SqliteStore:
        store = await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture(params=["memory-encrypted", "sqlite-encrypted"])
async def ai_store(
    request: pytest.FixtureRequest, tmp_path: Path, open_sqlite: OpenStore
) -> MemoryStore | SqliteStore:
    if request.param.startswith("memory"):
        return MemoryStore(passphrase=PASSPHRASE, kdf=FAST_KDF)
    return await open_sqlite(tmp_path / "ai.db")


def raw_store_bytes(folder: Path, prefix: str) -> bytes:
    """The raw bytes of a SQLite store and its -wal/-shm files (what an attacker with the disk reads)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith(prefix))


class CountingRun:
    """Wraps subprocess.run in the translation module, counting engine runs."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = subprocess.run

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._real(*args, **kwargs)
