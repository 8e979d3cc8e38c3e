"""The auto-translate helpers of nimbus.ai.translation: the per-room setting (`AutoTranslate`,
`auto_translate`/`set_auto_translate`) stored encrypted, the user's `default_language` from the
locale, and `MessageTranslator`'s cache / forget / skip rules, on the real Apertium engine
(set-up installs apertium + apertium-eng-spa)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nimbus.ai.translation import (
    AUTO_KIND,
    KIND,
    ApertiumTranslator,
    AutoTranslate,
    MessageTranslator,
    auto_translate,
    default_language,
    set_auto_translate,
)
from nimbus.store import MemoryStore, SqliteStore

from .conftest import OpenStore, raw_store_bytes

ROOM = "!lisbon:example.org"
OTHER = "!other:example.org"


async def test_setting_is_none_until_chosen_then_round_trips_per_room(
    ai_store: MemoryStore | SqliteStore,
) -> None:
    assert await auto_translate(ai_store, ROOM) is None
    await set_auto_translate(ai_store, ROOM, AutoTranslate(True, "es"))
    await set_auto_translate(ai_store, OTHER, AutoTranslate(False))
    assert await auto_translate(ai_store, ROOM) == AutoTranslate(True, "es")
    assert await auto_translate(ai_store, OTHER) == AutoTranslate(False, None)
    await set_auto_translate(ai_store, ROOM, AutoTranslate(True))  # back to the user's default language
    assert await auto_translate(ai_store, ROOM) == AutoTranslate(True, None)
    assert await auto_translate(ai_store, OTHER) == AutoTranslate(False, None)  # rooms are independent


async def test_unreadable_setting_reads_as_never_set(ai_store: MemoryStore | SqliteStore) -> None:
    for raw in (b"not json", b"[]", b'{"to": "es"}', b"\xff\xfe"):
        await ai_store.ai_put(AUTO_KIND, ROOM, raw)
        assert await auto_translate(ai_store, ROOM) is None, raw


async def test_setting_is_encrypted_at_rest(tmp_path: Path, open_sqlite: OpenStore) -> None:
    room = "!zanzibarcanary:example.org"
    store = await open_sqlite(tmp_path / "acct.db")
    await set_auto_translate(store, room, AutoTranslate(True, "es"))
    await store.close()
    raw = raw_store_bytes(tmp_path, "acct.db")
    assert b"zanzibarcanary" not in raw and b'"on"' not in raw
    reopened = await open_sqlite(tmp_path / "acct.db")
    assert await auto_translate(reopened, room) == AutoTranslate(True, "es")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LC_ALL": "de_DE.UTF-8", "LANG": "fr_FR.UTF-8"}, "de"),  # LC_ALL wins
        ({"LC_MESSAGES": "pt_BR.UTF-8", "LANG": "fr_FR.UTF-8"}, "pt"),
        ({"LANG": "es_ES.UTF-8"}, "es"),
        ({"LANG": "ast_ES.UTF-8"}, "ast"),  # three-letter codes are kept
        ({"LC_ALL": "C.UTF-8", "LANG": "POSIX"}, "en"),  # no language in the locale
        ({"LC_ALL": "C", "LANG": "nl_NL"}, "nl"),
        ({}, "en"),
    ],
)
def test_default_language_from_the_locale(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_language() == expected


async def test_skip_rules_same_language_and_unknown_are_not_engine_runs(
    ai_store: MemoryStore | SqliteStore,
) -> None:
    service = MessageTranslator(ai_store, ApertiumTranslator())
    same = await service.translate_message("$en", "I will call you tomorrow morning.", "en")
    assert (same.source, same.status, same.text) == ("en", "same-language", None)
    unknown = await service.translate_message("$emoji", "👍👍 :)", "es")
    assert (unknown.source, unknown.status, unknown.text) == (None, "unknown-language", None)
    given = await service.translate_message("$given", "whatever text", "es", source="es")
    assert given.status == "same-language"  # a given source is trusted, no detection
    # Skips are cached like translations: the event's answer does not change.
    assert (await service.cached("$en", "en")) is not None and (await service.cached("$en", "en")).cached  # type: ignore[union-attr]


async def test_drafts_are_translated_but_never_cached(ai_store: MemoryStore | SqliteStore) -> None:
    service = MessageTranslator(ai_store, ApertiumTranslator())
    draft = await service.translate_text("The cat is black.", "es")
    assert (draft.event_id, draft.source, draft.status, draft.text) == (
        None,
        "en",
        "translated",
        "El gato es negro.",
    )
    assert await ai_store.ai_list(KIND) == []


async def test_forget_drops_every_cached_translation_but_not_room_settings(
    ai_store: MemoryStore | SqliteStore,
) -> None:
    service = MessageTranslator(ai_store, ApertiumTranslator())
    await set_auto_translate(ai_store, ROOM, AutoTranslate(True, "es"))
    out = await service.translate_messages([("$a", "The cat is black."), ("$b", "The house is big.")], "es")
    assert [t.status for t in out] == ["translated", "translated"]
    assert sorted(json.loads(item)[0] for item, _ in await ai_store.ai_list(KIND)) == ["$a", "$b"]
    await service.forget()
    assert await service.cached("$a", "es") is None and await ai_store.ai_list(KIND) == []
    assert await auto_translate(ai_store, ROOM) == AutoTranslate(True, "es")


async def test_a_missing_pair_is_not_cached_and_an_unreadable_entry_is_redone(
    ai_store: MemoryStore | SqliteStore,
) -> None:
    service = MessageTranslator(ai_store, ApertiumTranslator())
    out = await service.translate_messages([("$de", "The cat is black.")], "de")  # en->de: no pair installed
    assert (out[0].status, out[0].text) == ("no-engine", None)
    assert await service.cached("$de", "de") is None  # installed later, it will be translated then
    await ai_store.ai_put(KIND, json.dumps(["$bad", "es"]), b"{broken")
    assert await service.cached("$bad", "es") is None
    redone = await service.translate_message("$bad", "The cat is black.", "es", source="en")
    assert (redone.text, redone.cached) == ("El gato es negro.", False)
    assert (await service.cached("$bad", "es")) is not None
