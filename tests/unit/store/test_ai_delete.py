"""`AiStore.ai_delete`: one AI object is forgotten (on every backend), the others of its kind and of
other kinds stay, the answer says whether it existed, and a reopened SQLite store no longer has it."""

from __future__ import annotations

from pathlib import Path

from nimbus.store import SqliteStore, Store

from .factories import FAST_KDF, PASSPHRASE


async def test_ai_delete_forgets_one_item_only(store: Store) -> None:
    await store.ai_put_many("search_entry", [("a", b"one"), ("b", b"two")])
    await store.ai_put("translation", "a", b"same item name, other kind")

    assert await store.ai_delete("search_entry", "a") is True

    assert await store.ai_get("search_entry", "a") is None
    assert await store.ai_get("search_entry", "b") == b"two"
    assert await store.ai_get("translation", "a") == b"same item name, other kind"
    assert sorted(await store.ai_list("search_entry")) == [("b", b"two")]


async def test_ai_delete_of_a_missing_item_is_false_and_changes_nothing(store: Store) -> None:
    await store.ai_put("k", "kept", b"v")
    assert await store.ai_delete("k", "never-stored") is False
    assert await store.ai_delete("other-kind", "kept") is False
    assert await store.ai_list("k") == [("kept", b"v")]
    assert await store.ai_delete("k", "kept") is True
    assert await store.ai_delete("k", "kept") is False  # already gone


async def test_ai_delete_is_durable_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ai.db"
    store = await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
    await store.ai_put_many("k", [("gone", b"1"), ("stays", b"2")])
    await store.ai_delete("k", "gone")
    await store.close()
    reopened = await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
    try:
        assert await reopened.ai_list("k") == [("stays", b"2")]
    finally:
        await reopened.close()
