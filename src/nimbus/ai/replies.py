"""Smart replies: up to 3 short suggestions for the latest incoming message, computed on the device.

Owns: `SmartReplies`, `ChatLine` (the text view of a timeline item both AI conversation features
read) and the intent data (data/intents.json). Rules:
- Fast path, no LLM: the latest message is embedded once and compared (dot products) with every
  intent's example messages (embedded once per `SmartReplies`, kept in memory); the nearest intent
  gives the replies. Each intent's reply options are different answers (yes / no / not sure), and a
  close second intent contributes one more, so suggestions are never three variants of one answer.
- No suggestions when: the last message is the user's own; it has no text; the topic of the last
  few messages is sensitive (`nimbus.ai.sensitive`); or the nearest intent is further than
  `threshold` (unsure). `SuggestionResult.reason` says which.
- Replies are in the conversation's language: language id (restricted to the reply languages) on
  the latest message, else on the recent context (≤ 10 messages), else `default_language`.
- LLM path (optional `generator`): after the same checks, the model writes the replies
  (`nimbus.ai.llm_features`, intent "llm"); when it fails or writes nothing usable, the fast path runs.
- Input is decrypted text handed over by the client; nothing is stored or logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.interfaces import Embedder, LanguageIdentifier, TextGenerator
from nimbus.ai.sensitive import SensitiveFilter, term_category, vectors_of
from nimbus.client.room import Message

DATA = Path(__file__).resolve().parent / "data"
CONTEXT = 10
LANGUAGES = ("en", "es", "de", "fr")
# Calibrated on bench/data/smart_reply_eval.tsv (bench/ai_eval.py): see the report in that script.
DEFAULT_THRESHOLD = 0.85
SECOND_MARGIN = 0.02  # a second intent this close to the first adds one suggestion
# Spec: https://spec.matrix.org/v1.12/client-server-api/#mroommessage-msgtypes (text a person wrote)
TEXT_MSGTYPES = frozenset({"m.text", "m.notice", "m.emote"})


@dataclass(frozen=True)
class ChatLine:
    """One readable message of a conversation (decrypted text only)."""

    event_id: str
    sender: str
    ts: int
    text: str
    mentions: tuple[str, ...] = ()  # user ids from m.mentions, when the sender set them

    def __repr__(self) -> str:  # message text stays out of logs and tracebacks
        return f"ChatLine(event_id={self.event_id!r}, sender={self.sender!r}, ts={self.ts})"


def lines_from(messages: Iterable[Message]) -> list[ChatLine]:
    """The text messages of a room timeline, in order: redacted, undecrypted, non-text items and
    edits-as-items are skipped. Spec: https://spec.matrix.org/v1.12/client-server-api/#user-and-room-mentions
    for `m.mentions`."""
    out = []
    for m in messages:
        if m.type != "m.room.message" or m.redacted or m.msgtype not in TEXT_MSGTYPES:
            continue
        if not isinstance(m.body, str) or not m.body.strip():
            continue
        mentions = m.content.get("m.mentions")
        users = mentions.get("user_ids") if isinstance(mentions, dict) else None
        ids = tuple(u for u in users if isinstance(u, str)) if isinstance(users, list) else ()
        out.append(ChatLine(m.event_id, m.sender, m.ts, m.body, ids))
    return out


@dataclass(frozen=True)
class Suggestion:
    text: str
    intent: str
    score: float


@dataclass(frozen=True)
class SuggestionResult:
    suggestions: list[Suggestion]
    reason: str  # "ok", "own_message", "no_message", "sensitive", "unsure"
    language: str | None = None
    intents: list[tuple[str, float]] = field(default_factory=list)  # nearest intents, best first
    elapsed_ms: float = 0.0

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.suggestions]


@cache
def intents() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "intents.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


class SmartReplies:
    def __init__(
        self,
        embedder: Embedder,
        identifier: LanguageIdentifier | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        sensitive: SensitiveFilter | None = None,
    ) -> None:
        self.embedder = embedder
        self.identifier = identifier
        self.threshold = threshold
        self.sensitive = sensitive if sensitive is not None else SensitiveFilter(embedder)
        self._names: list[str] = []
        self._owners: npt.NDArray[np.int64] | None = None
        self._vectors: npt.NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Embed the intent examples and sensitive examples now (else on first use)."""
        self._intent_vectors()
        if self.sensitive.embedder is not None:
            self.sensitive.similarity(self._intent_vectors()[0][0])

    def _intent_vectors(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        with self._lock:
            if self._vectors is None or self._owners is None:
                texts: list[str] = []
                owners: list[int] = []
                self._names = list(intents())
                for i, name in enumerate(self._names):
                    for examples in intents()[name]["examples"].values():
                        texts.extend(examples)
                        owners.extend([i] * len(examples))
                self._vectors = vectors_of(self.embedder, texts)
                self._owners = np.asarray(owners, dtype=np.int64)
            return self._vectors, self._owners

    def rank(self, vector: npt.NDArray[np.float32]) -> list[tuple[str, float]]:
        """Every intent with its best example similarity to `vector`, best first."""
        vectors, owners = self._intent_vectors()
        sims = vectors @ vector
        best = np.full(len(self._names), -1.0, dtype=np.float32)
        np.maximum.at(best, owners, sims)
        order = np.argsort(-best)
        return [(self._names[int(i)], float(best[int(i)])) for i in order]

    def language(self, lines: Sequence[ChatLine], default: str) -> str:
        fallback = default if default in LANGUAGES else "en"
        if self.identifier is None or not lines:
            return fallback
        guess = self.identifier.identify(lines[-1].text)
        if guess is None:
            recent = " \n".join(line.text for line in reversed(lines[-CONTEXT:]))
            guess = self.identifier.identify(recent)
        if guess is None or guess.language not in LANGUAGES:
            return fallback
        return guess.language

    def suggest(
        self,
        lines: Sequence[ChatLine],
        own_user: str,
        *,
        default_language: str = "en",
        generator: TextGenerator | None = None,
    ) -> SuggestionResult:
        """Up to 3 suggestions answering the last of `lines` (oldest first; only the last ≤ 10
        are read), or none with the reason. With `generator`, an LLM writes them when it can."""
        t0 = time.perf_counter()
        context = list(lines)[-CONTEXT:]
        if not context:
            return SuggestionResult([], "no_message")
        last = context[-1]
        if last.sender == own_user:
            return SuggestionResult([], "own_message")
        # A sensitive topic raised in the last few incoming messages still colours the latest one.
        recent_incoming = [line for line in context if line.sender != own_user][-3:]
        if any(term_category(line.text) for line in recent_incoming):
            return SuggestionResult([], "sensitive", elapsed_ms=_ms(t0))
        vector = vectors_of(self.embedder, [last.text])[0]
        if self.sensitive.check(last.text, vector).sensitive:
            return SuggestionResult([], "sensitive", elapsed_ms=_ms(t0))
        if generator is not None:
            from nimbus.ai.llm_features import llm_replies

            lang = self.language(context, default_language)
            written = llm_replies(generator, context, own_user, language=lang, identifier=self.identifier)
            if written:
                return SuggestionResult([Suggestion(t, "llm", 0.0) for t in written], "ok", lang, [], _ms(t0))
        ranked = self.rank(vector)
        top_name, top_score = ranked[0]
        if top_score < self.threshold:
            return SuggestionResult([], "unsure", intents=ranked[:3], elapsed_ms=_ms(t0))
        lang = self.language(context, default_language)
        picks = [(top_name, top_score)]
        second_name, second_score = ranked[1]
        if second_score >= self.threshold and top_score - second_score <= SECOND_MARGIN:
            picks.append((second_name, second_score))
        options = [[(r, n, s) for r in intents()[n]["replies"][lang]] for n, s in picks]
        chosen: list[Suggestion] = []
        if len(options) == 2:  # two from the best intent, one from the runner-up
            queue = [*options[0][:2], options[1][0], *options[0][2:], *options[1][1:]]
        else:
            queue = options[0]
        for text, name, score in queue:
            if len(chosen) == 3:
                break
            if all(text != c.text for c in chosen):
                chosen.append(Suggestion(text, name, round(score, 4)))
        return SuggestionResult(chosen, "ok", lang, ranked[:3], _ms(t0))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
