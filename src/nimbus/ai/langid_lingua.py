"""lingua's confidence values for nimbus.ai.langid: a second opinion on short chat messages.

Owns: `LINGUA_LANGUAGES`, `detector()` (one lingua detector per process) and `confidences()`. Rules:
- lingua-language-detector is optional (the `ai` extra installs it). When it is not importable,
  `detector()` returns None and nimbus.ai.langid keeps to its fastText-only path; `installed()` says so
  without importing anything.
- Only the 11 languages nimbus has word lists and evaluation sets for (`LINGUA_LANGUAGES`), in
  lingua's low-accuracy mode (trigram models only): measured in a fresh process it adds ~40 MB RSS
  and ~0.1 ms a message, where the high-accuracy mode (1- to 5-gram models) adds ~360 MB for the
  same 11 languages, far over the AI memory budget (nimbus's AI <= 300 MB in total).
- The models are preloaded when the detector is first built (the first message is not slow), once
  per process: every identifier shares the one detector (lingua's detector is safe to use from
  several threads; building it is guarded by a lock).
- Restricted to 11 languages, lingua gives all its confidence to one of them even for text in
  another language (Czech, Hungarian); nimbus.ai.langid weighs it by how much of fastText's
  probability falls on these languages (`share`), so it never decides such text alone.
- Never logs text.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingua import LanguageDetector

# ISO 639-1 codes of the languages lingua is built for (its `Language` member names).
LINGUA_LANGUAGES = {
    "de": "GERMAN",
    "en": "ENGLISH",
    "es": "SPANISH",
    "fr": "FRENCH",
    "it": "ITALIAN",
    "nl": "DUTCH",
    "pl": "POLISH",
    "pt": "PORTUGUESE",
    "ru": "RUSSIAN",
    "sv": "SWEDISH",
    "tr": "TURKISH",
}
_CODES: dict[str, str] = {name: code for code, name in LINGUA_LANGUAGES.items()}
_lock = threading.Lock()
_detector: LanguageDetector | None = None


def installed() -> bool:
    """Whether lingua can be imported (package metadata only: nothing is loaded)."""
    return importlib.util.find_spec("lingua") is not None


def detector() -> LanguageDetector | None:
    """The process's lingua detector (low-accuracy mode, models preloaded), or None without lingua."""
    global _detector
    with _lock:
        if _detector is None:
            try:
                from lingua import Language, LanguageDetectorBuilder
            except ImportError:
                return None
            languages = [getattr(Language, name) for name in LINGUA_LANGUAGES.values()]
            built = (
                LanguageDetectorBuilder.from_languages(*languages)
                .with_low_accuracy_mode()
                .with_preloaded_language_models()
                .build()
            )
            built.compute_language_confidence_values("hello world")  # a broken install fails here
            _detector = built
        return _detector


def confidences(found: LanguageDetector, words: str) -> dict[str, float]:
    """lingua's confidence (0..1, summing to 1 or all 0) for each of `LINGUA_LANGUAGES` in `words`."""
    return {
        _CODES[value.language.name]: value.value
        for value in found.compute_language_confidence_values(words)
        if value.value > 0.0
    }


def share(guesses: Iterable[tuple[str, float]]) -> float:
    """How much of fastText's probability (its top guesses) falls on `LINGUA_LANGUAGES` (0..1)."""
    total = inside = 0.0
    for lang, prob in guesses:
        total += prob
        if lang in LINGUA_LANGUAGES:
            inside += prob
    return inside / total if total > 0 else 0.0
