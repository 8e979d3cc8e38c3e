"""The CTranslate2 translator and the Marian conversion, on a tiny random model built here.

The conversion is checked against a plain numpy implementation of Marian's forward pass (greedy
decoding, float32): if a weight were mapped wrong (q/k/v order, transposes, positions, embedding
scale, output bias), the tokens would differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ctranslate2  # type: ignore[import-untyped]
import numpy as np
import pytest
import sentencepiece
from safetensors.numpy import load_file

from nimbus.ai.interfaces import CapabilityMissing, Translator
from nimbus.ai.marian_ct2 import convert_marian, marian_positions
from nimbus.ai.models import install
from nimbus.ai.translation_ct2 import CTranslate2Translator, RoutingTranslator

from ._tiny_models import tiny_marian


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_marian(tmp_path_factory.mktemp("hf") / "opus-mt-en-de")


@pytest.fixture
def installed(marian: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    return install(marian).path


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> Any:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def _attn(t: dict[str, np.ndarray], p: str, xq: np.ndarray, xkv: np.ndarray, causal: bool) -> Any:
    heads = 2
    q = xq @ t[f"{p}.q_proj.weight"].T + t[f"{p}.q_proj.bias"]
    k = xkv @ t[f"{p}.k_proj.weight"].T + t[f"{p}.k_proj.bias"]
    v = xkv @ t[f"{p}.v_proj.weight"].T + t[f"{p}.v_proj.bias"]
    dh = q.shape[-1] // heads
    out = []
    for h in range(heads):
        s = slice(h * dh, (h + 1) * dh)
        scores = q[:, s] @ k[:, s].T / np.sqrt(dh)
        if causal:
            scores = scores + np.triu(np.full(scores.shape, -1e9), 1)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        out.append((w / w.sum(-1, keepdims=True)) @ v[:, s])
    return np.concatenate(out, -1) @ t[f"{p}.out_proj.weight"].T + t[f"{p}.out_proj.bias"]


def _ffn(t: dict[str, np.ndarray], p: str, x: np.ndarray) -> Any:
    h = x @ t[f"{p}.fc1.weight"].T + t[f"{p}.fc1.bias"]
    h = h / (1 + np.exp(-h))  # swish
    return h @ t[f"{p}.fc2.weight"].T + t[f"{p}.fc2.bias"]


def _reference_greedy(folder: Path, source_ids: list[int], steps: int) -> list[int]:
    """Marian (transformers' MarianMTModel) greedy decoding, written out in numpy."""
    t = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    d, pad = config["d_model"], config["pad_token_id"]
    emb, pos = t["model.shared.weight"], marian_positions(config["max_position_embeddings"], d)
    x = emb[source_ids] * np.sqrt(d) + pos[: len(source_ids)]
    e = "model.encoder.layers.0"
    x = _ln(x + _attn(t, f"{e}.self_attn", x, x, False), t[f"{e}.self_attn_layer_norm.weight"],
            t[f"{e}.self_attn_layer_norm.bias"])  # fmt: skip
    memory = _ln(x + _ffn(t, e, x), t[f"{e}.final_layer_norm.weight"], t[f"{e}.final_layer_norm.bias"])
    out = [pad]  # the decoder starts from the pad token, whose embedding is zero
    p = "model.decoder.layers.0"
    for _ in range(steps):
        y = emb[out] * np.sqrt(d) + pos[: len(out)]
        y = _ln(y + _attn(t, f"{p}.self_attn", y, y, True), t[f"{p}.self_attn_layer_norm.weight"],
                t[f"{p}.self_attn_layer_norm.bias"])  # fmt: skip
        y = _ln(y + _attn(t, f"{p}.encoder_attn", y, memory, False),
                t[f"{p}.encoder_attn_layer_norm.weight"], t[f"{p}.encoder_attn_layer_norm.bias"])  # fmt: skip
        y = _ln(y + _ffn(t, p, y), t[f"{p}.final_layer_norm.weight"], t[f"{p}.final_layer_norm.bias"])
        logits = y[-1] @ emb.T + t["final_logits_bias"][0]
        logits[pad] = -np.inf  # the converted model has no pad token
        out.append(int(np.argmax(logits)))
    return out[1:]


def test_conversion_matches_a_numpy_marian(marian: Path, tmp_path: Path) -> None:
    convert_marian(marian, tmp_path / "ct2", quantization=None)  # float32: exact comparison
    vocab = json.loads((marian / "vocab.json").read_text())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(marian / "source.spm"))
    engine = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    for sentence in ("the cat sees the dog", "we eat small red trees today", "car"):
        pieces = sp.encode(sentence, out_type=str)
        steps = 8
        ct2 = engine.translate_batch([pieces], beam_size=1, max_decoding_length=steps)[0].hypotheses[0]
        expected = _reference_greedy(marian, [vocab[p] for p in pieces] + [vocab["</s>"]], steps)
        ids = [vocab[p] for p in ct2]
        assert ids == expected[: len(ids)] and len(ids) >= steps - 1, (ct2, expected)


