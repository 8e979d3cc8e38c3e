"""Chat-aware pre- and post-processing around a literal rule-based engine (Apertium).

Owns `prepare` (chat text -> what the engine should see) and `finish` (the engine's output -> the
translation shown), used by `ApertiumTranslator` for every pair. Rules:
- Nothing is lost: URLs, Matrix ids, @mentions, room aliases, #tags, e-mail addresses, emoji,
  emoticons, `code` spans, numbers and times, and text that looks like a placeholder are replaced by
  placeholders and put back verbatim: `[[pN]]`, or `9NNNN9` for a number (a number to the engine, so
  its grammar around it stays right; every digit of the message is protected, so any digits in the
  engine's input are ours). Both forms were checked to pass unchanged through every installed pair,
  sentence-initially and next to punctuation. A token the engine dropped anyway is appended at the
  end. A message with nothing to translate never reaches the engine. Emoji at the start or end of a
  message are cut off before and put back after.
- Normalisation is per source language, only where it is unambiguous in chat: abbreviation lists (en:
  u, pls, thx, tmrw, idk...; es: q, xq/pq, tb, x, porfa...), "i" -> "I", letters repeated three or more
  times squeezed, Spanish accents on words that have no unaccented reading and on question words that
  open a question. Fixed chat formulas ("see you tomorrow", "me encanta", "lol", "a las 10") go to the
  engine as placeholders carrying their translation.
- Clean-up: the engine's marks (# or @ before a word), doubled spaces, its stray capitals (case
  mirrors the source: a lower-case message stays lower-case), Spanish opening marks (¿ ¡) and a few
  systematic errors of Apertium (ser for estar; "Where you are?"; "Can help me?").
- Tuned only on bench/data/translation_chat.tsv and hand-made examples, never on the held-out sets.
- The word tables (abbreviations, chat formulas per pair, prepositions before times, irregular pasts,
  question words, ...) are data/translation_chat.json, read once at import; the rules are here.
- Pure functions on strings: no engine runs, no I/O but that one read, never logs text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

_L = "A-Za-zÀ-ÖØ-öø-ÿ"  # letters of the Latin-script languages of the installed pairs
_UP = "A-ZÀ-ÖØ-Þ"
_Q = "'\u2019"  # apostrophes: typewriter and typographic
_PH = re.compile(r"\[\[p(\d+)\]\]|(?<![\w.,])9(\d{4})9(?!\w)", re.I)
_EMO = (
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2300-\u23ff\u2b00-\u2bff\u2190-\u21ff\u3030\u303d\u3297"
    "\u3299\u203c\u2049\u2122\u2139\u24c2\u25aa-\u25fe\u2934\u2935]"
    "[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff\u20e3\U000e0020-\U000e007f]*"
)
EMOJI = rf"(?:[0-9#*]\ufe0f?\u20e3|{_EMO}(?:\u200d{_EMO})*)"
EMOTICON = r"(?<!\S)(?:[:;=][-o^']?[()\[\]DPpO3/\\|*]+|[xX][Dd]+|<3+|\^_?\^|-_-|T_T)(?![^\s.,!?])"
NUMBER = r"(?<![\w.,])[$€£¥+]?\w*\d(?:[\w.,:/%€°ºª'+-]*[\w%€°ºª])?(?:\s?[ap]\.?m\b\.?)?"
VERBATIM = re.compile(
    r"\[\[[^\[\]\n]{0,64}\]\]"  # the placeholder syntax itself, when a user typed it
    r"|```[\s\S]*?```|`[^`\n]+`"  # code
    r"|(?:(?:https?|ftp|matrix|mxc)://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]}'¿¡]"  # links
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail
    # user ids, room aliases and ids (https://spec.matrix.org/v1.12/appendices/#identifier-grammar)
    r"|[@#!][\w.=/+-]+:[\w.-]+(?::\d+)?|(?<![\w@#])[@#]\w[\w.-]*(?<![.-])"
    rf"|{EMOJI}|{EMOTICON}|{NUMBER}",
    re.I,
)
_LEAD = re.compile(rf"(?:\s*(?:{EMOJI}|{EMOTICON}))+\s*")
_TRAIL = re.compile(rf"(?<!\s)\s*(?:(?:{EMOJI}|{EMOTICON})\s*)+$")


_DATA = Path(__file__).resolve().parent / "data" / "translation_chat.json"


@cache
def _data() -> dict[str, Any]:
    """The word tables (data/translation_chat.json), read once."""
    data: dict[str, Any] = json.loads(_DATA.read_text(encoding="utf-8"))
    return data


def _pairs(tables: dict[str, dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    """{"en-es": table} -> {("en", "es"): table}"""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for key, table in tables.items():
        source, _, target = key.partition("-")
        out[(source, target)] = dict(table)
    return out


EN_ABBREV: dict[str, str] = dict(_data()["abbrev"]["en"])
# Spanish chat spellings; accents where the bare word does not exist
ES_ABBREV: dict[str, str] = dict(_data()["abbrev"]["es"])
_EN_DOUBLE: frozenset[str] = frozenset(_data()["en_double"])
_YOURE_NEXT: frozenset[str] = frozenset(_data()["youre_next"])
_DAYS: frozenset[str] = frozenset(_data()["days"])
_PAST: dict[str, str] = dict(_data()["past"])
_NUM_WORDS: str = "|".join(_data()["num_words"]["en"])
_ES_NUM_WORDS: str = "|".join(_data()["num_words"]["es"])
# Chat formulas, in the order tried (longer first): normalised source (a regex, case-insensitive, whole
# words) => the target's text. "^" marks one that counts only as a whole clause.
PHRASES: dict[tuple[str, str], dict[str, str]] = _pairs(_data()["phrases"])
_TIME = re.compile(r"\d{1,2}(?:[:.]\d\d)?\s?(?:[ap]\.?m\.?|h)?", re.I)
_TIME_WORDS = _pairs(_data()["time_preps"])
_TIME_PREPS = {  # a preposition before a clock time (Apertium: "en 5", "to the 10", "antes de que 8")
    ("en", "es"): (_TIME_WORDS[("en", "es")], "", _NUM_WORDS, r"(?: o'clock)?"),
    ("es", "en"): (_TIME_WORDS[("es", "en")], r" las?", _ES_NUM_WORDS, ""),
}


@dataclass
class Prepared:
    """One message made ready for the engine: `text` goes in; `finish` turns the output back."""

    source: str
    target: str
    original: str
    text: str = ""  # the engine's input
    masked: str = ""  # the source with its tokens as placeholders (for case alignment)
    normalised: str = ""  # ... and normalised (for clause alignment)
    lead: str = ""  # emoji cut from the start and end of the message, put back as they were
    trail: str = ""
    verbatim: list[str] = field(default_factory=list)
    phrases: dict[int, str] = field(default_factory=dict)  # placeholder number -> target text

    @property
    def empty(self) -> bool:
        """Nothing for the engine: no letters outside the placeholders."""
        return not re.search(f"[{_L}]", _PH.sub("", self.text))

    def placeholder(self, token: str, number: bool = False) -> str:
        self.verbatim.append(token)
        n = len(self.verbatim) - 1
        return f"9{n:04d}9" if number and n < 10_000 else f"[[p{n}]]"

    def phrase(self, out: str) -> str:
        n = len(self.verbatim) + len(self.phrases)
        self.phrases[n] = out
        return f"[[p{n}]]"

    def token(self, m: re.Match[str]) -> str | None:
        """The verbatim token behind a placeholder match, None for a phrase (or a stray match)."""
        n = int(m.group(1) or m.group(2))
        return self.verbatim[n] if n < len(self.verbatim) else None


def prepare(text: str, source: str, target: str) -> Prepared:
    """Chat text -> the engine's input (see the module docstring)."""
    prep = Prepared(source, target, text)
    lead, trail = _LEAD.match(text), _TRAIL.search(text)
    start = lead.end() if lead else 0
    end = trail.start() if trail and trail.start() > start else len(text)
    if text[start:end].strip():
        prep.lead, prep.trail, text = text[:start], text[end:], text[start:end]
    abbrev = {"en": EN_ABBREV, "es": ES_ABBREV}.get(source, {})

    def protect(m: re.Match[str]) -> str:
        token = m.group(0)
        if token.lower() in abbrev:
            return token  # "gr8", "b4", "salu2": chat words, expanded below
        return prep.placeholder(token, number=re.fullmatch(NUMBER, token) is not None)

    prep.masked = work = VERBATIM.sub(protect, text)
    work = _squeeze(work, source)
    if source == "en":
        work = _normalise_en(work)
    elif source == "es":
        work = _normalise_es(work)
    prep.normalised = work
    prep.text = _phrases(_times(work, prep), prep)
    return prep


