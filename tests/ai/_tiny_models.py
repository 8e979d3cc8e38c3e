"""Tiny models the model-management tests build themselves (nothing is downloaded).

- `tiny_marian(folder)`: a random-weight Hugging Face Marian folder laid out like an Opus-MT model
  (config.json, model.safetensors, source.spm, target.spm, vocab.json, tokenizer_config.json), with
  sentencepiece models trained here on generated sentences. The end-of-sentence logit is pushed down
  so that the random model produces non-empty output.
- `tiny_gguf(path)`: a valid GGUF v3 header with a little metadata and no tensors.
- `argos_zip(ct2_dir, spm, path)`: an .argosmodel (zip) around a CTranslate2 model.
"""

from __future__ import annotations

import json
import random
import struct
import zipfile
from pathlib import Path

import numpy as np

D_MODEL = 16
FFN = 32
MAX_POS = 64

_EN = "the a cat dog house car tree water eats sees runs big small red green today now we you they".split()
_DE = "der die das katze hund haus auto baum wasser isst sieht läuft groß klein rot grün heute wir".split()


def _sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _train_spm(prefix: Path, lines: list[str], vocab_size: int) -> None:
    import sentencepiece as spm

    corpus = prefix.with_suffix(".txt")
    corpus.write_text("\n".join(lines) + "\n", "utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=0,
        unk_id=1,
        minloglevel=2,
    )
    corpus.unlink()


def tiny_marian(folder: Path, *, source: str = "en", target: str = "de", seed: int = 7) -> Path:
    """Write a tiny random Marian model into `folder` (created) and return it."""
    import sentencepiece as spm
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    work = folder / "_spm"
    work.mkdir()
    _train_spm(work / "source", _sentences(_EN, 400, seed), 120)
    _train_spm(work / "target", _sentences(_DE, 400, seed + 1), 120)
    pieces: list[str] = ["</s>", "<unk>"]
    for side in ("source", "target"):
        proc = spm.SentencePieceProcessor(model_file=str(work / f"{side}.model"))
        for i in range(proc.get_piece_size()):
            piece = proc.id_to_piece(i)
            if piece not in pieces and not proc.is_control(i) and not proc.is_unknown(i):
                pieces.append(piece)
        (work / f"{side}.model").rename(folder / f"{side}.spm")
        (work / f"{side}.vocab").unlink()
    work.rmdir()
    pieces.append("<pad>")
    vocab = {p: i for i, p in enumerate(pieces)}
    v = len(pieces)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    config = {
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        "d_model": D_MODEL,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": FFN,
        "decoder_ffn_dim": FFN,
        "vocab_size": v,
        "max_position_embeddings": MAX_POS,
        "activation_function": "swish",
        "scale_embedding": True,
        "normalize_before": False,
        "pad_token_id": v - 1,
        "eos_token_id": 0,
        "decoder_start_token_id": v - 1,
        "share_encoder_decoder_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config), "utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"source_lang": source, "target_lang": target}), "utf-8"
    )
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    t: dict[str, np.ndarray] = {}
    shared = rand(v, D_MODEL)
    shared[v - 1] = 0.0  # the pad row, as in trained Marian models
    t["model.shared.weight"] = shared
    bias = np.zeros((1, v), dtype=np.float32)
    bias[0, 0] = -8.0  # </s> unlikely: random output is non-empty
    t["final_logits_bias"] = bias
    for side in ("encoder", "decoder"):
        attns = ["self_attn"] + (["encoder_attn"] if side == "decoder" else [])
        p = f"model.{side}.layers.0"
        for attn in attns:
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                t[f"{p}.{attn}.{proj}.weight"] = rand(D_MODEL, D_MODEL)
                t[f"{p}.{attn}.{proj}.bias"] = rand(D_MODEL)
            t[f"{p}.{attn}_layer_norm.weight"] = 1.0 + rand(D_MODEL)
            t[f"{p}.{attn}_layer_norm.bias"] = rand(D_MODEL)
        t[f"{p}.fc1.weight"] = rand(FFN, D_MODEL)
        t[f"{p}.fc1.bias"] = rand(FFN)
        t[f"{p}.fc2.weight"] = rand(D_MODEL, FFN)
        t[f"{p}.fc2.bias"] = rand(D_MODEL)
        t[f"{p}.final_layer_norm.weight"] = 1.0 + rand(D_MODEL)
        t[f"{p}.final_layer_norm.bias"] = rand(D_MODEL)
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def tiny_gguf(path: Path, *, version: int = 3) -> Path:
    """A GGUF file with a valid header, two metadata strings and no tensors."""

    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    kvs = [("general.architecture", "llama"), ("general.name", "tiny test model")]
    body = b"GGUF" + struct.pack("<IQQ", version, 0, len(kvs))
    for key, value in kvs:
        body += string(key) + struct.pack("<I", 8) + string(value)  # 8: GGUF string type
    path.write_bytes(body)
    return path


def argos_zip(ct2_dir: Path, spm_model: Path, path: Path, *, source: str = "en", target: str = "de") -> Path:
    """An .argosmodel: one top folder with metadata.json, model/ (CTranslate2), sentencepiece.model."""
    top = f"translate-{source}_{target}-1_0"
    meta = {"package_version": "1.0", "argos_version": "1.0", "from_code": source, "to_code": target}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{top}/metadata.json", json.dumps(meta))
        for f in sorted(ct2_dir.iterdir()):
            z.write(f, f"{top}/model/{f.name}")
        z.write(spm_model, f"{top}/sentencepiece.model")
    return path
