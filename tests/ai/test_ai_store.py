"""The store's AI objects (`AiStore`: ai_put/ai_put_many/ai_get/ai_list/ai_delete_all) on both backends,
and that their names and values are encrypted at rest (migration 0003_ai.sql)."""

from __future__ import annotations

from pathlib import Path

from nimbus.store import MemoryStore, SqliteStore

from .conftest import OpenStore, raw_store_bytes

CANARY = "canary-7f3a9c-AI-STORE"


async def test_put_get_list_overwrite_and_delete(ai_store: MemoryStore | SqliteStore) -> None:
    assert await ai_store.ai_get("k1", "a") is None
    assert await ai_store.ai_list("k1") == []
    await ai_store.ai_put("k1", "a", b"one")
    await ai_store.ai_put_many("k1", [("b", b"two"), ("c", b"")])
    await ai_store.ai_put("k2", "a", b"other kind")
    assert await ai_store.ai_get("k1", "a") == b"one"
    assert await ai_store.ai_get("k2", "a") == b"other kind"
    assert sorted(await ai_store.ai_list("k1")) == [("a", b"one"), ("b", b"two"), ("c", b"")]
    await ai_store.ai_put("k1", "a", b"replaced")
    assert await ai_store.ai_get("k1", "a") == b"replaced"
    assert len(await ai_store.ai_list("k1")) == 3
    await ai_store.ai_delete_all("k1")
    assert await ai_store.ai_list("k1") == []
    assert await ai_store.ai_get("k2", "a") == b"other kind"
    await ai_store.ai_delete_all()
    assert await ai_store.ai_list("k2") == []


async def test_names_are_kept_exactly(ai_store: MemoryStore | SqliteStore) -> None:
    names = ['["!r:x", "$e"]', "ünïcødé 🐈", "", "a\x00b"]
    await ai_store.ai_put_many("k", [(n, n.encode()) for n in names])
    assert sorted(await ai_store.ai_list("k")) == sorted((n, n.encode()) for n in names)


async def test_ai_objects_persist_and_are_ciphertext_on_disk(tmp_path: Path, open_sqlite: OpenStore) -> None:
    path = tmp_path / "s.db"
    store = await open_sqlite(path)
    await store.ai_put("search_entry", f"name-{CANARY}", f"value-{CANARY}".encode())
    await store.close()
    raw = raw_store_bytes(tmp_path, "s.db")
    assert CANARY.encode() not in raw
    reopened = await open_sqlite(path)
    assert await reopened.ai_list("search_entry") == [(f"name-{CANARY}", f"value-{CANARY}".encode())]