def _squeeze(text: str, lang: str) -> str:
    def one(m: re.Match[str]) -> str:
        word = m.group(0)
        once = re.sub(rf"([{_L}])\1{{2,}}", r"\1", word)
        twice = re.sub(rf"([{_L}])\1{{2,}}", r"\1\1", word)
        if lang == "en" and twice.lower() in _EN_DOUBLE:
            return twice
        if lang == "es" and once.lower() == "si":
            return once[0] + "í"  # an elongated "si" is always the answer "sí"
        return once

    return re.sub(rf"[{_L}]*([{_L}])\1{{2,}}[{_L}]*", one, text)


def _sub_words(text: str, table: dict[str, str]) -> str:
    words = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))

    def one(m: re.Match[str]) -> str:
        word, out = m.group(1), table[m.group(1).lower()]
        return out[:1].upper() + out[1:] if word[:1].isupper() and len(word) > 1 else out

    return re.sub(rf"(?<![\w\[/{_Q}-])({words})(?![\w\]{_Q}-])", one, text, flags=re.I)


def _past(verb: str) -> str:
    low = verb.lower()
    if low in _PAST:
        return _PAST[low]
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ied"
    return verb + ("d" if low.endswith("e") else "ed")


def _interjection_comma(text: str, words: str) -> str:
    """ "hey r u there" -> "hey, r u there": the engine then keeps the interjection out of the clause."""
    return re.sub(rf"(^|[.!?\n]\s*)({words})(?= [{_L}¿¡\[])", r"\1\2,", text, flags=re.I)


