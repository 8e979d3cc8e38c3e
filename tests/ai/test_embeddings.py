"""The e5 embedder (default engine): shape, unit length, meaning (paraphrase closer than unrelated,
across languages)."""

from __future__ import annotations

import math

from nimbus.ai.embeddings import E5Embedder
from nimbus.ai.interfaces import Embedder


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_shape_and_unit_length() -> None:
    emb = E5Embedder()
    assert isinstance(emb, Embedder)
    vectors = emb.embed(["hello there", "", "a much longer message " * 40])
    assert len(vectors) == 3
    for v in vectors:
        assert len(v) == emb.dimensions == 384
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4)
    assert emb.embed([]) == []


def test_query_and_passage_prefixes_differ() -> None:
    emb = E5Embedder()
    (q,) = emb.embed(["where is the meeting"], query=True)
    (p,) = emb.embed(["where is the meeting"])
    assert q != p
    assert cos(q, p) > 0.8


def test_paraphrase_is_closer_than_unrelated() -> None:
    emb = E5Embedder()
    a, para, other = emb.embed(
        [
            "the train to Berlin was cancelled this morning",
            "my rail connection to Berlin got called off today",
            "can you buy some milk and eggs on the way home",
        ]
    )
    assert cos(a, para) > cos(a, other) + 0.05


def test_cross_language_meaning() -> None:
    emb = E5Embedder()
    (q,) = emb.embed(["when is the dentist appointment"], query=True)
    es, de, unrelated = emb.embed(
        [
            "¿a qué hora es la cita con el dentista?",
            "Wann ist der Zahnarzttermin?",
            "the cat knocked the plant over",
        ]
    )
    assert cos(q, es) > cos(q, unrelated)
    assert cos(q, de) > cos(q, unrelated)


def test_model_is_loaded_once_per_process() -> None:
    import nimbus.ai.embeddings as module

    E5Embedder().embed(["x"])
    first = dict(module._engines)
    E5Embedder().embed(["y"])
    assert module._engines == first and all(module._engines[k] is v for k, v in first.items())


def test_a_batch_gives_each_text_its_own_vector_and_repeats_the_same() -> None:
    emb = E5Embedder()
    texts = ["see you at noon", "the printer is jammed", "see you at noon", "  ", "ok"]
    batch = emb.embed_array(texts)
    assert batch.shape == (5, 384)
    alone = [emb.embed_array([t])[0] for t in texts]
    for got, want in zip(batch, alone, strict=True):
        assert float(got @ want) > 0.999  # one call or one each: the same vectors
    assert (batch[0] == batch[2]).all()  # a repeated text is embedded once and copied
    assert float(batch[0] @ batch[1]) < 0.95


def test_a_very_long_text_is_cut_to_one_window() -> None:
    from nimbus.ai.embeddings import MAX_CHARS

    emb = E5Embedder()
    head = "the deployment failed because the database migration timed out. " * 30
    long_text = head + "completely different words about cooking pasta and tomato sauce " * 200
    assert len(head) >= MAX_CHARS
    (v_long,) = emb.embed_array([long_text])
    (v_head,) = emb.embed_array([head[:MAX_CHARS]])
    assert float(v_long @ v_head) > 0.999
