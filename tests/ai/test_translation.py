"""Translation on the real Apertium engine (set-up installs `apertium apertium-eng-spa apertium-eng-cat
apertium-spa-cat`), the per-event cache encrypted at rest, and the CLI's preview and room output.

Nothing is skipped: a missing engine fails these tests (it is part of the set-up)."""

from __future__ import annotations

import argparse
import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from nimbus.ai import translation
from nimbus.ai.interfaces import CapabilityMissing, LanguageGuess, Translator
from nimbus.ai.translation import ApertiumTranslator, MessageTranslator, package_for, parse_mode
from nimbus.apps.cli import ai_translate
from nimbus.apps.cli.output import Printer
from nimbus.store import MemoryStore, SqliteStore

from .conftest import CountingRun, OpenStore, raw_store_bytes

CANARY = "Zorbleflux7q"  # unknown to Apertium: passed through `-u` unchanged


@pytest.fixture(scope="module")
def apertium() -> ApertiumTranslator:
    return ApertiumTranslator()


def test_installed_pairs_are_discovered(apertium: ApertiumTranslator) -> None:
    pairs = apertium.pairs()
    for pair in [("en", "es"), ("es", "en"), ("en", "ca"), ("ca", "en"), ("es", "ca"), ("ca", "es")]:
        assert pair in pairs
    assert apertium.modes()[("en", "es")] == "eng-spa"
    assert apertium.modes()[("es", "en")] == "spa-eng"  # the plain mode, not "spa-eng_US"
    assert isinstance(apertium, Translator)


def test_pairs_come_from_the_modes_folder(tmp_path: Path) -> None:
    for name in ["eng-spa", "spa-eng_US", "spa-eng", "en-gl", "fra-cat", "eng-spa-morph", "spa-eng-debug"]:
        (tmp_path / f"{name}.mode").write_text("")
    (tmp_path / "README").write_text("")
    engine = ApertiumTranslator(modes_dir=tmp_path)
    assert engine.pairs() == [("en", "es"), ("en", "gl"), ("es", "en"), ("fr", "ca")]
    assert engine.modes()[("es", "en")] == "spa-eng"
    (tmp_path / "spa-eng.mode").unlink()
    assert ApertiumTranslator(modes_dir=tmp_path).modes()[("es", "en")] == "spa-eng_US"  # variant if alone


def test_mode_names_and_packages() -> None:
    assert parse_mode("eng-cat_valencia") == ("en", "ca", "valencia")
    assert parse_mode("en-gl") == ("en", "gl", "")
    assert parse_mode("eng-spa-morph") is None
    assert package_for("en", "es") == package_for("es", "en") == "apertium-eng-spa"
    assert package_for("gl", "en") == "apertium-en-gl"
    assert package_for("fr", "ca") == package_for("ca", "fr") == "apertium-fra-cat"
    assert package_for("es", "ca") == "apertium-spa-cat"


def test_missing_pair_names_the_apt_package(tmp_path: Path) -> None:
    (tmp_path / "eng-spa.mode").write_text("")
    engine = ApertiumTranslator(modes_dir=tmp_path)
    with pytest.raises(CapabilityMissing, match=r"apt-get install apertium apertium-en-gl"):
        engine.translate("Good morning", "en", "gl")
    with pytest.raises(CapabilityMissing, match=r"apertium-fra-cat"):
        engine.translate("Bonjour", "ca", "fr")


def test_missing_engine_names_the_apt_packages(tmp_path: Path) -> None:
    (tmp_path / "eng-spa.mode").write_text("")
    engine = ApertiumTranslator(executable=None, modes_dir=tmp_path)
    engine.executable = None
    import shutil

    real_which = shutil.which
    try:
        translation.shutil.which = lambda *_a, **_k: None  # type: ignore[assignment]
        with pytest.raises(CapabilityMissing, match=r"apt-get install apertium apertium-eng-spa"):
            engine.translate("hello", "en", "es")
    finally:
        translation.shutil.which = real_which


def test_round_trip_english_spanish(apertium: ApertiumTranslator) -> None:
    es = apertium.translate("I will call you tomorrow morning.", "en", "es")
    assert es == "Te llamaré mañana por la mañana."
    en = apertium.translate("¿Dónde estás? Te espero en el restaurante.", "es", "en")
    assert en == "Where are you? I expect you in the restaurant."  # the chat layer mends the word order
    raw = ApertiumTranslator(chat_aware=False).translate("¿Dónde estás?", "es", "en")
    assert raw.startswith("Where you are?")  # Apertium's own output
    assert apertium.translate("The cat is black.", "en", "es") == "El gato es negro."
    back = apertium.translate(apertium.translate("The house is big.", "en", "es"), "es", "en")
    assert back == "The house is big."


def test_unknown_words_pass_through_and_lines_are_kept(apertium: ApertiumTranslator) -> None:
    out = apertium.translate(f"Hello {CANARY}\n\nThe cat is black.", "en", "es")
    assert CANARY in out and "*" not in out
    assert out.split("\n\n") == [f"Hola {CANARY}", "El gato es negro."]


