"""A tiny random-weight llama-architecture GGUF the LLM tests build themselves (nothing is downloaded).

`tiny_llama_gguf(path)` writes, with the `gguf` package's GGUFWriter, a 2-layer llama model
(embedding 32, 2 heads, feed-forward 64, float32) with a small SentencePiece-style vocabulary:
<unk>/<s>/</s>, the 256 byte-fallback tokens (so any text tokenizes), and a few hundred
"▁word" pieces in en/es/de/fr. The output rows of the control and byte tokens are zero, so greedy
decoding always picks a word piece: the model "writes" deterministic word salad, never ends early.
With `chat_template`, a minimal template is stored as `tokenizer.chat_template`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_EMBD = 32
N_HEAD = 2
N_FF = 64
N_LAYER = 2
N_CTX = 2048  # as large as the generator's default context (llama.cpp warns otherwise)

_WORDS = (
    "yes no ok sure thanks maybe later tomorrow today lunch meeting call dinner coffee time great good "
    "fine see you soon let me check sounds perfect agreed when where what how why who the a an and or "
    "but to of in on at for with is are was will can could would please sorry hello hi bye night "
    "morning week friday monday report budget plan team project review draft send done ready "
    "sí claro gracias vale luego mañana hoy comida reunión nos vemos ja nein danke gerne später "
    "morgen heute treffen oui non merci bien demain aujourd'hui réunion d'accord"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types (gguf.TokenType values) of the tiny SPM vocabulary."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["▁", *dict.fromkeys("▁" + w for w in _WORDS)]
    pieces += [c for c in "abcdefghijklmnopqrstuvwxyzáéíóúñäöüßçèà'.,!?" if "▁" + c not in pieces]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def tiny_llama_gguf(
    path: Path, *, seed: int = 0, chat_template: bool = False, name: str = "tiny-llama"
) -> Path:
    """Write the tiny model to `path` (a .gguf file) and return it."""
    import gguf

    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template:
        w.add_chat_template(CHAT_TEMPLATE)

    names = gguf.TENSOR_NAMES
    t = gguf.MODEL_TENSOR
    w.add_tensor(names[t.TOKEN_EMBD] + ".weight", rand(n_vocab, N_EMBD, scale=1.0))
    w.add_tensor(names[t.OUTPUT_NORM] + ".weight", np.ones(N_EMBD, dtype=np.float32))
    output = rand(n_vocab, N_EMBD, scale=1.0)
    output[: 3 + 256] = 0.0  # control and byte tokens never win: word pieces only, no early end
    w.add_tensor(names[t.OUTPUT] + ".weight", output)
    for b in range(N_LAYER):

        def blk(kind: gguf.MODEL_TENSOR, b: int = b) -> str:
            return names[kind].format(bid=b) + ".weight"

        w.add_tensor(blk(t.ATTN_NORM), np.ones(N_EMBD, dtype=np.float32))
        for kind in (t.ATTN_Q, t.ATTN_K, t.ATTN_V, t.ATTN_OUT):
            w.add_tensor(blk(kind), rand(N_EMBD, N_EMBD))
        w.add_tensor(blk(t.FFN_NORM), np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(blk(t.FFN_GATE), rand(N_FF, N_EMBD))
        w.add_tensor(blk(t.FFN_UP), rand(N_FF, N_EMBD))
        w.add_tensor(blk(t.FFN_DOWN), rand(N_EMBD, N_FF))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
