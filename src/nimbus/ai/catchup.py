"""Catch-up on unread messages: an extractive summary, action items (who, what, when), mentions.

Owns: `catch_up` and its parts (`unread`, `summarize`, `action_items`, `mentions_of`). Rules:
- Input is decrypted `ChatLine`s in timeline order (see `nimbus.ai.replies.lines_from`); unread means
  after the `m.fully_read` marker's event (spec: https://spec.matrix.org/v1.12/client-server-api/#fully-read-markers)
  or a timestamp, else the last N.
- Summary: messages are split into sentences; each gets a centrality score (similarity to the
  conversation's mean embedding, standardised) plus small bonuses for substance (length, numbers,
  dates) and a recency nudge; sentences are picked greedily with a redundancy penalty (MMR) so the
  summary covers different points, within `max_sentences` and `max_chars`, shown in timeline order.
- Action items come from patterns (en, es, de, fr): requests ("can you…", "please…", "¿puedes…",
  "kannst du…", "peux-tu…") owned by the person addressed (a mention or a name at the start; in a
  two-person conversation, the other one), commitments ("I'll…", "voy a…", "ich mache…", "je vais…")
  owned by the sender, and "<name> will…" owned by that person; `when` is the first deadline or
  date/time phrase in the sentence. Patterns, not understanding: see the bench figures.
- Abstractive summary (optional `generator`): an LLM's few sentences in `CatchUp.abstract`
  (`nimbus.ai.llm_features`); None when it fails or writes junk, and the extractive summary stands.
- Nothing is stored or logged; message text stays out of reprs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.interfaces import Embedder, TextGenerator
from nimbus.ai.replies import ChatLine
from nimbus.ai.sensitive import vectors_of

_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
_DIGIT = re.compile(r"\d")

_DAYS = (
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|lunes|martes|miércoles|jueves|viernes|"
    r"sábado|domingo|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag|lundi|mardi|mercredi|"
    r"jeudi|vendredi|samedi|dimanche"
)
_WHEN = re.compile(
    r"\b(?:(?:by|before|until|on|next|this|por|para el|antes del?|el|bis|am|vor|nächsten?|d'ici|avant|"
    r"jusqu'à|ce|cette)\s+)?(?:" + _DAYS + r")\b(?:\s+(?:morning|afternoon|evening|noon|night))?"
    r"|\b(?:by |before |until )?(?:tomorrow|today|tonight|end of (?:the )?(?:day|week|month)|eod|eow|"
    r"next week|this week|asap|noon|mañana|hoy|esta noche|la semana que viene|morgen|heute(?: abend)?|"
    r"übermorgen|nächste woche|demain|aujourd'hui|ce soir|la semaine prochaine)\b"
    r"|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b|\b\d{1,2}\.\d{1,2}\.(?:\d{2,4})?"
    r"|\b(?:at |um |a las |à )?\d{1,2}(?::\d{2})?\s?(?:am|pm|h\d{0,2}|uhr)\b",
    re.IGNORECASE,
)
_REQUEST = re.compile(
    r"\b(?:can|could|would|will) you\b|\bplease\b|\bpls\b|\bmake sure\b|\bdon't forget\b|"
    r"(?:¿)?\b(?:puedes|podrías|podéis|puede usted)\b|\bpor favor\b|\bno olvides\b|"
    r"\b(?:kannst|könntest|würdest) du\b|\bbitte\b|\bdenk(?:t)? (?:bitte )?(?:dran|daran)\b|"
    r"\b(?:peux|pourrais)[- ]tu\b|\btu (?:peux|pourrais)\b|\bmerci de\b|\bs'il te pla[iî]t\b|\bstp\b|"
    r"\bn'oublie pas\b",
    re.IGNORECASE,
)
_COMMIT = re.compile(
    r"\b(?:i'll|i will|i'm going to|i am going to|let me|i can take|i'll take|i'm on it)\b|"
    r"\b(?:voy a|me encargo|me ocupo|lo hago yo|yo me encargo)\b|"
    r"\b(?:ich werde|ich mache|ich kümmere mich|mach ich|ich übernehme|übernehme ich)\b|"
    r"\b(?:je vais|je m'occupe|je m'en charge|je ferai|je m'en occupe)\b",
    re.IGNORECASE,
)
_THIRD = r"\s+(?:will|is going to|va a|se encarga|wird|kümmert sich|va|s'occupe)\b"
_MXID = re.compile(r"@[\w.=\-/]+:[\w.\-]+(?::\d+)?")


@dataclass(frozen=True)
class SummaryLine:
    event_id: str
    sender: str
    ts: int
    text: str
    score: float

    def __repr__(self) -> str:
        return f"SummaryLine(event_id={self.event_id!r}, score={self.score})"


@dataclass(frozen=True)
class ActionItem:
    event_id: str
    sender: str
    kind: str  # "request" or "commitment"
    owner: str | None  # user id (or the name as written, when it matches no member); None: unknown
    what: str
    when: str | None

    def __repr__(self) -> str:
        return f"ActionItem(event_id={self.event_id!r}, kind={self.kind!r}, owner={self.owner!r})"


@dataclass(frozen=True)
class CatchUp:
    unread: int
    summary: list[SummaryLine]
    actions: list[ActionItem]
    mentions: list[ChatLine]
    participants: list[str] = field(default_factory=list)
    abstract: str | None = None  # the LLM's summary (with a generator), shown instead of `summary`

    def __repr__(self) -> str:  # the abstract is message-derived text: out of logs and tracebacks
        return f"CatchUp(unread={self.unread}, summary={len(self.summary)}, actions={len(self.actions)})"


def unread(
    lines: Sequence[ChatLine],
    *,
    after_event_id: str | None = None,
    after_ts: int | None = None,
    last: int = 50,
) -> list[ChatLine]:
    """The lines after `after_event_id` (if present in `lines`), else after `after_ts`, else the last."""
    if after_event_id is not None:
        for i, line in enumerate(lines):
            if line.event_id == after_event_id:
                return list(lines[i + 1 :])
    if after_ts is not None:
        return [line for line in lines if line.ts > after_ts]
    return list(lines[-last:])


def _sentences(lines: Sequence[ChatLine]) -> list[tuple[ChatLine, str]]:
    out = []
    for line in lines:
        for sentence in _SENTENCE.split(line.text.strip()):
            sentence = sentence.strip()
            if len(_WORD.findall(sentence)) >= 4:  # "ok", "thanks!", "sounds good" carry no fact
                out.append((line, sentence))
    return out


def summarize(
    lines: Sequence[ChatLine],
    embedder: Embedder,
    *,
    max_sentences: int = 8,
    max_chars: int = 1000,
    redundancy: float = 0.6,
    skip: frozenset[str] = frozenset(),
) -> list[SummaryLine]:
    """The most central, least redundant sentences of `lines`, in timeline order (`skip`: sentences
    shown elsewhere, e.g. as action items)."""
    candidates = [c for c in _sentences(lines) if c[1] not in skip]
    if not candidates:
        return []
    vectors = vectors_of(embedder, [s for _, s in candidates])
    mean = vectors.mean(axis=0)
    central = vectors @ (mean / max(float(np.linalg.norm(mean)), 1e-9))
    z = (central - central.mean()) / max(float(central.std()), 1e-6)
    n = len(candidates)
    scores = []
    for i, (_, sentence) in enumerate(candidates):
        words = len(_WORD.findall(sentence))
        substance = 0.4 * min(words, 20) / 20 + 0.3 * bool(_DIGIT.search(sentence) or _WHEN.search(sentence))
        scores.append(float(z[i]) * 0.5 + substance + 0.2 * (i / max(n - 1, 1)))
    chosen: list[int] = []
    used = 0
    sims = vectors @ vectors.T
    while len(chosen) < min(max_sentences, n):
        best, best_value = -1, -1e9
        for i in range(n):
            if i in chosen:
                continue
            penalty = max((float(sims[i, j]) for j in chosen), default=0.0)
            # e5 similarities live in ~0.7..1: only the part above 0.8 counts as overlap.
            value = scores[i] - redundancy * 10 * max(0.0, penalty - 0.8)
            if value > best_value:
                best, best_value = i, value
        if used + len(candidates[best][1]) > max_chars and chosen:
            break
        chosen.append(best)
        used += len(candidates[best][1])
    return [
        SummaryLine(
            candidates[i][0].event_id,
            candidates[i][0].sender,
            candidates[i][0].ts,
            candidates[i][1],
            round(scores[i], 3),
        )
        for i in sorted(chosen)
    ]


def _names(members: Mapping[str, str | None]) -> dict[str, str]:
    """lowercase name -> user id: display names, their first word, and localparts."""
    out: dict[str, str] = {}
    for user, display in members.items():
        local = user[1:].split(":", 1)[0].lower()
        out.setdefault(local, user)
        if display:
            out.setdefault(display.lower(), user)
            out.setdefault(display.split()[0].lower(), user)
    return out


def _mentioned(sentence: str, line: ChatLine, names: Mapping[str, str]) -> list[str]:
    found = [m for m in _MXID.findall(sentence)]
    lowered = sentence.lower()
    for name, user in names.items():
        if re.search(r"(?<![\w@])@?" + re.escape(name) + r"(?!\w)", lowered) and user not in found:
            found.append(user)
    for user in line.mentions:
        if user not in found and user != line.sender:
            found.append(user)
    return [u for u in found if u != line.sender]


def _third_person(sentence: str, names: Mapping[str, str]) -> str | None:
    for m in _MXID.finditer(sentence):
        if re.match(_THIRD, sentence[m.end() :], re.IGNORECASE):
            return m.group(0)
    lowered = sentence.lower()
    for name, user in names.items():
        if re.search(r"(?<![\w])@?" + re.escape(name) + _THIRD, lowered):
            return user
    return None


def action_items(
    lines: Sequence[ChatLine], members: Mapping[str, str | None] | None = None
) -> list[ActionItem]:
    """Requests and commitments in `lines`, with owner and deadline when the text says them."""
    members = dict(members or {})
    for line in lines:
        members.setdefault(line.sender, None)
    names = _names(members)
    out = []
    for line in lines:
        for sentence in _SENTENCE.split(line.text.strip()):
            sentence = sentence.strip()
            if not sentence:
                continue
            when_match = _WHEN.search(sentence)
            when = when_match.group(0).strip() if when_match else None
            third = _third_person(sentence, names)
            if third is not None:
                out.append(ActionItem(line.event_id, line.sender, "commitment", third, sentence, when))
            elif _COMMIT.search(sentence):
                out.append(ActionItem(line.event_id, line.sender, "commitment", line.sender, sentence, when))
            elif _REQUEST.search(sentence):
                addressed = _mentioned(sentence, line, names)
                owner = addressed[0] if addressed else None
                if owner is None:
                    others = [u for u in members if u != line.sender]
                    owner = others[0] if len(others) == 1 else None
                out.append(ActionItem(line.event_id, line.sender, "request", owner, sentence, when))
    return out


def mentions_of(lines: Iterable[ChatLine], user_id: str, display_name: str | None = None) -> list[ChatLine]:
    """Lines that mention the user: m.mentions, their user id, or their display name as a word.
    Spec: https://spec.matrix.org/v1.12/client-server-api/#user-and-room-mentions"""
    pattern = re.compile(
        r"(?<![\w])(?:"
        + re.escape(user_id)
        + (r"|@?" + re.escape(display_name) if display_name else "")
        + r")(?!\w)",
        re.IGNORECASE,
    )
    return [
        line
        for line in lines
        if line.sender != user_id and (user_id in line.mentions or pattern.search(line.text))
    ]


