"""Installed on-device models: where they live, what each is, and installing/removing them.

Owns: `models_dir()`, `installed_models()` (read by `nimbus ai status` and the registry),
`install()` (the `nimbus ai install SOURCE` logic) and `remove()`. Rules:
- Models live in `$NIMBUS_MODELS_DIR` or `~/.local/share/nimbus/models` (created mode 0700), one
  folder per model holding a `nimbus-model.json` manifest: kind ("translation" or
  "text-generation"), engine, name, languages, source, the SHA-256 of every file, total size.
- Installing is atomic: everything is written into a temporary folder inside the models directory,
  validated (a translation model is loaded and run once), then renamed into place. A failure leaves
  nothing behind and raises `ModelError` with a clear message.
- Sources: an .argosmodel (zip), a CTranslate2 translation folder, a Hugging Face Marian/Opus-MT
  folder (converted once to CTranslate2 int8, see marian_ct2), a .gguf file (validated header; a
  text-generation model for the llama.cpp backend), or `hf:ORG/NAME@REVISION` with pinned SHA-256s
  (see model_hub: the one code path of nimbus.ai that may open a connection, only on this command).
- Listing reads manifests only: no model is loaded, nothing is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimbus.types.errors import NimbusError

MANIFEST = "nimbus-model.json"
KIND_TRANSLATION = "translation"
KIND_GENERATION = "text-generation"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_LANG = re.compile(r"[a-z]{2,3}")
_GGUF_VERSIONS = (2, 3)


class ModelError(NimbusError):
    """A model could not be installed, found or removed; the message says why."""


@dataclass(frozen=True)
class InstalledModel:
    name: str
    kind: str  # "translation" or "text-generation"
    engine: str  # "ctranslate2" or "llama.cpp"
    path: Path  # the model's folder
    languages: tuple[tuple[str, str], ...]  # (source, target) pairs; empty for generation models
    size_bytes: int
    source: str
    files: dict[str, str]  # relative path -> sha256
    details: dict[str, Any]  # engine-specific: tokenizer files, GGUF architecture, ...

    @property
    def main_file(self) -> Path:
        """The file or folder an engine loads: model/ for CTranslate2, the .gguf for llama.cpp."""
        return self.path / str(self.details.get("main", "model"))


def models_dir() -> Path:
    """The models directory (not created here)."""
    env = os.environ.get("NIMBUS_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nimbus" / "models"


def ensure_models_dir() -> Path:
    """The models directory, created (mode 0700) if missing."""
    root = models_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def read_manifest(folder: Path) -> InstalledModel | None:
    try:
        m = json.loads((folder / MANIFEST).read_text("utf-8"))
        return InstalledModel(
            name=str(m["name"]),
            kind=str(m["kind"]),
            engine=str(m["engine"]),
            path=folder,
            languages=tuple((str(s), str(t)) for s, t in m.get("languages", [])),
            size_bytes=int(m["size_bytes"]),
            source=str(m.get("source", "")),
            files={str(k): str(v) for k, v in m.get("files", {}).items()},
            details=dict(m.get("details", {})),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a model folder (or an unreadable one): not listed


def installed_models(kind: str | None = None) -> list[InstalledModel]:
    """Every installed model (optionally of one kind), by name. Reads manifests only."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = (read_manifest(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [m for m in found if m is not None and (kind is None or m.kind == kind)]


def translation_model_for(source: str, target: str) -> InstalledModel | None:
    """The installed translation model for a pair (the first by name), or None."""
    for model in installed_models(KIND_TRANSLATION):
        if (source, target) in model.languages:
            return model
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, fields: dict[str, Any]) -> None:
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = dict(fields, files=files, size_bytes=sum((folder / f).stat().st_size for f in files))
    manifest["installed_at"] = int(time.time())
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _pair(text: str) -> tuple[str, str]:
    source, sep, target = text.replace("_", "-").partition("-")
    if not sep or not _LANG.fullmatch(source) or not _LANG.fullmatch(target):
        raise ModelError(f"not a language pair: {text!r} (expected e.g. en-de)")
    return source, target


def _name_pair(name: str) -> tuple[str, str] | None:
    """`opus-mt-en-de` -> ("en", "de")."""
    found = re.search(r"(?:^|[-_])([a-z]{2,3})[-_]([a-z]{2,3})$", name)
    return (found.group(1), found.group(2)) if found else None