def _normalise_en(text: str) -> str:
    text = _interjection_comma(text, r"hey|hi|hello|oh(?! my)|ok|okay|yeah|yes|yep|nope|lol|omg|guys|btw")
    text = re.sub(rf"(?<![\w.{_Q}])i(?=[{_Q}]|\b)(?![.\w])", "I", text)
    text = re.sub(r"\bur\b(?=\s+(\w+))", lambda m: "you're" if m.group(1).lower() in _YOURE_NEXT else "your",
                  text)  # fmt: skip
    text = _sub_words(text, EN_ABBREV)
    text = re.sub(rf"\b({'|'.join(_DAYS)})\b", lambda m: m.group(1).capitalize(), text)
    # "can you send..." -> "you can send...": Apertium gets the Spanish question right that way
    text = re.sub(r"(^|[,.!?]\s*|\n|\]\]\s+)(can|could) you\b", r"\1you \2", text, flags=re.I)
    # progressive of movement -> simple present (Apertium: "Eres yendo"; Spanish says "vas", "voy")
    place = r"(?= to (?:the|a|an|my|your|his|her|our|their|this|that|bed|school|work|class|church)\b"
    place += r"| home\b| there\b| out\b| back\b)"
    text = re.sub(rf"\bare (you|we|they) going{place}", r"do \1 go", text, flags=re.I)
    text = re.sub(rf"\b(I)(?:'m| am) going{place}", r"\1 go", text)
    text = re.sub(rf"\b(you|we|they)(?:'re| are) going{place}", r"\1 go", text, flags=re.I)
    text = re.sub(rf"\b(he|she|it)(?:'s| is) going{place}", r"\1 goes", text, flags=re.I)
    text = re.sub(r"\bare (you|we|they) coming\b", r"do \1 come", text, flags=re.I)
    text = re.sub(r"(^|[,.!?]\s*|\n)(you|we|they) (com|go)ing\b(?=[^.!?\n]*\?)",
                  lambda m: f"{m.group(1)}do {m.group(2)} {m.group(3).replace('com', 'come')}", text,
                  flags=re.I)  # fmt: skip
    # "did you see...?" -> "you saw...?" (Apertium: "Hizo u ver", or the present)
    return re.sub(r"\bdid (you|we|they|he|she|I) ([a-z]+)\b(?=[^.!?\n]*\?)",
                  lambda m: f"{m.group(1)} {_past(m.group(2))}", text, flags=re.I)  # fmt: skip