def catch_up(
    lines: Sequence[ChatLine],
    embedder: Embedder,
    user_id: str,
    *,
    display_name: str | None = None,
    members: Mapping[str, str | None] | None = None,
    max_sentences: int = 8,
    max_chars: int = 1000,
    generator: TextGenerator | None = None,
) -> CatchUp:
    """Summary, action items and mentions for the (already unread-filtered) `lines`. Sentences that
    are action items are listed there and left out of the summary. With `generator`, also an
    abstractive summary (`abstract`), when the model writes a usable one."""
    senders = list(dict.fromkeys(line.sender for line in lines))
    actions = action_items(lines, members)
    skip = frozenset(a.what for a in actions)  # listed as action items: the summary covers the rest
    return CatchUp(
        unread=len(lines),
        summary=summarize(lines, embedder, max_sentences=max_sentences, max_chars=max_chars, skip=skip),
        actions=actions,
        mentions=mentions_of(lines, user_id, display_name),
        participants=senders,
        abstract=_abstract(generator, lines, user_id) if generator is not None else None,
    )


def _abstract(generator: TextGenerator, lines: Sequence[ChatLine], user_id: str) -> str | None:
    from nimbus.ai.llm_features import abstractive_summary

    return abstractive_summary(generator, lines, own_user=user_id) or None