def _languages(folder: Path, name: str, given: str | None) -> tuple[str, str]:
    if given:
        return _pair(given)
    for meta_name, s_key, t_key in (
        ("metadata.json", "from_code", "to_code"),
        ("tokenizer_config.json", "source_lang", "target_lang"),
    ):
        try:
            meta = json.loads((folder / meta_name).read_text("utf-8"))
            return _pair(f"{meta[s_key]}-{meta[t_key]}")
        except (OSError, ValueError, KeyError, TypeError, ModelError):
            continue
    pair = _name_pair(name)
    if pair is None:
        raise ModelError(f"cannot tell the language pair of {name}: give it with --languages SRC-TGT")
    return pair


def _validate_translation(folder: Path, pair: tuple[str, str]) -> None:
    """Load the installed CTranslate2 model with its tokenizers and translate one sentence."""
    from nimbus.ai.translation_ct2 import CTranslate2Translator

    try:
        out = CTranslate2Translator(folder, pairs=[pair]).translate("Hello.", *pair)
    except NimbusError:
        raise
    except Exception as exc:  # ctranslate2/sentencepiece raise RuntimeError/OSError on bad files
        raise ModelError(f"the model does not load: {exc}") from exc
    if not isinstance(out, str):
        raise ModelError("the model does not translate")


def _ct2_files(src: Path, dest: Path, spm_source: Path, spm_target: Path) -> dict[str, Any]:
    (dest / "model").mkdir()
    for name in ("model.bin", "config.json"):
        if not (src / name).is_file():
            raise ModelError(f"{src}: not a CTranslate2 model (no {name})")
    for f in src.iterdir():
        if f.is_file() and (f.name in ("model.bin", "config.json") or "vocabulary" in f.name):
            shutil.copy2(f, dest / "model" / f.name)
    if not any("vocabulary" in f.name for f in (dest / "model").iterdir()):
        raise ModelError(f"{src}: no shared_vocabulary or source/target vocabulary")
    shutil.copy2(spm_source, dest / "source.spm")
    if spm_target != spm_source:
        shutil.copy2(spm_target, dest / "target.spm")
    return {"main": "model", "source_spm": "source.spm",
            "target_spm": "target.spm" if spm_target != spm_source else "source.spm"}  # fmt: skip


def _spm_pair(folder: Path) -> tuple[Path, Path]:
    for source, target in (("source.spm", "target.spm"), ("sentencepiece.model", "sentencepiece.model")):
        if (folder / source).is_file() and (folder / target).is_file():
            return folder / source, folder / target
    raise ModelError(f"{folder}: no sentencepiece model (source.spm/target.spm or sentencepiece.model)")


def _from_ct2(src: Path, dest: Path, name: str, languages: str | None) -> dict[str, Any]:
    model = src / "model" if (src / "model" / "model.bin").is_file() else src
    spm_source, spm_target = _spm_pair(src)
    details = _ct2_files(model, dest, spm_source, spm_target)
    pair = _languages(src, name, languages)
    return {"kind": KIND_TRANSLATION, "engine": "ctranslate2", "languages": [pair], "details": details}


def _from_marian(src: Path, dest: Path, name: str, languages: str | None) -> dict[str, Any]:
    from nimbus.ai.marian_ct2 import ConversionError, convert_marian

    try:
        convert_marian(src, dest / "model", quantization="int8")
    except ConversionError as exc:
        raise ModelError(str(exc)) from exc
    shutil.copy2(src / "source.spm", dest / "source.spm")
    shutil.copy2(src / "target.spm", dest / "target.spm")
    pair = _languages(src, name, languages)
    positions = int(json.loads((src / "config.json").read_text("utf-8")).get("max_position_embeddings", 512))
    details = {"main": "model", "source_spm": "source.spm", "target_spm": "target.spm", "converted": "int8",
               "max_positions": positions}  # fmt: skip
    return {"kind": KIND_TRANSLATION, "engine": "ctranslate2", "languages": [pair], "details": details}


def _from_argos(src: Path, dest: Path, name: str, languages: str | None) -> dict[str, Any]:
    if not zipfile.is_zipfile(src):
        raise ModelError(f"{src}: not an .argosmodel (it must be a zip archive)")
    unpacked = dest / ".unpacked"
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            target = (unpacked / info.filename).resolve()
            if not target.is_relative_to(unpacked.resolve()):
                raise ModelError(f"{src}: unsafe path in the archive: {info.filename!r}")
        z.extractall(unpacked)
    roots = [p.parent for p in unpacked.rglob("metadata.json")]
    if len(roots) != 1:
        raise ModelError(f"{src}: an .argosmodel holds exactly one metadata.json (found {len(roots)})")
    fields = _from_ct2(roots[0], dest, name, languages)
    shutil.rmtree(unpacked)
    return fields


