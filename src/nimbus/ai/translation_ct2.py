"""Neural translation on CTranslate2 + sentencepiece, and routing each language pair to an engine.

Owns: `CTranslate2Translator` (a `Translator` on one installed model: an Opus-MT model converted at
install time, or an Argos Translate model) and `RoutingTranslator` (several engines behind one
`Translator`, each pair going to the first engine that has it). Rules:
- Models are loaded from the models directory only (see nimbus.ai.models), lazily on the first
  translation, on the CPU with int8 compute, inter_threads=1 and intra_threads=2 (a 2-core machine
  also runs the client). Nothing here opens a network connection.
- Text is tokenized with the model's sentencepiece model(s); each line of a message is translated on
  its own (Marian models are trained on single sentences/lines) and empty lines are kept.
- Batches: `translate_many` sends up to `batch_size` lines per CTranslate2 call.
- Message text is never logged; an error names the model, never the text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nimbus.ai.interfaces import CapabilityMissing, Translator
from nimbus.types.errors import NimbusError

_SPECIAL = frozenset({"</s>", "<s>", "<pad>", "<unk>"})


class CTranslate2Translator:
    """`Translator` on one installed CTranslate2 model folder (with its nimbus-model.json manifest)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        pairs: Iterable[tuple[str, str]] | None = None,
        batch_size: int = 16,
        beam_size: int = 2,
    ) -> None:
        from nimbus.ai.models import MANIFEST, read_manifest

        self.model_dir = Path(model_dir)
        manifest = read_manifest(self.model_dir) if (self.model_dir / MANIFEST).is_file() else None
        self._details: dict[str, Any] = dict(manifest.details) if manifest is not None else {}
        self._pairs = sorted(set(pairs) if pairs is not None else set(manifest.languages if manifest else ()))
        label = manifest.name if manifest is not None else self.model_dir.name
        self.name = f"ctranslate2:{label}"
        self.batch_size = batch_size
        self.beam_size = beam_size
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, Any] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def _load(self) -> tuple[Any, Any, Any]:
        with self._lock:
            if self._loaded is None:
                import ctranslate2  # type: ignore[import-untyped]
                import sentencepiece

                d = self._details
                model = self.model_dir / str(d.get("main", "model"))
                source_spm = self.model_dir / str(d.get("source_spm", "source.spm"))
                target_spm = self.model_dir / str(d.get("target_spm", "target.spm"))
                engine = ctranslate2.Translator(
                    str(model), device="cpu", compute_type="int8", inter_threads=1, intra_threads=2
                )
                source = sentencepiece.SentencePieceProcessor(model_file=str(source_spm))
                target = (
                    source
                    if target_spm == source_spm
                    else sentencepiece.SentencePieceProcessor(model_file=str(target_spm))
                )
                self._loaded = (engine, source, target)
            return self._loaded

    def loaded(self) -> bool:
        return self._loaded is not None

    def _check(self, source: str, target: str) -> None:
        if (source, target) not in self._pairs:
            raise CapabilityMissing(
                f"{self.name} does not translate {source}->{target} "
                f"(install a model for it: nimbus ai install SOURCE)"
            )

    def translate(self, text: str, source: str, target: str) -> str:
        return self.translate_many([text], source, target)[0]

    def translate_many(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """Translations of `texts`, in order; all lines of all texts go through in batches."""
        self._check(source, target)
        lines: list[str] = []
        shape: list[list[int | None]] = []  # per text: per line, the index in `lines` (None: empty)
        for text in texts:
            row: list[int | None] = []
            for line in text.split("\n"):
                if line.strip():
                    row.append(len(lines))
                    lines.append(line.strip())
                else:
                    row.append(None)
            shape.append(row)
        done = self._translate_lines(lines) if lines else []
        return ["\n".join(done[i] if i is not None else "" for i in row).strip() for row in shape]

    def _translate_lines(self, lines: list[str]) -> list[str]:
        engine, source, target = self._load()
        limit = int(self._details.get("max_positions", 512)) - 1  # the model's position table
        out: list[str] = []
        for start in range(0, len(lines), self.batch_size):
            chunk = lines[start : start + self.batch_size]
            tokens = [source.encode(line, out_type=str) for line in chunk]
            try:
                results = engine.translate_batch(
                    tokens,
                    beam_size=self.beam_size,
                    max_batch_size=self.batch_size,
                    max_input_length=limit,
                    max_decoding_length=min(limit, 2 * max(len(t) for t in tokens) + 10),
                    replace_unknowns=True,
                )
            except (RuntimeError, ValueError) as exc:
                raise NimbusError(f"{self.name} failed to translate: {type(exc).__name__}") from exc
            for result, given in zip(results, tokens, strict=True):  # a runaway decode is cut
                pieces = [p for p in result.hypotheses[0][: 2 * len(given) + 10] if p not in _SPECIAL]
                out.append(str(target.decode_pieces(pieces)).strip())
        return out


class RoutingTranslator:
    """Several translators as one: each pair goes to the first engine (in the given order) that has it."""

    def __init__(self, engines: Sequence[Translator]) -> None:
        self.engines = list(engines)
        self.name = "+".join(e.name for e in self.engines) or "none"

    def pairs(self) -> list[tuple[str, str]]:
        return sorted({p for e in self.engines for p in e.pairs()})

    def engine_for(self, source: str, target: str) -> Translator:
        for engine in self.engines:
            if (source, target) in engine.pairs():
                return engine
        raise CapabilityMissing(
            f"no {source}->{target} translation is installed: install a neural model with "
            f"`nimbus ai install hf:Helsinki-NLP/opus-mt-{source}-{target}@REVISION --sha256 ...` "
            "(or a local Opus-MT folder / .argosmodel file), or an Apertium pair (apt-cache search apertium)"
        )

    def translate(self, text: str, source: str, target: str) -> str:
        return self.engine_for(source, target).translate(text, source, target)

    def translate_many(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        engine = self.engine_for(source, target)
        many = getattr(engine, "translate_many", None)
        if many is not None:
            return list(many(texts, source, target))
        return [engine.translate(t, source, target) for t in texts]
