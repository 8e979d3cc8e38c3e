"""Conversion of a Hugging Face Marian (Opus-MT) folder into a CTranslate2 model, without torch.

Owns: `check_marian_folder()` (is this a Marian folder we can convert, and why not) and
`convert_marian()` (writes the CTranslate2 model, int8 by default). Rules:
- Only local files are read: config.json, model.safetensors (through the `safetensors` package's
  numpy API), vocab.json. No transformers, no torch (PyPI's torch pulls gigabytes of CUDA): the weight
  mapping mirrors ctranslate2's own MarianMTLoader (ctranslate2/converters/transformers.py):
  post-norm Transformer, sinusoidal positions (Marian's layout: sines in the first half, cosines in
  the second), embeddings scaled by sqrt(d_model), encoder/decoder/output embeddings shared,
  `final_logits_bias` as the output bias when non-zero, q/k/v fused, and the trailing `<pad>` token
  removed with the decoder starting from a zero embedding.
- `pytorch_model.bin` (a pickle) is never opened: only safetensors is supported, and the error says so.
- Only models with one shared vocabulary are supported (every bilingual Opus-MT model); the
  source's end-of-sentence token is added by CTranslate2 itself (`add_source_eos`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nimbus.types.errors import NimbusError

Array = npt.NDArray[Any]

REQUIRED_FILES = ("config.json", "source.spm", "target.spm", "vocab.json")
WEIGHTS = "model.safetensors"


class ConversionError(NimbusError):
    """The folder is not a Marian model this converter supports; the message says why."""


def check_marian_folder(folder: Path) -> dict[str, Any]:
    """The folder's config.json when it is a convertible Marian model, else ConversionError."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{config_path}: not a readable JSON config ({exc})") from exc
    if not isinstance(config, dict) or config.get("model_type") != "marian":
        raise ConversionError(f"{folder}: config.json is not a Marian model (model_type must be 'marian')")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not (folder / WEIGHTS).is_file():
        if (folder / "pytorch_model.bin").is_file():
            raise ConversionError(
                f"{folder}: only model.safetensors weights are supported, not pytorch_model.bin "
                "(download the model's safetensors file, or convert it with transformers elsewhere)"
            )
        missing.append(WEIGHTS)
    if missing:
        raise ConversionError(f"{folder}: not a complete Marian model, missing {', '.join(missing)}")
    if config.get("share_encoder_decoder_embeddings", True) is False:
        raise ConversionError(f"{folder}: models with separate source/target vocabularies are not supported")
    if config.get("normalize_before", False) or config.get("normalize_embedding", False):
        raise ConversionError(f"{folder}: pre-norm Marian variants are not supported")
    return config


