"""`nimbus ai install hf:ORG/NAME@REVISION --sha256 ...`: a Marian model from the Hugging Face hub.

Owns: `parse_hf_source()`, `parse_pins()` and `install_from_hub()`. Rules:
- This is the ONLY code path in nimbus.ai that opens a network connection, and only when the user
  runs this command: it sends file names of a public model, never message content, never a token.
- Every file is pinned: its SHA-256 is checked as it arrives, BEFORE it is used; a mismatch refuses
  the whole install (nothing is left in the models directory). Files are fetched over HTTPS from
  `$NIMBUS_HF_ENDPOINT` (default https://huggingface.co) at an explicit revision:
  `{endpoint}/{ORG}/{NAME}/resolve/{REVISION}/{file}` (the hub's file URL; redirects to its CDN are
  followed).
- Pins are `FILE=HEX` entries, or bare HEX values in the order of `MARIAN_FILES`; an optional
  `tokenizer_config.json=HEX` adds that file (it names the language pair).
- The downloaded folder is installed like a local Marian folder (converted once to CTranslate2 int8).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from nimbus.ai.models import InstalledModel, ModelError, install, models_dir

MARIAN_FILES = ("config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json")
OPTIONAL_FILES = ("tokenizer_config.json",)
DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_FILE_BYTES = 4 << 30
_SOURCE = re.compile(r"hf:([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)@([\w.-]+)")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def parse_hf_source(source: str) -> tuple[str, str, str] | None:
    """`hf:ORG/NAME@REVISION` -> (org, name, revision); None when `source` is not an hf: source."""
    if not source.startswith("hf:"):
        return None
    found = _SOURCE.fullmatch(source)
    if found is None:
        raise ModelError(f"expected hf:ORG/NAME@REVISION (a pinned revision), got {source!r}")
    return found.group(1), found.group(2), found.group(3)


def parse_pins(text: str | None) -> dict[str, str]:
    """`--sha256` -> {file: lowercase hex}; every file of MARIAN_FILES must be pinned."""
    if not text:
        raise ModelError(
            "hf: installs need --sha256 with the SHA-256 of every file: "
            + ",".join(f"{f}=HEX" for f in MARIAN_FILES)
        )
    pins: dict[str, str] = {}
    bare = 0
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        file, sep, value = entry.rpartition("=")
        if not sep:
            if bare >= len(MARIAN_FILES):
                raise ModelError(f"too many bare hashes: give them as FILE=HEX ({', '.join(MARIAN_FILES)})")
            file, value = MARIAN_FILES[bare], entry
            bare += 1
        if file not in MARIAN_FILES + OPTIONAL_FILES:
            raise ModelError(f"--sha256: unknown file {file!r} (expected {', '.join(MARIAN_FILES)})")
        if not _HEX.fullmatch(value):
            raise ModelError(f"--sha256: {file}: not a SHA-256 (64 hex digits)")
        pins[file] = value.lower()
    missing = [f for f in MARIAN_FILES if f not in pins]
    if missing:
        raise ModelError(f"--sha256: no pinned hash for {', '.join(missing)}")
    return pins


def _download(client: httpx.Client, url: str, dest: Path, expected: str, file: str) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ModelError(f"{file}: the hub answered HTTP {response.status_code}")
            with dest.open("wb") as out:
                for block in response.iter_bytes(1 << 20):
                    size += len(block)
                    if size > MAX_FILE_BYTES:
                        raise ModelError(f"{file}: larger than {MAX_FILE_BYTES >> 30} GiB, refused")
                    digest.update(block)
                    out.write(block)
    except httpx.HTTPError as exc:
        raise ModelError(f"{file}: download failed ({type(exc).__name__}: {exc})") from exc
    actual = digest.hexdigest()
    if actual != expected:
        raise ModelError(
            f"{file}: SHA-256 mismatch (pinned {expected}, got {actual}): refused, nothing installed"
        )


def install_from_hub(
    source: str,
    sha256: str | None,
    *,
    name: str | None = None,
    languages: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> InstalledModel:
    """Download the pinned files of a Marian model, verify each, then install it (converted once)."""
    parsed = parse_hf_source(source)
    if parsed is None:
        raise ModelError(f"not an hf: source: {source!r}")
    org, repo, revision = parsed
    pins = parse_pins(sha256)
    endpoint = os.environ.get("NIMBUS_HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    root = models_dir()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        folder = work / repo
        folder.mkdir()
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=20.0)) as client:
            for file, expected in pins.items():
                if progress is not None:
                    progress(f"downloading {org}/{repo}@{revision}: {file}")
                url = f"{endpoint}/{org}/{repo}/resolve/{revision}/{file}"
                _download(client, url, folder / file, expected, file)
        if progress is not None:
            progress("all files match their pinned SHA-256; converting to CTranslate2 int8")
        return install(
            folder,
            name=name or repo,
            languages=languages,
            force=force,
            origin=f"hf:{org}/{repo}@{revision}",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
