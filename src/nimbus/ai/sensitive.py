"""The sensitive-topic filter smart replies consult before suggesting anything (as ML Kit's does).

Owns: `SensitiveFilter` and the lexicon/examples it reads (data/sensitive.json). Rules:
- Categories: grief, health emergencies, self-harm, violence and abuse, legal or financial distress;
  languages en, es, de, fr. A message is sensitive when a listed term occurs in it (word boundaries;
  'term*' is a word prefix) or when its embedding is closer than `threshold` to one of the examples
  (paraphrases the terms miss). Either way the caller suggests nothing: a wrong "no" costs a missing
  suggestion, a wrong "yes" puts "Cool!" under "my dad died".
- Example vectors are embedded once per filter and kept in memory only. Nothing is logged.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.interfaces import Embedder

DATA = Path(__file__).resolve().parent / "data"
# Calibrated on bench/data/smart_reply_eval.tsv (see bench/ai_eval.py): the closest ordinary chat
# message sits below it, sensitive paraphrases the lexicon misses above.
DEFAULT_THRESHOLD = 0.90


@dataclass(frozen=True)
class Verdict:
    sensitive: bool
    category: str | None = None
    via: str | None = None  # "terms" or "embedding"


@cache
def _data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "sensitive.json").read_text(encoding="utf-8"))
    return data


def _term_pattern(term: str) -> str:
    if term.endswith("*"):
        return r"(?<!\w)" + re.escape(term[:-1])
    return r"(?<!\w)" + re.escape(term) + r"s?(?!\w)"


@cache
def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for category, languages in _data()["terms"].items():
        terms = [t for words in languages.values() for t in words]
        out.append((category, re.compile("|".join(_term_pattern(t) for t in terms), re.IGNORECASE)))
    return out


def vectors_of(embedder: Embedder, texts: list[str]) -> npt.NDArray[np.float32]:
    """Unit vectors for `texts` as an (n, d) array (symmetric matching: e5's "query: " side)."""
    embed_array = getattr(embedder, "embed_array", None)
    if embed_array is not None:
        arr: npt.NDArray[np.float32] = embed_array(texts, query=True)
        return arr
    return np.asarray(embedder.embed(texts, query=True), dtype=np.float32).reshape(len(texts), -1)


def term_category(text: str) -> str | None:
    """The category of the first listed term found in `text`, or None."""
    lowered = text.lower().replace("\u2019", "'")
    for category, pattern in _patterns():
        if pattern.search(lowered):
            return category
    return None


class SensitiveFilter:
    """Is a conversation's latest turn about something no canned reply should answer?"""

    def __init__(self, embedder: Embedder | None = None, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self._examples: npt.NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    def _example_vectors(self) -> npt.NDArray[np.float32]:
        assert self.embedder is not None
        with self._lock:
            if self._examples is None:
                texts = [t for ts in _data()["examples"].values() for t in ts]
                self._examples = vectors_of(self.embedder, texts)
            return self._examples

    def similarity(self, vector: npt.NDArray[np.float32]) -> float:
        """Cosine similarity of a message vector to its nearest sensitive example."""
        return float(np.max(self._example_vectors() @ vector))

    def check(self, text: str, vector: npt.NDArray[np.float32] | None = None) -> Verdict:
        """The verdict for one message; `vector` (its embedding, if the caller has it) enables the
        embedding check, which is skipped when there is no embedder."""
        category = term_category(text)
        if category is not None:
            return Verdict(True, category, "terms")
        if self.embedder is not None:
            if vector is None:
                vector = vectors_of(self.embedder, [text])[0]
            if self.similarity(vector) >= self.threshold:
                return Verdict(True, None, "embedding")
        return Verdict(False)