_ES_QWORDS: dict[str, str] = dict(_data()["es_qwords"])
_ES_STATE_ADJ = (  # what follows estar, never ser: a state, a gerund
    r"(?:bien|mal|list[oa]s?|cansad[oa]s?|ocupad[oa]s?|enferm[oa]s?|loc[oa]s?|rot[oa]s?|arreglad[oa]s?|"
    r"llen[oa]s?|abiert[oa]s?|cerrad[oa]s?|content[oa]s?|despiert[oa]s?|dormid[oa]s?|enfadad[oa]s?|"
    rf"preocupad[oa]s?|libres?|lejos|cerca|[{_L}]+(?:ando|iendo|yendo))\b"
)
_ES_STATE = rf"(?:(?:muy|tan|bastante|casi|ya|todavía)\s+)?{_ES_STATE_ADJ}"
_ES_PLACE = r"(?:aquí|allí|ahí|allá|acá|fuera|en|con)\b"


def _esta(word: str) -> str:
    return word[:-1] + "á" if word.lower() == "esta" else word[:-2] + "ás"


def _normalise_es(text: str) -> str:
    text = _interjection_comma(text, r"hola|oye|vale|ja(?:ja)+|je(?:je)+|ay|uf|buah|venga|ok|bueno")
    nouns = r"noche|mañana|tarde|semana|vez|mes|año|casa|gente|persona|cosas?|fotos?"
    text = re.sub(rf"(^|[,.!?¿]\s*|\n)(esta|estas)\b(?!\s+(?:{nouns})\b)(?=[^.!?\n]*\?)",
                  lambda m: m.group(1) + _esta(m.group(2)), text, flags=re.I)  # fmt: skip
    text = re.sub(r"\b(xq|pq|porq|por que)\b(?=[^.!?\n]*\?)", "por qué", text, flags=re.I)
    text = re.sub(r"\b(xq|pq)\b", "porque", text, flags=re.I)
    text = _sub_words(text, ES_ABBREV)
    text = re.sub(r"(?<=\w{2})ion\b", "ión", text)
    text = re.sub(r"(?<=\w{2})isim([oa]s?)\b", r"ísim\1", text)
    text = re.sub(r"\bque tal\b", "qué tal", text, flags=re.I)
    text = re.sub(r"\bcomo est(a|as|ais|an)\b", lambda m: "cómo est" + {"a": "á", "as": "ás", "ais": "áis",
                  "an": "án"}[m.group(1).lower()], text, flags=re.I)  # fmt: skip
    text = re.sub(r"\bno se\b(?=\s*(?:$|[,.!?]|qu|c[oó]mo|d[oó]nde|cu[aá]ndo|nada|si\b|ni\b|eso\b))", "no sé",
                  text, flags=re.I)  # fmt: skip
    text = re.sub(rf"\b(sé|sabes|sabe|sabemos|saben|idea de) que (?=[{_L}]+(?:ar|er|ir)\b)", r"\1 qué ", text)
    text = re.sub(r"\b(tú|tu|ya|dónde|donde|cómo) (esta|estas)\b",
                  lambda m: f"{m.group(1)} {_esta(m.group(2))}", text, flags=re.I)  # fmt: skip
    after = rf"(?:muy\b|tan\b|sin\b|{_ES_PLACE}|{_ES_STATE_ADJ})"
    text = re.sub(rf"\b(esta|estas)\b(?=\s+{after})", lambda m: _esta(m.group(1)), text, flags=re.I)
    text = re.sub(r"(?:^|(?<=[,.!?¡¿]\s))si\b(?=\s*(?:$|[,!.]))|(?<=\w )si(?=\s*(?:$|[,.!?]))", "sí", text)
    starts = r"((?:^|[.!?\n]\s*|(?:hola|oye|bueno|vale|y|pero|entonces),?\s+)¿?\s*)"
    text = re.sub(starts + r"(\w+)(?=[^.!?\n]*\?)", lambda m: m.group(1) + _ES_QWORDS.get(m.group(2).lower(),
                  m.group(2)), text, flags=re.I)  # fmt: skip
    keep = "bien|mal|bueno|buena|guay|pena|rollo|asco|horror|susto|raro|bonito|bonita|rico|suerte|ganas|tal|"
    keep += "hora|miedo|risa|sueño|hambre|haces|dices|quieres|opinas|piensas|pasa|pasó|fuerte"
    return re.sub(rf"((?:^|[.!?\n]\s*)[¡¿]?)que\b(?=\s+(?:{keep})\b)", r"\1qué", text, flags=re.I)


