"""Language identification on short chat messages (bench/data/langid_chat.tsv, the tuning set, and
bench/data/langid_heldout.jsonl, never tuned on; both written for nimbus).

Thresholds, from the lite model + word/letter evidence measured on these sets (11 languages): tuning
set 98.5 % right, 0.7 % wrong (the rest abstain: None); held-out 94.8 % right, 2.4 % wrong (the lite
model's own strategy: 94.5 % / 88.5 %). The tests leave ~2 points of slack for model/package updates.
"""

from __future__ import annotations

import json
from pathlib import Path

from nimbus.ai.interfaces import LanguageIdentifier
from nimbus.ai.langid import FastTextLanguageIdentifier, clean, evidence

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "langid_chat.tsv"
HELDOUT = DATA.with_name("langid_heldout.jsonl")


def load_heldout() -> list[tuple[str, str]]:
    rows = []
    for line in HELDOUT.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if "text" in item:
            rows.append((item["lang"] or "-", item["text"]))
    return rows


def load() -> list[tuple[str, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((label, text))
    return rows


def score(
    ident: FastTextLanguageIdentifier, rows: list[tuple[str, str]] | None = None
) -> tuple[float, float, int]:
    labelled = [(lab, t) for lab, t in (load() if rows is None else rows) if lab != "-"]
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
    assert accuracy >= 0.965
    assert wrong <= 0.015


def test_accuracy_on_the_held_out_set() -> None:
    rows = load_heldout()
    assert len([r for r in rows if r[0] != "-"]) >= 300
    accuracy, wrong, languages = score(FastTextLanguageIdentifier(), rows)
    assert languages >= 8
    assert accuracy >= 0.93
    assert wrong <= 0.035


def test_restricting_to_the_users_languages_never_hurts() -> None:
    langs = {lab for lab, _ in load() if lab != "-"}
    open_acc, open_wrong, _ = score(FastTextLanguageIdentifier())
    accuracy, wrong, _ = score(FastTextLanguageIdentifier(languages=langs))
    assert accuracy >= max(0.965, open_acc)
    assert wrong <= open_wrong
    ident = FastTextLanguageIdentifier(languages={"es", "en"})
    guess = ident.identify("obrigado, até amanhã então")  # Portuguese: only es/en may be answered
    assert guess is None or guess.language == "es"


def test_word_and_letter_evidence_decide_short_close_languages() -> None:
    ident = FastTextLanguageIdentifier()
    assert evidence("ñandú")["es"] > 0 > evidence("ñandú")["pt"]  # ñ: Spanish, not Portuguese
    assert evidence("jag är hemma")["sv"] > evidence("jag är hemma").get("de", 0.0)
    for text, lang in [("mañana nos vemos", "es"), ("amanhã a gente se vê", "pt"), ("tot morgen dan", "nl")]:
        guess = ident.identify(text)
        assert guess is not None and guess.language == lang, text


def test_a_prior_for_the_conversations_language_breaks_a_tie() -> None:
    ident = FastTextLanguageIdentifier()
    text = "vi ses"  # Swedish or Danish/Norwegian: too close to call alone
    ranked = dict(ident.scores(text))
    with_prior = dict(ident.scores(text, prior="sv"))
    assert with_prior["sv"] > ranked["sv"]
    assert all(with_prior[k] == v for k, v in ranked.items() if k != "sv")


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
