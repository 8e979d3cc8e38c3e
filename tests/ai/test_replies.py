"""Smart replies and the sensitive-topic filter: intents in four languages, diversity, language,
none for own / sensitive / unsure messages, and the eval set's figures (held-in data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimbus.ai.embeddings import E5Embedder
from nimbus.ai.langid import FastTextLanguageIdentifier
from nimbus.ai.replies import ChatLine, SmartReplies, intents, lines_from
from nimbus.ai.sensitive import SensitiveFilter, term_category
from nimbus.client.room import Message
from nimbus.types.ids import EventId, UserId

ME = "@me:example.org"
THEM = "@them:example.org"
EVAL = Path(__file__).resolve().parents[2] / "bench" / "data" / "smart_reply_eval.tsv"


@pytest.fixture(scope="module")
def replies() -> SmartReplies:
    r = SmartReplies(E5Embedder(), FastTextLanguageIdentifier(languages=["en", "es", "de", "fr"]))
    r.warm()
    return r


def convo(*texts: str, last_from: str = THEM) -> list[ChatLine]:
    lines = [ChatLine(f"$e{i}", ME if i % 2 else THEM, i, t) for i, t in enumerate(texts[:-1])]
    return [*lines, ChatLine("$last", last_from, 99, texts[-1])]


def test_every_intent_has_examples_and_three_replies_in_four_languages() -> None:
    for name, spec in intents().items():
        for lang in ("en", "es", "de", "fr"):
            assert len(spec["examples"][lang]) >= 4, (name, lang)
            assert len(set(spec["replies"][lang])) == 3, (name, lang)


@pytest.mark.parametrize(
    ("text", "intent", "lang"),
    [
        ("thanks so much, you saved my day", "thanks", "en"),
        ("¿alguien se apunta a una pizza después del trabajo?", "invitation", "es"),
        ("sorry, ich habe total vergessen zu antworten", "apology", "de"),
        ("j'ai eu mon permis de conduire !", "congratulation", "fr"),
    ],
)
def test_suggests_replies_of_the_intent_in_the_conversation_language(
    replies: SmartReplies, text: str, intent: str, lang: str
) -> None:
    result = replies.suggest(convo(text), ME)
    assert result.reason == "ok"
    assert result.language == lang
    assert result.suggestions[0].intent == intent
    assert result.texts[0] in intents()[intent]["replies"][lang]
    assert 1 <= len(result.suggestions) <= 3
    assert len(set(result.texts)) == len(result.texts)  # distinct answers, not repeats


def test_yes_no_question_gets_different_answers(replies: SmartReplies) -> None:
    result = replies.suggest(convo("will you be at the office on Thursday?"), ME)
    texts = [t.lower() for t in result.texts]
    assert any(t.startswith("yes") for t in texts) and any(t.startswith("no") for t in texts)


def test_short_message_takes_the_language_of_the_context(replies: SmartReplies) -> None:
    lines = convo("on se retrouve devant la gare à midi", "d'accord, je serai là", "merci !!")
    result = replies.suggest(lines, ME)
    assert result.language == "fr"
    assert result.suggestions[0].intent == "thanks"


def test_none_for_own_last_message(replies: SmartReplies) -> None:
    result = replies.suggest(convo("thanks a lot!", last_from=ME), ME)
    assert result.suggestions == [] and result.reason == "own_message"
    assert replies.suggest([], ME).reason == "no_message"


def test_none_when_unsure(replies: SmartReplies) -> None:
    result = replies.suggest(convo("the compiler emits 4096 bytes of padding per section header"), ME)
    assert result.suggestions == [] and result.reason == "unsure"


@pytest.mark.parametrize(
    "text",
    [
        "my grandfather passed away this morning",
        "mi hermano está en urgencias después de un accidente",
        "ich will einfach nicht mehr leben",
        "on va être expulsés, je ne peux plus payer le loyer",
    ],
)
def test_none_on_sensitive_topics(replies: SmartReplies, text: str) -> None:
    result = replies.suggest(convo(text), ME)
    assert result.suggestions == [] and result.reason == "sensitive"


def test_sensitive_topic_earlier_in_context_still_blocks(replies: SmartReplies) -> None:
    lines = [
        ChatLine("$1", THEM, 1, "the funeral is on Friday"),
        ChatLine("$2", THEM, 2, "thanks for asking"),
    ]
    assert replies.suggest(lines, ME).reason == "sensitive"


def test_lexicon_word_boundaries() -> None:
    assert term_category("Il a été frappé par une voiture") == "violence"
    assert term_category("the violin concert was lovely") is None
    assert term_category("c'est un violon") is None
    assert term_category("He is SUICIDAL") == "self_harm"
    assert SensitiveFilter().check("see you at lunch").sensitive is False  # no embedder: terms only


def test_lines_from_keeps_text_messages_only() -> None:
    def msg(i: int, **kw: object) -> Message:
        base: dict[str, object] = {
            "event_id": EventId(f"$m{i}"),
            "sender": UserId(THEM),
            "ts": i,
            "type": "m.room.message",
            "msgtype": "m.text",
            "body": f"hello {i}",
            "content": {"m.mentions": {"user_ids": [ME]}},
        }
        base.update(kw)
        return Message(**base)  # type: ignore[arg-type]

    lines = lines_from(
        [msg(1), msg(2, redacted=True), msg(3, msgtype="m.image"), msg(4, type="m.room.encrypted"), msg(5)]
    )
    assert [line.event_id for line in lines] == ["$m1", "$m5"]
    assert lines[0].mentions == (ME,)


def test_eval_set_figures(replies: SmartReplies) -> None:
    """Held-in check on the bench set (measured: 95% top-3 acceptable, 100% none on sensitive);
    the floor leaves room for one or two borderline messages flipping on another CPU."""
    rows = [
        line.split("\t")
        for line in EVAL.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    normal = [(set(label.split(",")), text) for _, label, text in rows if label != "SENSITIVE"]
    sensitive = [text for _, label, text in rows if label == "SENSITIVE"]
    ok = sum(
        any(s.intent in labels for s in replies.suggest(convo(t), ME).suggestions) for labels, t in normal
    )
    assert ok / len(normal) >= 0.90
    assert all(replies.suggest(convo(t), ME).suggestions == [] for t in sensitive)
