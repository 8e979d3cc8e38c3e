"""`nimbus ai install/status/remove`: every kind of source, atomicity, pinned hub downloads, the CLI.

All models are built here (tests/ai/_tiny_models.py); the hub is a loopback HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimbus.ai import registry
from nimbus.ai.interfaces import CapabilityMissing
from nimbus.ai.marian_ct2 import convert_marian
from nimbus.ai.model_hub import MARIAN_FILES, install_from_hub
from nimbus.ai.models import ModelError, install, installed_models, models_dir, remove, sha256_file
from nimbus.ai.translation import ApertiumTranslator
from nimbus.ai.translation_ct2 import CTranslate2Translator

from ._tiny_models import argos_zip, tiny_gguf, tiny_marian

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_marian(tmp_path_factory.mktemp("hf") / "opus-mt-en-de")


@pytest.fixture
def mdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMBUS_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def _left(mdir: Path) -> list[str]:
    return sorted(p.name for p in mdir.iterdir()) if mdir.exists() else []


def test_models_dir_default_and_override(mdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert models_dir() == mdir
    monkeypatch.delenv("NIMBUS_MODELS_DIR")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert models_dir() == Path("/home/someone/.local/share/nimbus/models")


def test_marian_folder_is_converted_installed_and_preferred_by_the_registry(marian: Path, mdir: Path) -> None:
    model = install(marian)
    assert (mdir.stat().st_mode & 0o777) == 0o700
    assert model.name == "opus-mt-en-de" and model.kind == "translation" and model.engine == "ctranslate2"
    assert model.languages == (("en", "de"),)
    assert (model.path / "model" / "model.bin").is_file() and model.details["converted"] == "int8"
    manifest = json.loads((model.path / "nimbus-model.json").read_text())
    assert manifest["source"] == str(marian)
    assert set(manifest["files"]) >= {"model/model.bin", "model/config.json", "source.spm", "target.spm"}
    for rel, digest in manifest["files"].items():
        assert sha256_file(model.path / rel) == digest
    assert manifest["size_bytes"] == sum((model.path / rel).stat().st_size for rel in manifest["files"])
    assert "model.safetensors" not in manifest["files"]  # only the converted model is kept
    assert _left(mdir) == ["opus-mt-en-de"]  # no temporary folder left
    assert [m.name for m in installed_models("translation")] == ["opus-mt-en-de"]

    chosen = registry.translator_for("en", "de")
    assert isinstance(chosen, CTranslate2Translator)
    out = registry.translator().translate("the cat sees the dog", "en", "de")
    assert isinstance(out, str) and out.strip()
    assert out == chosen.translate("the cat sees the dog", "en", "de")


def test_registry_falls_back_to_apertium_then_names_the_install_command(mdir: Path) -> None:
    if shutil.which("apertium") is not None and ("en", "es") in ApertiumTranslator().pairs():
        assert isinstance(registry.translator_for("en", "es"), ApertiumTranslator)
    with pytest.raises(CapabilityMissing, match=r"nimbus ai install"):
        registry.translator_for("fi", "ja")


def test_argosmodel_zip_installs_and_translates(marian: Path, mdir: Path, tmp_path: Path) -> None:
    convert_marian(marian, tmp_path / "ct2")
    source = argos_zip(tmp_path / "ct2", marian / "source.spm", tmp_path / "translate-en_de.argosmodel")
    model = install(source, name="argos-en-de")
    assert model.languages == (("en", "de"),) and model.details["source_spm"] == "source.spm"
    assert model.details["target_spm"] == "source.spm"  # one sentencepiece model for both sides
    assert not (model.path / ".unpacked").exists()
    assert CTranslate2Translator(model.path).translate("the dog", "en", "de").strip()


def test_ctranslate2_folder_needs_a_language_pair_when_it_does_not_say(
    marian: Path, mdir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mymodel"
    convert_marian(marian, folder)
    for spm in ("source.spm", "target.spm"):
        shutil.copy(marian / spm, folder / spm)
    with pytest.raises(ModelError, match="--languages"):
        install(folder)
    assert _left(mdir) == []
    model = install(folder, languages="en-de")
    assert model.name == "mymodel" and model.languages == (("en", "de"),)


def test_corrupt_sources_leave_nothing_behind(marian: Path, mdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "opus-mt-en-fr"
    shutil.copytree(marian, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="safetensors"):
        install(broken)
    assert _left(mdir) == []

    ct2 = tmp_path / "ct2-de-en"
    convert_marian(marian, ct2)
    shutil.copy(marian / "source.spm", ct2 / "sentencepiece.model")
    (ct2 / "model.bin").write_bytes(b"\0" * 1000)  # passes the layout check, fails to load
    with pytest.raises(ModelError, match="does not load"):
        install(ct2)
    (tmp_path / "bad.argosmodel").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="zip"):
        install(tmp_path / "bad.argosmodel")
    assert _left(mdir) == []


def test_pytorch_bin_only_folder_is_refused_clearly(marian: Path, mdir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "opus-mt-en-it"
    shutil.copytree(marian, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"only model\.safetensors .* not pytorch_model\.bin"):
        install(folder)
    assert _left(mdir) == []


def test_gguf_header_is_validated(mdir: Path, tmp_path: Path) -> None:
    model = install(tiny_gguf(tmp_path / "tiny-llm.gguf"))
    assert model.kind == "text-generation" and model.engine == "llama.cpp" and model.languages == ()
    assert model.main_file == model.path / "model.gguf" and model.main_file.is_file()
    assert model.details["architecture"] == "llama" and model.details["gguf_version"] == 3
    (tmp_path / "garbage.gguf").write_bytes(b"this is not a model at all, only text" * 3)
    with pytest.raises(ModelError, match="bad magic"):
        install(tmp_path / "garbage.gguf")
    with pytest.raises(ModelError, match="version 9"):
        install(tiny_gguf(tmp_path / "future.gguf", version=9))
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "tiny-llm.gguf").read_bytes()[:30])
    with pytest.raises(ModelError, match=r"truncated|corrupt"):
        install(tmp_path / "cut.gguf")
    assert _left(mdir) == ["tiny-llm"]


def test_same_name_is_refused_unless_forced_and_remove_deletes(mdir: Path, tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "m.gguf")
    first = install(path)
    with pytest.raises(ModelError, match="nimbus ai remove m"):
        install(path)
    again = install(path, force=True)
    assert again.path == first.path and _left(mdir) == ["m"]
    assert remove("m").name == "m"
    assert _left(mdir) == [] and installed_models() == []
    with pytest.raises(ModelError, match="no model named m"):
        remove("m")


@pytest.fixture
def hub(marian: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback 'hub' serving the tiny Marian folder at /ORG/NAME/resolve/REV/FILE."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            parts = self.path.split("/")
            if parts[1:5] != ["Helsinki-NLP", "opus-mt-en-de", "resolve", "abc123"] or len(parts) != 6:
                self.send_error(404)
                return
            body = (marian / parts[5]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def _pins(marian: Path, **override: str) -> str:
    pins = {f: hashlib.sha256((marian / f).read_bytes()).hexdigest() for f in MARIAN_FILES}
    pins.update(override)
    return ",".join(f"{f}={h}" for f, h in pins.items())


def test_hub_install_checks_every_pinned_hash(
    marian: Path, mdir: Path, hub: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, requests = hub
    monkeypatch.setenv("NIMBUS_HF_ENDPOINT", endpoint)
    source = "hf:Helsinki-NLP/opus-mt-en-de@abc123"
    with pytest.raises(ModelError, match=r"model\.safetensors: SHA-256 mismatch"):
        install_from_hub(source, _pins(marian, **{"model.safetensors": "0" * 64}))
    assert _left(mdir) == []  # nothing installed, no download left
    with pytest.raises(ModelError, match=r"no pinned hash for vocab\.json"):
        install_from_hub(source, ",".join(_pins(marian).split(",")[:4]))
    with pytest.raises(ModelError, match="REVISION"):
        install_from_hub("hf:Helsinki-NLP/opus-mt-en-de", _pins(marian))
    requests.clear()
    bare = ",".join(h.split("=")[1] for h in _pins(marian).split(","))  # bare hashes, in MARIAN_FILES order
    model = install_from_hub(source, bare)
    assert sorted(requests) == sorted(f"/Helsinki-NLP/opus-mt-en-de/resolve/abc123/{f}" for f in MARIAN_FILES)
    assert model.name == "opus-mt-en-de" and model.source == source and model.languages == (("en", "de"),)
    assert _left(mdir) == ["opus-mt-en-de"]
    assert CTranslate2Translator(model.path).translate("the cat", "en", "de").strip()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimbus.apps.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_cli_install_status_remove(marian: Path, tmp_path: Path) -> None:
    env = dict(os.environ, NIMBUS_MODELS_DIR=str(tmp_path / "models"), PYTHONPATH=str(REPO / "src"))
    env.pop("NIMBUS_HF_ENDPOINT", None)
    done = _cli("ai", "install", str(marian), "--json", env=env)
    assert done.returncode == 0, done.stderr
    installed = json.loads(done.stdout.splitlines()[-1])
    assert installed["type"] == "ai_model_installed" and installed["languages"] == ["en-de"]
    assert _cli("ai", "install", str(tiny_gguf(tmp_path / "small.gguf")), env=env).returncode == 0
    status = _cli("ai", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    listed = {r["name"]: r for r in rows if r["type"] == "ai_model"}
    assert set(listed) == {"opus-mt-en-de", "small"}
    assert listed["opus-mt-en-de"]["kind"] == "translation" and listed["opus-mt-en-de"]["size_bytes"] > 0
    assert listed["small"]["kind"] == "text-generation"
    text = _cli("ai", "status", env=env).stdout
    assert "opus-mt-en-de" in text and "en->de" in text
    assert _cli("ai", "remove", "small", env=env).returncode == 0
    failed = _cli("ai", "remove", "small", "--json", env=env)
    assert failed.returncode == 1 and "no model named small" in failed.stderr
    bad = _cli("ai", "install", str(tmp_path / "missing"), env=env)
    assert bad.returncode == 1 and "no such file or folder" in bad.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["opus-mt-en-de"]