def gguf_header(path: Path) -> dict[str, Any]:
    """Validate a GGUF file's header (magic, version, counts) and read its string metadata."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
            if len(head) < 24 or head[:4] != b"GGUF":
                raise ModelError(f"{path}: not a GGUF file (bad magic)")
            version, tensors, kv_count = struct.unpack("<IQQ", head[4:24])
            if version not in _GGUF_VERSIONS:
                raise ModelError(f"{path}: unsupported GGUF version {version} (supported: 2, 3)")
            if tensors > 1_000_000 or kv_count > 1_000_000:
                raise ModelError(f"{path}: implausible GGUF header (corrupt file?)")
            meta: dict[str, Any] = {"gguf_version": version, "tensors": tensors}
            for _ in range(min(kv_count, 64)):  # the general.* keys come first
                key = _gguf_str(f)
                (vtype,) = struct.unpack("<I", _read(f, 4))
                if vtype != 8:  # only strings are read; stop at the first other value
                    break
                if key in ("general.architecture", "general.name"):
                    meta[key.split(".")[1]] = _gguf_str(f)
                else:
                    _gguf_str(f)
            return meta
    except (struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: truncated or corrupt GGUF header") from exc


def _read(f: Any, n: int) -> bytes:
    data: bytes = f.read(n)
    if len(data) != n:
        raise ModelError("truncated or corrupt GGUF header")
    return data


def _gguf_str(f: Any) -> str:
    (length,) = struct.unpack("<Q", _read(f, 8))
    if length > 1 << 20:
        raise ModelError("corrupt GGUF header (string too long)")
    return _read(f, length).decode("utf-8")


def _from_gguf(src: Path, dest: Path, name: str, languages: str | None) -> dict[str, Any]:
    meta = gguf_header(src)
    shutil.copy2(src, dest / "model.gguf")
    return {"kind": KIND_GENERATION, "engine": "llama.cpp", "languages": [],
            "details": dict(meta, main="model.gguf")}  # fmt: skip


Handler = Callable[[Path, Path, str, str | None], dict[str, Any]]


def _handler(src: Path) -> Handler:
    if src.is_file():
        if src.suffix == ".gguf":
            return _from_gguf
        if src.suffix == ".argosmodel" or zipfile.is_zipfile(src):
            return _from_argos
        with src.open("rb") as f:
            if f.read(4) == b"GGUF":
                return _from_gguf
        raise ModelError(f"{src}: not a model file (.gguf or .argosmodel)")
    if src.is_dir():
        if (src / "config.json").is_file() and '"marian"' in (src / "config.json").read_text("utf-8"):
            return _from_marian
        if (src / "model.bin").is_file() or (src / "model" / "model.bin").is_file():
            return _from_ct2
        raise ModelError(
            f"{src}: not a model folder (a Hugging Face Marian model or a CTranslate2 translation model)"
        )
    raise ModelError(f"{src}: no such file or folder")


def default_name(src: Path) -> str:
    stem = src.name[: -len(src.suffix)] if src.is_file() and src.suffix else src.name
    return re.sub(r"[^A-Za-z0-9._-]", "-", stem).strip("-.") or "model"


def install(
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    languages: str | None = None,
    force: bool = False,
    origin: str | None = None,
) -> InstalledModel:
    """Install a model from a local file or folder (see the module docstring); atomic."""
    src = Path(source).expanduser()
    handler = _handler(src)
    name = name or default_name(src)
    if not _NAME.fullmatch(name):
        raise ModelError(f"not a valid model name: {name!r} (letters, digits, '.', '_', '-')")
    root = ensure_models_dir()
    final = root / name
    if final.exists() and not force:
        raise ModelError(f"a model named {name} is installed: `nimbus ai remove {name}` first, or --force")
    tmp = Path(tempfile.mkdtemp(prefix=f".install-{name}-", dir=root))
    try:
        fields = handler(src, tmp, name, languages)
        origin = origin or str(src.resolve())
        _write_manifest(tmp, dict(fields, name=name, source=origin, format=1))
        if fields["kind"] == KIND_TRANSLATION:
            _validate_translation(tmp, tuple(fields["languages"][0]))  # type: ignore[arg-type]
        if final.exists():  # --force: swap, then delete the old one
            old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=root))
            final.rename(old / name)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model = read_manifest(final)
    assert model is not None
    return model


def remove(name: str) -> InstalledModel:
    """Delete an installed model's folder (renamed away first, so a half-deleted model is never listed)."""
    if not _NAME.fullmatch(name):
        raise ModelError(f"not a valid model name: {name!r}")
    folder = models_dir() / name
    model = read_manifest(folder) if folder.is_dir() else None
    if model is None:
        raise ModelError(f"no model named {name} is installed (`nimbus ai status` lists them)")
    trash = Path(tempfile.mkdtemp(prefix=f".remove-{name}-", dir=folder.parent))
    folder.rename(trash / name)
    shutil.rmtree(trash)
    return model
