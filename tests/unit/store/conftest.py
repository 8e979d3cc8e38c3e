"""Fixtures: `store` and `make_store` run each contract test once per backend.

Backends: memory (PlainCodec), memory-encrypted (passphrase), sqlite (an explicit PlainCodec) and
sqlite-encrypted (passphrase). Encrypted stores use the weak `FAST_KDF`, passed explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from nimbus.store import MemoryStore, PlainCodec, SqliteStore, Store, ValueCodec

from .factories import FAST_KDF, PASSPHRASE

MakeStore = Callable[[ValueCodec | None], Awaitable[Store]]


@pytest.fixture(params=["memory", "memory-encrypted", "sqlite", "sqlite-encrypted"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory for fresh stores of one backend; every store it made is closed afterwards.

    `make(codec)` with a codec uses that codec (on either backend) instead of the backend's default.
    """
    opened: list[Store] = []
    counter = iter(range(1_000))
    encrypted = request.param.endswith("-encrypted")

    async def make(codec: ValueCodec | None = None) -> Store:
        store: Store
        if request.param.startswith("memory"):
            if codec is None and encrypted:
                store = MemoryStore(passphrase=PASSPHRASE, kdf=FAST_KDF)
            else:
                store = MemoryStore(codec)
        else:
            path = tmp_path / f"store{next(counter)}.db"
            if codec is None and encrypted:
                store = await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
            else:
                store = await SqliteStore.open(path, codec if codec is not None else PlainCodec())
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store(None)
