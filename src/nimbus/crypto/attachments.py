"""Encrypted attachments (v2): AES-256-CTR + SHA-256 and the `file` object.

Spec: https://spec.matrix.org/v1.12/client-server-api/#sending-encrypted-attachments. The key is a
JWK (kty oct, alg A256CTR, key_ops encrypt/decrypt, ext true, k unpadded base64url); the IV is 16
bytes whose low 64 bits (the counter) are zero; `hashes.sha256` is unpadded base64 of SHA-256 of the
ciphertext, checked BEFORE anything is decrypted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nimbus.crypto.errors import CryptoError


class AttachmentError(CryptoError):
    """An encrypted attachment is malformed, fails its hash, or uses an unsupported version."""


def _b64(data: bytes, *, url: bool = False) -> str:
    enc = base64.urlsafe_b64encode(data) if url else base64.b64encode(data)
    return enc.decode().rstrip("=")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        raise AttachmentError("attachment key material is not base64") from None


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


def encrypt_attachment(plaintext: bytes) -> tuple[bytes, dict[str, Any]]:
    """(ciphertext, file info without `url`): add `"url": <mxc uri>` after the upload."""
    key = os.urandom(32)
    iv = os.urandom(8) + bytes(8)  # spec: the counter half of the IV starts at zero
    ciphertext = _ctr(key, iv, plaintext)
    info = {
        "v": "v2",
        "key": {
            "kty": "oct",
            "key_ops": ["encrypt", "decrypt"],
            "alg": "A256CTR",
            "k": _b64(key, url=True),
            "ext": True,
        },
        "iv": _b64(iv),
        "hashes": {"sha256": _b64(hashlib.sha256(ciphertext).digest())},
    }
    return ciphertext, info


def decrypt_attachment(ciphertext: bytes, info: Any) -> bytes:
    """Check the hash, then decrypt. Raises AttachmentError."""
    if not isinstance(info, dict) or info.get("v") != "v2":
        raise AttachmentError("unsupported encrypted file version")
    key, hashes, iv = info.get("key"), info.get("hashes"), info.get("iv")
    if not isinstance(key, dict) or not isinstance(key.get("k"), str) or key.get("alg") != "A256CTR":
        raise AttachmentError("the file key is not an A256CTR JWK")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str) or not isinstance(iv, str):
        raise AttachmentError("the file info lacks hashes.sha256 or iv")
    expected = _unb64(hashes["sha256"])
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), expected):
        raise AttachmentError("the attachment does not match its SHA-256 hash")
    raw_key, raw_iv = _unb64(key["k"]), _unb64(iv)
    if len(raw_key) != 32 or len(raw_iv) != 16:
        raise AttachmentError("the file key or iv has the wrong length")
    return _ctr(raw_key, raw_iv, ciphertext)