def _times(text: str, prep: Prepared) -> str:
    if (prep.source, prep.target) not in _TIME_PREPS:
        return text
    preps, article, words, tail = _TIME_PREPS[(prep.source, prep.target)]
    names = "|".join(sorted(preps, key=len, reverse=True))
    ph = r"\[\[p(\d+)\]\]|(?<![\w.,])9(\d{4})9"

    def one(m: re.Match[str]) -> str:
        time = time_word = m.group(2)
        if m.group(3) or m.group(4):
            n = int(m.group(3) or m.group(4))
            time_word = prep.verbatim[n] if n < len(prep.verbatim) else ""
            if not _TIME.fullmatch(time_word):
                return m.group(0)
        out = preps[m.group(1).lower()]
        if prep.target == "es" and re.match(r"(?:one|1)(?!\d)", time_word, re.I):
            out = out[:-1]  # "a la una", "a la 1:30"
        return f"{prep.phrase(out)} {time}"

    pattern = rf"\b({names}){article} ({ph}|(?:{words})\b){tail}(?![\w\]])"
    return re.sub(pattern, one, text, flags=re.I)


def _phrase_for(prep: Prepared, out: str, _m: re.Match[str]) -> str:
    return prep.phrase(out)


def _phrases(text: str, prep: Prepared) -> str:
    table = PHRASES.get((prep.source, prep.target), {})
    for key, out in table.items():
        body = key.lstrip("^")
        if key.startswith("^"):
            pattern = rf"(?:(?<=^)|(?<=[,.!?;:¿¡]\s)|(?<=[,.!?;:¿¡])|(?<=\n)){body}(?=\s*(?:$|[,.!?;:]))"
        else:
            pattern = rf"(?<![\w{_Q}\[]){body}(?![\w{_Q}\]])"
        text = re.sub(pattern, partial(_phrase_for, prep, out), text, flags=re.I | re.M)
    return text


