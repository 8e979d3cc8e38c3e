"""Chat translation quality of nimbus's default (Apertium + the chat-aware layer) against raw Apertium.

Run: .venv/bin/python bench/translation_eval.py
Sets (hand-written for nimbus, see their headers): bench/data/translation_chat.tsv (30 short messages,
both directions; the only set the layer nimbus.ai.translation_chat was tuned on) and the held-out sets
bench/data/translation_chat_heldout.tsv (chat English -> Spanish reference, en->es) and
translation_chat_heldout_es.tsv (chat Spanish -> English reference, es->en), written before the layer
and never tuned on, but by the layer's author; and translation_chat_fresh.tsv (60 lines each way),
written after the layer by someone who had seen neither it nor the other sets, measured once.
Figures per set and direction: corpus chrF and BLEU (sacrebleu==2.6.0, default settings: case-sensitive)
of raw Apertium (`ApertiumTranslator(chat_aware=False)`, the baseline) and of the chat-aware default,
their ratio (chat / raw), p50 latency of one message through each (one engine run per message, as a
message arrives; mostly Apertium's start-up, noisy on a busy machine), p50 of the layer's own work
(prepare + finish, no engine), and how many messages lost a URL, mention, emoji, number or code span.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SETS = (  # (set, file, source, target, column of the source)
    ("tuning", "translation_chat.tsv", "en", "es", 0),
    ("tuning", "translation_chat.tsv", "es", "en", 1),
    ("heldout", "translation_chat_heldout.tsv", "en", "es", 0),
    ("heldout", "translation_chat_heldout_es.tsv", "es", "en", 0),
    # written by someone who had seen neither the layer nor the other sets: "<dir> TAB <src> TAB <ref>"
    ("fresh", "translation_chat_fresh.tsv", "en", "es", 0),
    ("fresh", "translation_chat_fresh.tsv", "es", "en", 0),
)


def _rows(name: str, source: str, target: str) -> list[list[str]]:
    text = (DATA / name).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if rows and len(rows[0]) == 3:  # a set of both directions: keep this one's, without the column
        return [r[1:] for r in rows if r[0] == f"{source}-{target}"]
    return rows


def _p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _lost(source: str, output: str) -> bool:
    """Whether a token that must pass unchanged (URL, mention, room, emoji, number, code) is missing.
    Chat words written with digits ("salu2", "gr8") are meant to be translated, not kept."""
    from nimbus.ai.translation_chat import EN_ABBREV, ES_ABBREV, VERBATIM

    kept = (m.group(0) for m in VERBATIM.finditer(source))
    return any(t not in output for t in kept if t.lower() not in EN_ABBREV and t.lower() not in ES_ABBREV)


def eval_translation_chat() -> dict[str, object]:
    """chrF/BLEU of raw Apertium vs the chat-aware default, per set and direction (see the docstring)."""
    import sacrebleu  # bench-only dependency: sacrebleu==2.6.0

    from nimbus.ai import translation_chat
    from nimbus.ai.translation import ApertiumTranslator

    engines = {"raw": ApertiumTranslator(chat_aware=False), "chat": ApertiumTranslator()}
    out: dict[str, object] = {}
    for name, file, source, target, col in SETS:
        data = _rows(file, source, target)
        texts, refs = [r[col] for r in data], [r[1 - col] for r in data]
        tag = f"translation_chat_{name}_{source}_{target}"
        out[f"{tag}_messages"] = len(texts)
        for kind, engine in engines.items():
            hyps, times = [], []
            for text in texts:
                t0 = time.perf_counter()
                hyps.append(engine.translate(text, source, target))
                times.append((time.perf_counter() - t0) * 1000)
            out[f"{tag}_{kind}_chrf"] = round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
            out[f"{tag}_{kind}_bleu"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
            out[f"{tag}_{kind}_p50_ms"] = round(_p50(times), 1)
            out[f"{tag}_{kind}_messages_losing_tokens"] = sum(
                _lost(t, h) for t, h in zip(texts, hyps, strict=True)
            )
        layer = []
        for text in texts:
            t0 = time.perf_counter()
            prepared = translation_chat.prepare(text, source, target)
            translation_chat.finish(prepared, prepared.text)
            layer.append((time.perf_counter() - t0) * 1000)
        out[f"{tag}_layer_only_p50_ms"] = round(_p50(layer), 2)
        for metric in ("chrf", "bleu"):
            raw, chat = out[f"{tag}_raw_{metric}"], out[f"{tag}_chat_{metric}"]
            assert isinstance(raw, float) and isinstance(chat, float)
            out[f"{tag}_{metric}_ratio"] = round(chat / raw, 3) if raw else None
    return out


def main() -> None:
    figures = eval_translation_chat()
    for key, value in figures.items():
        if re.search(r"_(chrf|bleu)$", key):
            print(f"{key:55} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