def marian_positions(n_pos: int, dim: int) -> Array:
    """Marian's sinusoidal position table (as transformers builds it; not CTranslate2's default)."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    j = np.arange(dim)
    enc = pos / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    out = np.zeros((n_pos, dim), dtype=np.float32)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :sentinel] = np.sin(enc[:, 0::2])
    out[:, sentinel:] = np.cos(enc[:, 1::2])
    return out


def _vocabulary(folder: Path, vocab_size: int) -> list[str]:
    try:
        vocab = json.loads((folder / "vocab.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{folder}/vocab.json: not readable ({exc})") from exc
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ConversionError(f"{folder}/vocab.json: not a token -> id map")
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ConversionError(f"{folder}/vocab.json: ids are not 0..n-1")
    return tokens[:vocab_size]


class _Weights:
    def __init__(self, tensors: Mapping[str, Array], folder: Path) -> None:
        self._t = tensors
        self._folder = folder

    def get(self, name: str) -> Array:
        for candidate in (name, f"model.{name}"):
            if candidate in self._t:
                return np.asarray(self._t[candidate], dtype=np.float32)
        raise ConversionError(f"{self._folder}/{WEIGHTS}: tensor {name} is missing")

    def has(self, name: str) -> bool:
        return name in self._t or f"model.{name}" in self._t


def _spec(config: dict[str, Any], w: _Weights, tokens: list[str]) -> Any:
    from ctranslate2.converters import utils  # type: ignore[import-untyped]
    from ctranslate2.specs import common_spec, transformer_spec  # type: ignore[import-untyped]

    activations = {
        "gelu": common_spec.Activation.GELU,
        "gelu_new": common_spec.Activation.GELUTanh,
        "relu": common_spec.Activation.RELU,
        "silu": common_spec.Activation.SWISH,
        "swish": common_spec.Activation.SWISH,
    }
    act_name = str(config.get("activation_function", "swish"))
    if act_name not in activations:
        raise ConversionError(f"activation {act_name!r} is not supported")
    d_model = int(config["d_model"])
    enc_layers, dec_layers = int(config["encoder_layers"]), int(config["decoder_layers"])
    heads = int(config["encoder_attention_heads"])
    if int(config.get("decoder_attention_heads", heads)) != heads:
        raise ConversionError("different encoder and decoder head counts are not supported")
    spec = transformer_spec.TransformerSpec.from_config(
        (enc_layers, dec_layers), heads, pre_norm=False, activation=activations[act_name]
    )
    scale = math.sqrt(d_model) if config.get("scale_embedding", False) else 1.0
    positions = marian_positions(int(config.get("max_position_embeddings", 512)), d_model)
    shared = w.get("shared.weight") if w.has("shared.weight") else w.get("encoder.embed_tokens.weight")

    def linear(target: Any, prefix: str) -> None:
        target.weight = w.get(f"{prefix}.weight")
        if w.has(f"{prefix}.bias"):
            target.bias = w.get(f"{prefix}.bias")

    def norm(target: Any, prefix: str) -> None:
        target.gamma = w.get(f"{prefix}.weight")
        target.beta = w.get(f"{prefix}.bias")

    def attention(target: Any, prefix: str, self_attention: bool) -> None:
        parts = [common_spec.LinearSpec() for _ in range(3)]
        for part, name in zip(parts, ("q_proj", "k_proj", "v_proj"), strict=True):
            linear(part, f"{prefix}.{name}")
        if self_attention:
            utils.fuse_linear(target.linear[0], parts)
        else:
            utils.fuse_linear(target.linear[0], parts[:1])
            utils.fuse_linear(target.linear[1], parts[1:])
        linear(target.linear[-1], f"{prefix}.out_proj")

    for side, stack in (("encoder", spec.encoder), ("decoder", spec.decoder)):
        stack.scale_embeddings = scale
        stack.position_encodings.encodings = positions
        embeddings = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
        embeddings.weight = shared
        for i, layer in enumerate(stack.layer):
            p = f"{side}.layers.{i}"
            attention(layer.self_attention, f"{p}.self_attn", True)
            norm(layer.self_attention.layer_norm, f"{p}.self_attn_layer_norm")
            if side == "decoder":
                attention(layer.attention, f"{p}.encoder_attn", False)
                norm(layer.attention.layer_norm, f"{p}.encoder_attn_layer_norm")
            linear(layer.ffn.linear_0, f"{p}.fc1")
            linear(layer.ffn.linear_1, f"{p}.fc2")
            norm(layer.ffn.layer_norm, f"{p}.final_layer_norm")
    spec.decoder.start_from_zero_embedding = True
    spec.decoder.projection.weight = w.get("lm_head.weight") if w.has("lm_head.weight") else shared
    if w.has("final_logits_bias"):
        bias = w.get("final_logits_bias").reshape(-1)
        if np.any(bias != 0):
            spec.decoder.projection.bias = bias

    if tokens and tokens[-1] == "<pad>":  # as MarianMTLoader: drop the pad row everywhere
        tokens = tokens[:-1]
        n = len(tokens)
        spec.encoder.embeddings[0].weight = shared[:n]
        spec.decoder.embeddings.weight = shared[:n]
        spec.decoder.projection.weight = spec.decoder.projection.weight[:n]
        if spec.decoder.projection.has_bias():
            spec.decoder.projection.bias = spec.decoder.projection.bias[:n]
    if shared.shape[0] < len(tokens):
        raise ConversionError(f"vocab.json has {len(tokens)} tokens but the embeddings {shared.shape[0]}")
    spec.config.eos_token = "</s>"
    spec.config.unk_token = "<unk>"
    spec.config.decoder_start_token = "</s>"  # any token: the decoder starts from a zero embedding
    spec.config.add_source_eos = True
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    return spec


def convert_marian(folder: Path, output_dir: Path, *, quantization: str | None = "int8") -> None:
    """Write the CTranslate2 model for the Marian model in `folder` into `output_dir` (must not exist)."""
    config = check_marian_folder(folder)
    from ctranslate2.converters.converter import Converter  # type: ignore[import-untyped]
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ConversionError(f"{folder}/{WEIGHTS}: not readable safetensors ({exc})") from exc
    try:
        vocab_size = int(config["vocab_size"])
        spec = _spec(config, _Weights(tensors, folder), _vocabulary(folder, vocab_size))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{folder}: unexpected Marian config or weights ({exc})") from exc

    class _MarianConverter(Converter):  # type: ignore[misc]
        def _load(self) -> Any:
            return spec

    try:
        _MarianConverter().convert(str(output_dir), quantization=quantization)
    except (ValueError, RuntimeError) as exc:  # spec validation: shapes that do not fit together
        raise ConversionError(f"{folder}: the weights do not form a valid model ({exc})") from exc