def _sentences(text: str) -> list[tuple[int, int]]:
    """Spans of sentences (split after . ! ? … and at line breaks)."""
    spans, start = [], 0
    for m in re.finditer(r"(?<=[.!?…])\s+|\n+", text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _first_letter(text: str, a: int, b: int) -> int | None:
    m = re.search(rf"[{_L}]", re.sub(r"\[\[p\d+\]\]", lambda p: " " * len(p.group(0)), text[a:b]))
    return a + m.start() if m else None


def _fix_case(out: str, prep: Prepared) -> str:
    """Sentence starts as in the source; capitals the engine put inside sentences lowered (unless the
    source has capitals inside its sentences: names, which the engine may have translated)."""
    src = prep.masked
    src_spans, out_spans = _sentences(src), _sentences(out)
    found: list[bool | None] = []
    for a, b in src_spans:
        i = _first_letter(src, a, b)
        pronoun = i is not None and prep.source == "en" and re.match(r"I\b", src[i:]) is not None
        found.append(None if pronoun else i is not None and src[i].islower())
    if not found:
        return out
    known = [f for f in found if f is not None]  # "I ..." says nothing: then a final full stop does
    default = known[0] if known else not src.rstrip().endswith(".")
    lower_starts = [default if f is None else f for f in found]
    inner = {w for w in re.findall(rf"(?<=[{_L},;:]\s)[{_UP}][{_L}]*", _PH.sub(" ", src)) if w != "I"}
    words = set(re.findall(rf"[{_L}]+", prep.original))
    chars = list(out)
    for k, (a, b) in enumerate(out_spans):
        lower = lower_starts[k] if len(out_spans) == len(src_spans) else lower_starts[0]
        i = _first_letter(out, a, b)
        if i is not None and not (prep.target == "en" and re.match(r"I\b", out[i:])):
            chars[i] = chars[i].lower() if lower else chars[i].upper()
        for m in re.finditer(rf"(?<=[{_L}\d,;:\]]\s)[{_UP}][a-zß-öø-ÿ]*", out[a:b]) if not inner else ():
            word = m.group(0)
            if word not in words and not (prep.target == "en" and (word == "I" or word.lower() in _DAYS)):
                chars[a + m.start()] = chars[a + m.start()].lower()
    return "".join(chars)


_SER: dict[str, str] = dict(_data()["ser_estar"])


def _fix_es(out: str) -> str:
    def estar(m: re.Match[str]) -> str:
        new = _SER[m.group(1).lower()]
        return (new.capitalize() if m.group(1)[0].isupper() else new) + m.group(2)

    persons = "soy|eres|somos|sois|seré|serás|seremos"
    out = re.sub(rf"\b({persons}|es|son|será|serán)(\s+)(?={_ES_STATE})", estar, out, flags=re.I)
    out = re.sub(rf"\b({persons})(\s+)(?={_ES_PLACE})", estar, out, flags=re.I)
    out = re.sub(rf"(?<!de )(?<=[Dd]ónde |[Dd]onde )({persons}|son)(\b)", estar, out)
    out = re.sub(r"\b(?:[Ee]stoy|[Ss]oy) (?:corriendo )?tarde\b", "llego tarde", out)
    out = re.sub(r"\b(en|a|de|la|el|que) \1\b", r"\1", out, flags=re.I)
    out = re.sub(r"\b(sé|sabes|sabe|sabemos|saben|saber|idea de) (donde|cuando|como)\b",
                 lambda m: f"{m[1]} {_ES_QWORDS[m[2]]}", out)  # fmt: skip
    if not re.search(r"\w(?:áis|éis|ís)\b", out):  # no vosotros verb: "your" was one person's
        out = re.sub(r"\b([Vv])uestr[oa](s?)\b", lambda m: ("T" if m[1] == "V" else "t") + "u" + m[2], out)
    return out


_QSTART: dict[str, str] = {  # words that open a question clause, per source language (for where ¿ goes)
    lang: "|".join(words) for lang, words in _data()["question_starts"].items()
}


def _inverted(out: str, prep: Prepared) -> str:
    """Spanish opening marks: ¿ at the start of the question's clause, ¡ at the exclamation's start."""
    src_spans, out_spans = _sentences(prep.normalised), _sentences(out)
    for k in range(len(out_spans) - 1, -1, -1):
        a, b = out_spans[k]
        sentence = out[a:b]
        tail = re.search(r"([?!])\1{0,2}(?=[\s\[\]p\d]*$)", sentence)
        if tail is None or ("¿" if tail.group(1) == "?" else "¡") in sentence:
            continue
        at = 0
        for m in _PH.finditer(sentence):  # after leading @mentions (vocatives)
            if sentence[at : m.start()].strip() or not (prep.token(m) or "").startswith("@"):
                break
            at = m.end() + len(sentence[m.end() :]) - len(sentence[m.end() :].lstrip())
        if tail.group(1) == "?" and len(src_spans) == len(out_spans) and prep.source in _QSTART:
            clauses = prep.normalised[src_spans[k][0] : src_spans[k][1]].split(",")
            starts = rf"\s*¿?(?:{_QSTART[prep.source]})\b"
            first_q = next((i for i, c in enumerate(clauses) if re.match(starts, c, re.I)), 0)
            commas = [m.end() for m in re.finditer(r",\s*", sentence)]
            if 0 < first_q and len(commas) == len(clauses) - 1:
                at = commas[first_q - 1]
        mark = ("¿" if tail.group(1) == "?" else "¡") * len(tail.group(0))
        word = re.match(r"\w+", out[a + at :])  # the word opening a question asks: "¿como?" -> "¿cómo?"
        if mark[0] == "¿" and word and word.group(0) in _ES_QWORDS and word.group(0) != "que":
            out = out[: a + at] + _ES_QWORDS[word.group(0)] + out[a + at + word.end() :]
        out = out[: a + at] + mark + out[a + at :]
    return out


def _fix_en(out: str) -> str:
    out = re.sub(r"[¿¡]", "", out)
    out = re.sub(r"\b(where|how|what|who|when|why)\s+(you|we|they)\s+(are|were)(?=\s*\?)", r"\1 \3 \2", out,
                 flags=re.I)  # fmt: skip
    out = re.sub(r"\b(where|how|what|who|when|why)\s+(he|she|it)\s+(is|was)(?=\s*\?)", r"\1 \3 \2", out,
                 flags=re.I)  # fmt: skip
    out = re.sub(r"\bthe (Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b", r"on \1", out)
    out = re.sub(r"\bwhy no\b", "why not", out, flags=re.I)
    out = re.sub(r"\b(the|to|in|a|at) \1\b", r"\1", out, flags=re.I)
    aux = rf"(?:are|were|can|could|will|would|should|shall|have|had|do|did|must|may|might|[{_Q}]\w+)\b"
    pron = r"(?:you|I|we|they|he|she|it|this|that|there|the|a|an|my|your|his|her|our|their)\b"
    out = re.sub(r"\b(please )(\w+?(?:ch|sh|ss|x|o))es\b|\b(please )(\w+?[^s])s\b",
                 lambda m: (m.group(1) or m.group(3)) + (m.group(2) or m.group(4)), out,
                 flags=re.I)  # fmt: skip

    def question(m: re.Match[str]) -> str:  # Apertium keeps Spanish word order: "you are free?"
        q = re.sub(r"\b(where|how|what|when|why|who)\s+(you|we|they)\s+do not\b", r"\1 don't \2", m.group(0),
                   flags=re.I)  # fmt: skip
        q = re.sub(rf"\b(where|how|what|when|why)\s+(you|we|they)\s+(?!{aux})(?=[a-z]+\b)", r"\1 do \2 ", q,
                   flags=re.I)  # fmt: skip
        for lead in (r"^(\s*(?:\[\[p\d+\]\]\s*)*)", r"^(.*,\s*)"):  # the sentence's start, its last clause
            q = re.sub(lead + r"(you|we|they) (are|were|can|could|will|would|should)\b", r"\1\3 \2", q,
                       flags=re.I)  # fmt: skip
            q = re.sub(lead + r"(he|she|it) (is|was)\b", r"\1\3 \2", q, flags=re.I)
            q = re.sub(lead + rf"(you|we|they)(\s+)(?!{aux})(?=[a-z]+\b(?<!ed))",
                       lambda m: f"{m.group(1)}{'shall' if m.group(2).lower() == 'we' else 'do'} {m.group(2)}"
                       f"{m.group(3)}", q, flags=re.I)  # fmt: skip
            q = re.sub(lead + rf"(can|could|will|would|are)(\s+)(?!{pron})(?=[a-z]+\b)", r"\1\2 you\3", q,
                       flags=re.I)  # fmt: skip
        return q

    return re.sub(r"(?:^|(?<=[.!?\n]))[^.!?\n]*\?", question, out)


def finish(prep: Prepared, output: str) -> str:
    """The engine's output for `prep.text` -> the translation shown to the user."""
    out = re.sub(r"(?<![\w@#\[])[#@](?=\w)", "", output)  # Apertium's marks (a user's were protected)
    out = _PH.sub(lambda m: prep.phrases.get(int(m.group(1) or -1), m.group(0)), out)
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r"[ \t]+([,.!?;:])", r"\1", out)
    out = "\n".join(line.strip() for line in out.strip().split("\n"))
    if prep.target == "es":
        out = _fix_es(out)
    elif prep.target == "en":
        out = _fix_en(out)
    out = _fix_case(out, prep)
    if prep.target == "es":
        out = _inverted(out, prep)
    used: set[int] = set()

    def restore(m: re.Match[str]) -> str:
        token = prep.token(m)
        if token is None:
            return m.group(0)
        used.add(int(m.group(1) or m.group(2)))
        return token

    out = _PH.sub(restore, out)
    missing = [t for n, t in enumerate(prep.verbatim) if n not in used]
    if missing:  # the engine dropped a token: never lose it
        out = " ".join([out, *missing]).strip()
    return prep.lead + out + prep.trail
