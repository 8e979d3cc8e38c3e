"""Encryption at rest: the AEAD value codec and the keys behind it, derived from the user's passphrase.

Owns: `AeadCodec` (a `ValueCodec`), `KdfParams`, the store's key hierarchy, and the passphrase errors.
Rules:
- One root key per database: Argon2id(passphrase (NFC, UTF-8), 16-byte random salt, `KdfParams`), a
  memory-hard KDF (RFC 9106). The salt, the parameters and a verifier (an AEAD encryption of a known
  value) live in the database's `meta` table; the passphrase and keys never touch disk.
- Sub-keys come from HKDF-SHA256 (RFC 5869) over the root key, one `info` label per use: the value key
  (ChaCha20-Poly1305), the index key (HMAC-SHA256 over lookup keys, so lookups work without the
  plaintext key), and `derive_key(purpose)` for other users (e.g. the vodozemac pickle key).
- A stored value is `VERSION (1 byte) || nonce (12 random bytes) || ciphertext+tag`; the version byte is
  bound as associated data. Any tampering, truncation or wrong key raises `StoreCorrupt`.
- No default passphrase, and an empty one is refused (`PassphraseRequired`). The default `KdfParams`
  (64 MiB, 3 passes, 1 lane) are the floor for real use; weaker ones exist only when a caller (a test)
  passes them explicitly.
- Key bytes are held in `bytearray`s and zeroed by `close()`. Gaps Python does not let us close: the
  passphrase `str`, the bytes objects handed to `cryptography` (ChaCha20Poly1305 keeps its own copy
  until garbage-collected) and whatever `derive_key` callers keep.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nimbus.store.base import StoreClosed, StoreCorrupt, StoreError

VERSION = 1
_AAD = b"nimbus-store-value-v%d" % VERSION
_NONCE_LEN = 12
_SALT_LEN = 16
_KEY_LEN = 32
_VERIFIER_PLAINTEXT = b"nimbus store passphrase verifier v1"
CODEC_NAME = "aead-chacha20poly1305-v1"
"""The `meta.codec` value of a database encrypted by `AeadCodec`."""


class WrongPassphrase(StoreError):
    """The passphrase does not open this database. Nothing in the database was changed."""


class PassphraseRequired(StoreError):
    """A passphrase is needed (the database is encrypted) or the one given is empty."""


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters. The defaults are the ones to use; tests may pass weaker ones explicitly."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 1

    def check(self) -> None:
        """Refuse nonsense (and absurd values read from a damaged or hostile `meta` table)."""
        if not 1 <= self.lanes <= 64:
            raise StoreError("KDF lanes out of range")
        if not 1 <= self.iterations <= 64:
            raise StoreError("KDF iterations out of range")
        if not 8 * self.lanes <= self.memory_kib <= 4 * 1024 * 1024:
            raise StoreError("KDF memory out of range")

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "alg": "argon2id",
                "memory_kib": self.memory_kib,
                "iterations": self.iterations,
                "lanes": self.lanes,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KdfParams:
        try:
            obj = json.loads(raw)
            if obj.get("alg") != "argon2id":
                raise StoreError("unknown KDF in the database")
            params = cls(int(obj["memory_kib"]), int(obj["iterations"]), int(obj["lanes"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorrupt("stored KDF parameters are malformed") from exc
        params.check()
        return params


def _hkdf(root: bytearray, label: str) -> bytearray:
    out = HKDF(algorithm=hashes.SHA256(), length=_KEY_LEN, salt=None, info=b"nimbus-store/" + label.encode())
    return bytearray(out.derive(bytes(root)))


def _zero(buf: bytearray) -> None:
    for i in range(len(buf)):
        buf[i] = 0


class AeadCodec:
    """ChaCha20-Poly1305 values under a key derived from a passphrase. Create with `from_passphrase`."""

    def __init__(self, root_key: bytearray, salt: bytes, kdf: KdfParams) -> None:
        if len(root_key) != _KEY_LEN or len(salt) != _SALT_LEN:
            raise ValueError("bad key or salt length")
        self.salt = bytes(salt)
        self.kdf = kdf
        self._root: bytearray = root_key
        self._value_key = _hkdf(root_key, "value-key")
        self._index_key = _hkdf(root_key, "index-key")
        self._aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(self._value_key))
        self._closed = False

    @classmethod
    def from_passphrase(
        cls, passphrase: str, *, salt: bytes | None = None, kdf: KdfParams | None = None
    ) -> AeadCodec:
        """Derive the keys (slow by design: run off the event loop). A new random salt if none given."""
        if not passphrase:
            raise PassphraseRequired("an empty passphrase is refused; the store needs a real passphrase")
        params = kdf if kdf is not None else KdfParams()
        params.check()
        salt = salt if salt is not None else os.urandom(_SALT_LEN)
        if len(salt) != _SALT_LEN:
            raise StoreCorrupt("stored salt has the wrong length")
        secret = bytearray(unicodedata.normalize("NFC", passphrase).encode("utf-8"))
        try:
            argon = Argon2id(
                salt=salt,
                length=_KEY_LEN,
                iterations=params.iterations,
                lanes=params.lanes,
                memory_cost=params.memory_kib,
            )
            root = bytearray(argon.derive(bytes(secret)))
        finally:
            _zero(secret)
        return cls(root, salt, params)

    # -- ValueCodec ------------------------------------------------------------------------------

    def _cipher(self) -> ChaCha20Poly1305:
        if self._aead is None:
            raise StoreClosed("the store's keys were closed")
        return self._aead

    def encode(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_LEN)
        return bytes([VERSION]) + nonce + self._cipher().encrypt(nonce, plaintext, _AAD)

    def decode(self, stored: bytes) -> bytes:
        cipher = self._cipher()
        stored = bytes(stored)
        if len(stored) < 1 + _NONCE_LEN + 16 or stored[0] != VERSION:
            raise StoreCorrupt("stored value has an unknown format")
        try:
            return cipher.decrypt(stored[1 : 1 + _NONCE_LEN], stored[1 + _NONCE_LEN :], _AAD)
        except InvalidTag:
            raise StoreCorrupt("stored value failed authentication (damaged, or another key)") from None

    # -- lookups and other keys ------------------------------------------------------------------

    def index(self, data: bytes) -> bytes:
        """HMAC-SHA256 under the index key: a stable, keyed lookup key that does not show `data`."""
        if self._closed:
            raise StoreClosed("the store's keys were closed")
        return hmac.new(bytes(self._index_key), data, hashlib.sha256).digest()

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. "vodozemac-pickle"), stable for this database and passphrase."""
        if self._closed:
            raise StoreClosed("the store's keys were closed")
        if not purpose:
            raise ValueError("a key purpose is required")
        key = _hkdf(self._root, "purpose/" + purpose)
        try:
            return bytes(key)
        finally:
            _zero(key)

    # -- the passphrase check --------------------------------------------------------------------

    def make_verifier(self) -> bytes:
        return self.encode(_VERIFIER_PLAINTEXT)

    def check_verifier(self, verifier: bytes) -> None:
        """Raise WrongPassphrase unless `verifier` was made under this passphrase and salt."""
        try:
            ok = self.decode(verifier) == _VERIFIER_PLAINTEXT
        except StoreCorrupt:
            ok = False
        if not ok:
            raise WrongPassphrase("wrong passphrase for this store")

    def close(self) -> None:
        """Zero the key bytes we hold and refuse further use. Idempotent."""
        self._closed = True
        self._aead = None
        for buf in (self._root, self._value_key, self._index_key):
            _zero(buf)

    def __repr__(self) -> str:
        return f"AeadCodec(kdf={self.kdf!r}, closed={self._closed})"
