"""The small interfaces every on-device AI backend implements, and how features find one.

Rules for everything under nimbus.ai:
- Nothing here opens a network connection. Models load from local files or from Python packages
  that ship their weights; `nimbus ai install` (a later step) is the only path that may download,
  only when the user asks, and never with message content.
- Backends read decrypted events handed to them by the client; they never see crypto internals.
- Whatever a feature keeps on disk (caches, embeddings, indexes) is plaintext-derived and goes
  through the store's encryption at rest.
- A missing capability is a clear `CapabilityMissing` naming what to install, never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nimbus.types.errors import NimbusError


class CapabilityMissing(NimbusError):
    """A feature needs a backend that is not installed; the message says what to install."""


@dataclass(frozen=True)
class LanguageGuess:
    language: str  # ISO 639-1 code, e.g. "en"
    confidence: float  # 0..1


@runtime_checkable
class LanguageIdentifier(Protocol):
    name: str

    def identify(self, text: str) -> LanguageGuess | None:
        """The language of `text`, or None when too unsure (e.g. "ok", emoji only)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    name: str
    dimensions: int

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        """Unit-length vectors, one per text. `query` marks search queries (asymmetric models)."""
        ...


@runtime_checkable
class Translator(Protocol):
    name: str

    def pairs(self) -> list[tuple[str, str]]:
        """The (source, target) ISO 639-1 pairs this engine can translate."""
        ...

    def translate(self, text: str, source: str, target: str) -> str: ...


@runtime_checkable
class TextGenerator(Protocol):
    name: str

    def generate(self, prompt: str, *, max_tokens: int = 128) -> str: ...