def test_many_texts_in_one_engine_run(apertium: ApertiumTranslator, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CountingRun()
    monkeypatch.setattr(translation.subprocess, "run", counter)
    texts = ["The cat is black.", "I am hungry.\n\nVery hungry.", "Good morning"]
    assert apertium.translate_many(texts, "en", "es") == [
        "El gato es negro.",
        "Tengo hambre.\n\nMuy famélico.",
        "Buenos días",
    ]
    assert counter.calls == 1


async def test_detects_translates_and_caches(
    ai_store: MemoryStore | SqliteStore, apertium: ApertiumTranslator, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = MessageTranslator(ai_store, apertium)
    counter = CountingRun()
    monkeypatch.setattr(translation.subprocess, "run", counter)
    first = await service.translate_message("$e1", "¿Dónde estás? Te espero en el restaurante.", "en")
    assert (first.source, first.status, first.cached) == ("es", "translated", False)
    assert first.text is not None and first.text == "Where are you? I expect you in the restaurant."
    assert counter.calls == 1
    again = await service.translate_message("$e1", "¿Dónde estás? Te espero en el restaurante.", "en")
    assert again.cached and again.text == first.text and counter.calls == 1  # no second engine run
    reopened = MessageTranslator(ai_store, apertium)
    assert (await reopened.translate_message("$e1", "ignored", "en")).text == first.text
    assert counter.calls == 1
    other = await service.translate_message("$e1", "¿Dónde estás? Te espero en el restaurante.", "ca")
    assert other.source == "es" and other.target == "ca" and counter.calls == 2  # key = (event, target)
    same = await service.translate_message("$e2", "See you at the station tomorrow", "en")
    assert (same.status, same.text) == ("same-language", None)
    unsure = await service.translate_message("$e3", "ok 👍", "es")
    assert (unsure.status, unsure.source) == ("unknown-language", None)
    await service.forget()
    assert await service.cached("$e1", "en") is None


async def test_short_messages_use_the_engines_languages(apertium: ApertiumTranslator) -> None:
    service = MessageTranslator(None, apertium)
    assert service.detect("Nos vemos mañana") == "es"
    assert service.detect("Bon dia a tothom, com esteu?") == "ca"
    assert service.detect("Wo bist du heute Abend, mein Freund?") == "de"  # not forced into a pair


async def test_given_source_and_missing_pair(apertium: ApertiumTranslator) -> None:
    class NoDetector:
        name = "none"

        def identify(self, text: str) -> LanguageGuess | None:
            raise AssertionError("detection must not run when the source is given")

    service = MessageTranslator(None, apertium, NoDetector())
    out = await service.translate_message("$x", "The cat is black.", "es", source="en")
    assert out.text == "El gato es negro."
    with pytest.raises(CapabilityMissing, match="apertium-eng-deu"):
        await service.translate_message("$y", "The cat is black.", "de", source="en")


async def test_batch_caches_and_marks_missing_pairs(
    ai_store: MemoryStore | SqliteStore, apertium: ApertiumTranslator, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = MessageTranslator(ai_store, apertium)
    counter = CountingRun()
    monkeypatch.setattr(translation.subprocess, "run", counter)
    messages = [
        ("$1", "El gato es negro y la casa es grande."),
        ("$2", "The weather is nice today"),
        ("$3", "Wo bist du heute Abend, mein Freund?"),
        ("$4", "Tengo hambre, ¿vamos a comer?"),
    ]
    out = await service.translate_messages(messages, "en")
    assert [t.status for t in out] == ["translated", "same-language", "no-engine", "translated"]
    assert out[0].text == "The cat is black and the house is big."
    assert out[2].source == "de"
    assert counter.calls == 1  # both Spanish messages in one engine run
    again = await service.translate_messages(messages, "en")
    assert [t.text for t in again] == [t.text for t in out]
    assert [t.cached for t in again] == [True, True, False, True]
    assert counter.calls == 1


async def test_cache_is_ciphertext_on_disk(
    tmp_path: Path, open_sqlite: OpenStore, apertium: ApertiumTranslator
) -> None:
    store = await open_sqlite(tmp_path / "t.db")
    service = MessageTranslator(store, apertium)
    result = await service.translate_message(f"$ev-{CANARY}", f"El gato de {CANARY} es negro.", "en")
    assert result.text == f"The cat of {CANARY} is black."
    await store.close()
    raw = raw_store_bytes(tmp_path, "t.db")
    assert CANARY.encode() not in raw and b"cat" not in raw
    reopened = await open_sqlite(tmp_path / "t.db")
    cached = await MessageTranslator(reopened, apertium).cached(f"$ev-{CANARY}", "en")
    assert cached is not None and cached.text == result.text


async def test_runs_with_sockets_blocked(
    monkeypatch: pytest.MonkeyPatch, apertium: ApertiumTranslator
) -> None:
    attempts: list[str] = []

    def refuse(name: str) -> object:
        def blocked(*args: object, **kwargs: object) -> object:
            attempts.append(name)
            raise OSError(f"network access attempted by translation code: {name}")

        return blocked

    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse(name))
    service = MessageTranslator(None, ApertiumTranslator())  # cold: pairs, langid model, engine
    out = await service.translate_message("$s", "Nos vemos en el aeropuerto, la casa es grande.", "en")
    assert out.status == "translated" and out.text and "airport" in out.text
    assert attempts == []


def _args(**kw: Any) -> argparse.Namespace:
    base = {"room": None, "text": None, "to": "es", "source": None, "limit": 20, "json": True}
    base.update(kw)
    return argparse.Namespace(**base)


async def test_cli_preview_prints_the_translation() -> None:
    buf, err = io.StringIO(), io.StringIO()
    code = await ai_translate.translate(
        _args(text="I will call you tomorrow morning."), Printer(True, buf, err)
    )
    assert code == 0
    line = json.loads(buf.getvalue())
    assert line["type"] == "translation_preview"
    assert (line["source"], line["target"], line["translation"]) == (
        "en",
        "es",
        "Te llamaré mañana por la mañana.",
    )
    buf = io.StringIO()
    await ai_translate.translate(_args(text="The cat is black.", json=False), Printer(False, buf, err))
    assert buf.getvalue() == "El gato es negro.\n"
