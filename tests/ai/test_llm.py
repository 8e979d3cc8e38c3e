"""The optional LLM backend (llama.cpp) and the LLM paths of smart replies and catch-up.

Parsing, prompting, the sensitive filter and every fallback are tested with fake generators that
implement the `TextGenerator` protocol (these run everywhere). The real backend is tested on a tiny
random-weight llama GGUF built here (_tiny_llama.py, with the `gguf` package): installed with
`nimbus ai install`, found by the registry, loaded by llama.cpp, deterministic; its word salad must
be rejected by the parsers, so the fast path / extractive summary is what the user gets.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from nimbus.ai import registry
from nimbus.ai.catchup import catch_up
from nimbus.ai.interfaces import CapabilityMissing, TextGenerator
from nimbus.ai.llm import CMAKE_ARGS, GenerationFailed, LlamaCppGenerator
from nimbus.ai.llm_features import abstractive_summary, llm_replies, parse_replies, parse_summary
from nimbus.ai.replies import ChatLine, SmartReplies
from nimbus.apps.cli import ai_commands
from nimbus.apps.cli.output import Printer

REPO = Path(__file__).resolve().parents[2]
ME = "@me:example.org"
ANA = "@ana:example.org"
BEN = "@ben:example.org"


class FakeEmbedder:
    """Deterministic unit vectors from a hash (the logic under test does not need meaning)."""

    name = "fake"
    dimensions = 16

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        out = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dimensions)
            out.append([float(x) for x in v / np.linalg.norm(v)])
        return out


class FakeGenerator:
    """Writes a fixed answer (or raises), and records every prompt it was given."""

    def __init__(self, answer: str = "", *, fail: bool = False) -> None:
        self.name = "fake-llm"
        self.answer = answer
        self.fail = fail
        self.prompts: list[str] = []

    def generate(self, prompt: str, *, max_tokens: int = 128) -> str:
        self.prompts.append(prompt)
        if self.fail:
            raise GenerationFailed("the model cannot load")
        return self.answer


def convo(*texts: str, last_from: str = ANA) -> list[ChatLine]:
    lines = [ChatLine(f"$e{i}", ME if i % 2 else ANA, i, t) for i, t in enumerate(texts[:-1])]
    return [*lines, ChatLine("$last", last_from, 99, texts[-1])]


WORK_CHAT = [
    ChatLine("$1", ANA, 1, "The client moved the launch review to Thursday at 3pm."),
    ChatLine("$2", BEN, 2, "Then the budget draft has to be final by Wednesday evening."),
    ChatLine("$3", ANA, 3, "I'll update the slides with the new pricing numbers."),
    ChatLine("$4", BEN, 4, "Can you send me the pricing sheet before lunch?"),
    ChatLine("$5", ANA, 5, "Sure, sending it now. Marketing also wants a demo video."),
]
GOOD_SUMMARY = (
    "Summary: The client moved the launch review to Thursday at 3pm. Ben needs the budget draft "
    "final by Wednesday evening, and Ana will update the slides with the new pricing and send the "
    "pricing sheet. Marketing wants a demo video."
)


def test_fakes_implement_the_protocol() -> None:
    assert isinstance(FakeGenerator(), TextGenerator)
    assert isinstance(LlamaCppGenerator("/nonexistent.gguf"), TextGenerator)  # nothing loaded yet


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("1. Sure, see you then!\n2. Sorry, I can't make it.\n3. Maybe, I'll check.",
         ["Sure, see you then!", "Sorry, I can't make it.", "Maybe, I'll check."]),
        ('- "Yes, count me in"\n- "No, thanks"\n- "Not sure yet"\n- "Let me check"',
         ["Yes, count me in", "No, thanks", "Not sure yet"]),
        ("Reply 1: Me: Sounds good!\nReply 2: Sounds good!!\nReply 3: Can we do Friday instead?",
         ["Sounds good!", "Can we do Friday instead?"]),  # a repeated answer is kept once
        ("ana: are you there?\nMe: Yes, I'm here", ["Yes, I'm here"]),  # the other side is dropped
        ("▁lunch lunch lunch lunch lunch lunch lunch", []),  # a stuck decoder
        ("sure " * 30, []),
        ("The weather today is going to be very nice and I think that we should all go to the beach "
         "together after work", []),  # too long for a quick reply
        ("<|im_start|>assistant\n<|im_end|>\n", []),  # a role marker alone
        ("", []),
    ],
)  # fmt: skip
def test_reply_parser(output: str, expected: list[str]) -> None:
    context = convo("are you there?", "lunch at noon?")
    assert parse_replies(output, 3, context) == expected


def test_reply_parser_drops_copies_of_the_conversation_and_near_duplicates() -> None:
    context = convo("lunch at noon tomorrow?")
    out = "Lunch at noon tomorrow?\nYes, noon works for me\nyes noon works for me!\nNo, I'm busy"
    assert parse_replies(out, 3, context) == ["Yes, noon works for me", "No, I'm busy"]


def test_llm_replies_prompt_holds_the_last_ten_messages_and_the_language() -> None:
    lines = convo(*[f"mensaje número {i}" for i in range(14)], "¿comemos juntos mañana?")
    gen = FakeGenerator("Sí, claro\nNo puedo, lo siento\nQuizás, te digo luego")
    assert llm_replies(gen, lines, ME, language="es") == [
        "Sí, claro",
        "No puedo, lo siento",
        "Quizás, te digo luego",
    ]
    (prompt,) = gen.prompts
    assert "mensaje número 13" in prompt and "mensaje número 5" in prompt
    assert "mensaje número 4" not in prompt  # only the last 10 messages
    assert "Spanish" in prompt and "ana: ¿comemos juntos mañana?" in prompt and "Me: mensaje" in prompt
    assert llm_replies(FakeGenerator("a\nb\nc\nd"), lines, ME, n=5) == ["a", "b", "c"]  # never more than 3


def test_sensitive_topics_never_reach_the_generator() -> None:
    gen = FakeGenerator("So sorry\nOh no\nHugs")
    for lines in (
        convo("my dad died last night"),
        convo("my dad died last night", "sorry I'm late", "I can't stop crying"),
        convo("mi padre murió anoche"),
    ):
        assert llm_replies(gen, lines, ME) == []
        replies = SmartReplies(FakeEmbedder())
        assert replies.suggest(lines, ME, generator=gen).reason == "sensitive"
    assert gen.prompts == []
    assert llm_replies(gen, convo("hello?", last_from=ME), ME) == [] and gen.prompts == []  # own message


def test_suggest_uses_the_llm_and_falls_back_to_the_fast_path() -> None:
    replies = SmartReplies(FakeEmbedder(), threshold=-1.0)  # the fast path always answers
    lines = convo("are we still on for the movie tonight?")
    fast = replies.suggest(lines, ME)
    assert fast.reason == "ok" and fast.suggestions and fast.suggestions[0].intent != "llm"
    good = FakeGenerator("1. Yes, see you at 8!\n2. Sorry, I can't tonight.\n3. Not sure yet, I'll text you.")
    result = replies.suggest(lines, ME, generator=good)
    assert result.reason == "ok" and [s.intent for s in result.suggestions] == ["llm"] * 3
    assert result.texts == ["Yes, see you at 8!", "Sorry, I can't tonight.", "Not sure yet, I'll text you."]
    for bad in (FakeGenerator("movie movie movie movie movie"), FakeGenerator(fail=True)):
        assert replies.suggest(lines, ME, generator=bad).texts == fast.texts
        assert len(bad.prompts) == 1


def test_summary_parser() -> None:
    assert parse_summary(GOOD_SUMMARY, WORK_CHAT).startswith("The client moved the launch review")
    assert parse_summary("review review review review review review", WORK_CHAT) == ""
    assert parse_summary("Ok.", WORK_CHAT) == ""
    unrelated = "Quantum chromodynamics describes gluons binding quarks inside hadrons and mesons."
    assert parse_summary(unrelated, WORK_CHAT) == ""  # not about this conversation
    long = " ".join(
        ["The client moved the launch review to Thursday."] * 3 + ["Ana sends the pricing sheet."]
    )
    assert parse_summary(long, WORK_CHAT) == ""  # one sentence over and over
    cut = parse_summary(GOOD_SUMMARY, WORK_CHAT, max_chars=120)
    assert cut.endswith(".") and len(cut) <= 120


def test_catch_up_abstract_and_its_fallback() -> None:
    embedder = FakeEmbedder()
    plain = catch_up(WORK_CHAT, embedder, ME)
    assert plain.abstract is None and plain.summary
    gen = FakeGenerator(GOOD_SUMMARY)
    with_llm = catch_up(WORK_CHAT, embedder, ME, generator=gen)
    assert with_llm.abstract is not None and "Thursday at 3pm" in with_llm.abstract
    assert "ben: Then the budget draft" in gen.prompts[0]
    assert "Thursday" not in repr(with_llm)  # message-derived text stays out of reprs
    for bad in (FakeGenerator("pricing pricing pricing pricing pricing"), FakeGenerator(fail=True)):
        fallback = catch_up(WORK_CHAT, embedder, ME, generator=bad)
        assert fallback.abstract is None and fallback.summary == plain.summary
    assert abstractive_summary(gen, []) == ""


def test_no_model_means_capability_missing_naming_the_install_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(CapabilityMissing, match=r"nimbus ai install MODEL\.gguf") as missing:
        registry.text_generator()
    assert CMAKE_ARGS in str(missing.value) and "llama-cpp-python==" in str(missing.value)
    printer = Printer(False)
    for command in (ai_commands.suggest, ai_commands.catchup):  # before any login or sync
        args = argparse.Namespace(room="!r:example.org", llm=True, language="en", limit=50)
        with pytest.raises(CapabilityMissing, match="nimbus ai install"):
            asyncio.run(command(args, printer))


def test_status_lists_the_llama_cpp_backend() -> None:
    backend = {b.name: b for b in registry.available()}["llama.cpp"]
    assert backend.package == "llama-cpp-python" and backend.requirement.startswith("llama-cpp-python==")
    assert set(backend.features) == {"smart-replies-llm", "abstractive-summary"}


# --- the real backend, on a tiny model built here --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    importlib.import_module("llama_cpp")  # installed by scripts/setup.sh --test: fail, never skip
    importlib.import_module("gguf")  # installed by scripts/setup.sh --test: fail, never skip
    from ._tiny_llama import tiny_llama_gguf

    return tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimbus.apps.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_tiny_model_installs_loads_and_generates_deterministically(
    tiny_gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    env = dict(os.environ, NIMBUS_MODELS_DIR=str(models), PYTHONPATH=str(REPO / "src"))
    done = _cli("ai", "install", str(tiny_gguf_file), env=env)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(models))
    gen = registry.text_generator()
    assert gen.model_path == models / "tiny-llama" / "model.gguf" and not gen.loaded
    first = gen.generate("hello, are we meeting tomorrow?", max_tokens=12)
    assert gen.loaded and first.strip()
    assert gen.generate("hello, are we meeting tomorrow?", max_tokens=12) == first
    assert (
        LlamaCppGenerator(gen.model_path).generate("hello, are we meeting tomorrow?", max_tokens=12) == first
    )
    assert gen.generate("something else entirely", max_tokens=12) != first
    assert gen.chat_template() is None
    gen.close()
    assert not gen.loaded


def test_newest_installed_model_is_used_and_chat_templates_apply(
    tiny_gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nimbus.ai.models import install

    from ._tiny_llama import CHAT_TEMPLATE, tiny_llama_gguf

    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    install(tiny_gguf_file, name="zz-older")
    chat = install(tiny_llama_gguf(tmp_path / "chat.gguf", seed=1, chat_template=True), name="aa-newer")
    gen = registry.text_generator()
    assert gen.model_path == chat.main_file
    assert gen.chat_template() == CHAT_TEMPLATE
    out = gen.generate("are you coming?", max_tokens=8)
    assert out and out == gen.generate("are you coming?", max_tokens=8)
    raw = LlamaCppGenerator(chat.main_file, use_chat_template=False).generate("are you coming?", max_tokens=8)
    assert raw and raw != out  # the template changed what the model saw


def test_tiny_models_junk_falls_back_to_the_fast_path_and_extractive_summary(tiny_gguf_file: Path) -> None:
    gen = LlamaCppGenerator(tiny_gguf_file)
    lines = convo("are we still on for the movie tonight?")
    raw = gen.generate("Write 3 short replies, one per line.", max_tokens=64)
    assert raw and parse_replies(raw, 3, lines) == []  # word salad on one line
    assert llm_replies(gen, lines, ME) == []
    replies = SmartReplies(FakeEmbedder(), threshold=-1.0)
    assert replies.suggest(lines, ME, generator=gen).texts == replies.suggest(lines, ME).texts
    embedder = FakeEmbedder()
    assert abstractive_summary(gen, WORK_CHAT) == ""
    with_llm = catch_up(WORK_CHAT, embedder, ME, generator=gen)
    assert with_llm.abstract is None and with_llm.summary == catch_up(WORK_CHAT, embedder, ME).summary


def test_prompts_that_do_not_fit_and_missing_files_fail_cleanly(tiny_gguf_file: Path, tmp_path: Path) -> None:
    small = LlamaCppGenerator(tiny_gguf_file, n_ctx=32)
    secret = "the launch code is swordfish " * 10
    with pytest.raises(GenerationFailed, match="does not fit") as failed:
        small.generate(secret)
    assert "swordfish" not in str(failed.value)  # the prompt never goes into an error message
    assert llm_replies(small, convo(secret), ME) == []  # the feature falls back
    with pytest.raises(GenerationFailed, match="no such model file"):
        LlamaCppGenerator(tmp_path / "gone.gguf").generate("hi")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(tiny_gguf_file.read_bytes()[:4096])
    with pytest.raises(GenerationFailed, match="cannot load"):
        LlamaCppGenerator(corrupt).generate("hi")
