"""The LLM paths of smart replies and catch-up: prompts for a `TextGenerator`, and strict parsing of
what it writes.

Owns: `llm_replies`, `parse_replies`, `abstractive_summary`, `parse_summary` and the prompts. Rules:
- The sensitive-topic filter runs before any prompt is built: when the latest incoming messages are
  sensitive the generator is not called at all and there are no suggestions.
- Prompts hold at most the last 10 messages for replies and a bounded tail of the conversation for
  summaries; sender names are Matrix localparts, the user is "Me"; text that looks like a model's
  control token (`<s>`, `<|...|>`) is removed from message text before it goes into a prompt.
- Output is untrusted: a reply is kept only when it is short, not a copy of a message, not a
  loop of one word, not a variant of a reply already kept, and (when a language identifier is
  given) not confidently in another language. A summary is kept only when it is a few sentences,
  not repetitive, and mostly made of words from the conversation. Otherwise the result is empty and
  the caller falls back to its non-LLM path (intent-matched replies, the extractive summary).
- A generator that raises is treated as one that wrote nothing. Prompts and outputs are message
  plaintext: nothing here logs or stores them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from nimbus.ai.interfaces import LanguageIdentifier, TextGenerator
from nimbus.ai.sensitive import SensitiveFilter, term_category

if TYPE_CHECKING:
    from nimbus.ai.replies import ChatLine

CONTEXT = 10
MAX_REPLY_CHARS = 80
MAX_REPLY_WORDS = 12
SUMMARY_SOURCE_CHARS = 3000  # ~1000 tokens: prompt and summary fit a 2048-token context
MAX_SUMMARY_CHARS = 700
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "de": "German", "fr": "French", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch"}  # fmt: skip

_SPECIAL = re.compile(r"<\|[^|>]{0,40}\|>|</?s>|\[/?INST\]", re.IGNORECASE)
_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
_BULLET = re.compile(r"^\s*(?:[-*•\u2013]\s*|\(?\d{1,2}\s*[.):]\s*|[^\W\d_]{1,12}\s*\d\s*[:.)-]\s*)")
_SPEAKER = re.compile(r"^([\w.@-]{1,24}):\s*")
_QUOTES = "\"'“”„«»\u2018\u2019`"
_OWN_SPEAKERS = {"me", "assistant", "reply", "you", "yo", "ich", "moi"}
_ROLES = {"assistant", "user", "system", "me", "model"}  # a role marker alone is no reply


def _name(user: str, own_user: str) -> str:
    if user == own_user:
        return "Me"
    return user[1:].split(":", 1)[0] if user.startswith("@") else user


def _clean(text: str, limit: int = 300) -> str:
    text = " ".join(_SPECIAL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _transcript(lines: Iterable[ChatLine], own_user: str, limit: int = 300) -> str:
    return "\n".join(f"{_name(line.sender, own_user)}: {_clean(line.text, limit)}" for line in lines)


def _norm(text: str) -> str:
    return " ".join(w.casefold() for w in _WORD.findall(text))


def _language_phrase(language: str | None) -> str:
    if language is None:
        return "in the same language as the conversation"
    return f"in {LANGUAGE_NAMES.get(language, language)} (the language of the conversation)"


def reply_prompt(context: Sequence[ChatLine], own_user: str, n: int = 3, language: str | None = None) -> str:
    last = _name(context[-1].sender, own_user)
    return (
        'Here is a chat conversation. My messages are marked "Me".\n\n'
        f"{_transcript(context, own_user)}\n\n"
        f"Write {n} short replies I could send next to {last}'s last message, "
        f"{_language_phrase(language)}. Each reply must give a different answer "
        "(for example yes, no, and not sure), at most 10 words. "
        "Write one reply per line and nothing else.\n"
    )


def _is_loop(words: list[str]) -> bool:
    """A word (or pair of words) that repeats like a stuck decoder."""
    if not words:
        return False
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    if max(counts.values()) >= 3:
        return True
    return len(words) >= 4 and len(counts) / len(words) < 0.6


def _similar(a: str, b: str) -> bool:
    wa, wb = set(a.split()), set(b.split())
    if a == b:
        return True
    if len(wa) < 2 or len(wb) < 2:
        return False
    return len(wa & wb) / len(wa | wb) >= 0.75


def parse_replies(
    text: str,
    n: int = 3,
    context: Sequence[ChatLine] = (),
    *,
    language: str | None = None,
    identifier: LanguageIdentifier | None = None,
) -> list[str]:
    """Up to `n` usable, distinct replies from a model's output (one per line; list markers, quotes
    and a "Me:" prefix removed); junk is dropped, so the result may be empty."""
    seen_messages = {_norm(line.text) for line in context}
    others = {_name(line.sender, "").casefold() for line in context}
    kept: list[str] = []
    keys: list[str] = []
    for raw in text.splitlines():
        line = _BULLET.sub("", raw.strip(), count=1).strip()
        speaker = _SPEAKER.match(line)
        if speaker:
            who = speaker.group(1).casefold()
            if who in others - _OWN_SPEAKERS:
                continue  # the model went on writing the other side of the conversation
            if who in _OWN_SPEAKERS:
                line = line[speaker.end() :]
        line = _SPECIAL.sub("", line).strip().strip(_QUOTES).strip()
        words = [w.casefold() for w in _WORD.findall(line)]
        if not words or len(line) > MAX_REPLY_CHARS or len(words) > MAX_REPLY_WORDS:
            continue
        if _is_loop(words) or "<" in line or "{" in line:
            continue
        key = " ".join(words)
        if key in _ROLES or key in seen_messages or any(_similar(key, k) for k in keys):
            continue
        if identifier is not None and language is not None:
            guess = identifier.identify(line)
            if guess is not None and guess.language != language and guess.confidence >= 0.9:
                continue
        kept.append(line)
        keys.append(key)
        if len(kept) == n:
            break
    return kept


def llm_replies(
    generator: TextGenerator,
    context_messages: Sequence[ChatLine],
    own_user: str,
    n: int = 3,
    *,
    language: str | None = None,
    sensitive: SensitiveFilter | None = None,
    identifier: LanguageIdentifier | None = None,
    max_tokens: int = 64,
) -> list[str]:
    """Up to `n` (≤ 3) short, distinct replies to the latest of `context_messages` written by the
    model, or [] (own message last, sensitive topic, generator failure, unusable output)."""
    context = list(context_messages)[-CONTEXT:]
    n = max(0, min(n, 3))
    if not context or n == 0 or context[-1].sender == own_user:
        return []
    recent_incoming = [line for line in context if line.sender != own_user][-3:]
    if any(term_category(line.text) for line in recent_incoming):
        return []
    if sensitive is not None and sensitive.check(context[-1].text).sensitive:
        return []
    try:
        out = generator.generate(reply_prompt(context, own_user, n, language), max_tokens=max_tokens)
    except Exception:  # any backend failure (load, context, native error): no LLM suggestions
        return []
    if not isinstance(out, str):
        return []
    return parse_replies(out, n, context, language=language, identifier=identifier)


def summary_prompt(lines: Sequence[ChatLine], own_user: str = "", language: str | None = None) -> str:
    return (
        "Here is a chat conversation I missed.\n\n"
        f"{_transcript(lines, own_user, limit=400)}\n\n"
        "Summarize it for me in 2 to 4 short sentences, "
        f"{_language_phrase(language)}: say who said, decided or asked what, with any dates. "
        "Write only the summary.\n"
    )


def _tail(lines: Sequence[ChatLine], budget: int) -> list[ChatLine]:
    out: list[ChatLine] = []
    used = 0
    for line in reversed(lines):
        cost = min(len(line.text), 400) + 20
        if out and used + cost > budget:
            break
        out.append(line)
        used += cost
    return out[::-1]


def _stem(word: str) -> str:
    return word.casefold()[:5]


def parse_summary(text: str, source: Sequence[ChatLine], *, max_chars: int = MAX_SUMMARY_CHARS) -> str:
    """The model's summary, cleaned and cut at a sentence end within `max_chars`, or "" when it is
    not usable: fewer than 4 words, repetitive, or mostly words that are not in the conversation."""
    text = _SPECIAL.sub(" ", text)
    text = re.sub(r"^\s*(?:summary|resumen|zusammenfassung|résumé)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if len(text) > max_chars:
        cut = max(text.rfind(end, 0, max_chars) for end in (". ", "! ", "? "))
        text = text[: cut + 1] if cut > 0 else ""
    words = [w.casefold() for w in _WORD.findall(text)]
    if len(words) < 4:
        return ""
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    if len(counts) / len(words) < 0.45 or max(counts.values()) > max(3, len(words) // 5):
        return ""
    trigrams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    if trigrams and len(set(trigrams)) < len(trigrams) * 0.8:
        return ""
    vocabulary = {_stem(w) for line in source for w in _WORD.findall(line.text)}
    vocabulary |= {_stem(_name(line.sender, "")) for line in source}
    content = [w for w in words if len(w) >= 4]
    if content and sum(_stem(w) in vocabulary for w in content) / len(content) < 0.4:
        return ""
    return text


def abstractive_summary(
    generator: TextGenerator,
    messages: Sequence[ChatLine],
    *,
    own_user: str = "",
    language: str | None = None,
    max_tokens: int = 160,
) -> str:
    """A few sentences summarizing `messages` written by the model, or "" when there is nothing to
    summarize or the model failed or wrote something unusable (the caller shows the extractive
    summary instead)."""
    lines = _tail([line for line in messages if line.text.strip()], SUMMARY_SOURCE_CHARS)
    if not lines:
        return ""
    try:
        out = generator.generate(summary_prompt(lines, own_user, language), max_tokens=max_tokens)
    except Exception:  # any backend failure: no abstractive summary
        return ""
    return parse_summary(out, lines) if isinstance(out, str) else ""
