"""Fixtures: `store` and `make_store` run each contract test once per backend (memory, sqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from nimbus.store import MemoryStore, SqliteStore, Store, ValueCodec

MakeStore = Callable[[ValueCodec | None], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory for fresh stores of one backend; every store it made is closed afterwards."""
    opened: list[Store] = []
    counter = iter(range(1_000))

    async def make(codec: ValueCodec | None = None) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(codec)
        else:
            store = await SqliteStore.open(tmp_path / f"store{next(counter)}.db", codec)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store(None)