def test_translator_translates_with_the_installed_model(installed: Path) -> None:
    tr = CTranslate2Translator(installed)
    assert isinstance(tr, Translator)
    assert tr.pairs() == [("en", "de")] and tr.name == "ctranslate2:opus-mt-en-de"
    assert not tr.loaded()  # lazily: nothing loaded until the first translation
    out = tr.translate("the cat sees the dog", "en", "de")
    assert tr.loaded() and isinstance(out, str) and out.strip()
    assert tr.translate("the cat sees the dog", "en", "de") == out  # deterministic
    assert CTranslate2Translator(installed).translate("the cat sees the dog", "en", "de") == out


def test_translate_many_batches_lines_and_keeps_the_message_shape(installed: Path) -> None:
    tr = CTranslate2Translator(installed, batch_size=2)
    texts = ["the cat", "a big dog runs\n\nthe house is red", "", "we see you", "the tree"]
    many = tr.translate_many(texts, "en", "de")
    assert len(many) == len(texts)
    assert many == tr.translate_many(texts, "en", "de")  # deterministic
    assert many[0] == tr.translate(texts[0], "en", "de")  # a batch of its own: the same
    assert many[2] == ""
    assert many[1].count("\n") == 2 and many[1].split("\n")[1] == ""
    assert all(m.strip() for i, m in enumerate(many) if i != 2)


def test_a_pair_the_model_does_not_have_is_capability_missing(installed: Path) -> None:
    with pytest.raises(CapabilityMissing, match="nimbus ai install"):
        CTranslate2Translator(installed).translate("hallo", "de", "en")


class _Fake:
    def __init__(self, name: str, pairs: list[tuple[str, str]]) -> None:
        self.name = name
        self._pairs = pairs

    def pairs(self) -> list[tuple[str, str]]:
        return self._pairs

    def translate(self, text: str, source: str, target: str) -> str:
        return f"{self.name}:{text}"

    def translate_many(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        return [f"{self.name}*:{t}" for t in texts]


def test_routing_sends_each_pair_to_the_first_engine_that_has_it() -> None:
    neural, apertium = _Fake("neural", [("en", "es")]), _Fake("apertium", [("en", "es"), ("es", "en")])
    router = RoutingTranslator([neural, apertium])
    assert router.pairs() == [("en", "es"), ("es", "en")]
    assert router.translate("hi", "en", "es") == "neural:hi"
    assert router.translate("hola", "es", "en") == "apertium:hola"
    assert router.translate_many(["a", "b"], "es", "en") == ["apertium*:a", "apertium*:b"]
    with pytest.raises(CapabilityMissing, match=r"nimbus ai install hf:Helsinki-NLP/opus-mt-fr-de"):
        router.translate("salut", "fr", "de")


def test_a_long_message_stays_within_the_models_positions(installed: Path) -> None:
    long = " ".join(["the big red car sees the small green tree"] * 20)  # > 64 pieces, the tiny table
    out = CTranslate2Translator(installed).translate(long, "en", "de")
    assert out.strip()
