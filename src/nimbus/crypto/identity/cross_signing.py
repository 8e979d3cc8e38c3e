"""Cross-signing keys: our own private keys, and the checks every published key must pass.

Spec: https://spec.matrix.org/v1.12/client-server-api/#cross-signing. A user has a master key, a
self-signing key (signs the user's own devices) and a user-signing key (signs other users' master keys),
all Ed25519. Vodozemac's bindings have no Ed25519 private keys, so ours are made with `cryptography`.
Rules checked here (a failing check raises `CrossSigningError` naming what was wrong, never a key):
- a cross-signing key object names the right user, has the right `usage` and exactly one Ed25519 key
  whose key id is `ed25519:<unpadded base64 public key>`;
- the self-signing and user-signing keys carry a valid signature by the master key;
- a device is cross-signed when its (self-signed) device keys carry a valid signature by its owner's
  self-signing key; a user's master key is verified by us when our user-signing key signed it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nimbus.crypto.canonical_json import SignatureError, sign_json, verify_json
from nimbus.crypto.errors import CryptoError

MASTER = "master"
SELF_SIGNING = "self_signing"
USER_SIGNING = "user_signing"
USAGES = (MASTER, SELF_SIGNING, USER_SIGNING)


class CrossSigningError(CryptoError):
    """A cross-signing key or signature failed its check (the message names which, never a key)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class SigningKey:
    """One Ed25519 private cross-signing key (the 32-byte seed stays in this object and the store)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = _b64(private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed_b64: str) -> SigningKey:
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(_unb64(seed_b64)))
        except ValueError:
            raise CrossSigningError("a stored cross-signing private key cannot be read") from None

    def seed(self) -> str:
        return _b64(self._private.private_bytes_raw())

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.public}"

    def sign(self, message: bytes) -> str:
        return _b64(self._private.sign(message))

    def sign_json(self, obj: dict[str, Any], user_id: str) -> dict[str, Any]:
        return sign_json(obj, self.sign, user_id, self.key_id)


def key_object(user_id: str, usage: str, public: str) -> dict[str, Any]:
    """An unsigned cross-signing key object (spec: "CrossSigningKey")."""
    return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}


@dataclass(frozen=True)
class OwnKeys:
    """Our three private cross-signing keys (any may be absent on a device that did not make them)."""

    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def generate(cls) -> OwnKeys:
        return cls(SigningKey.generate(), SigningKey.generate(), SigningKey.generate())

    def public_objects(self, user_id: str) -> dict[str, dict[str, Any]]:
        """The body of POST /keys/device_signing/upload (without `auth`): the master key (signed by
        the caller's device separately if wanted) and the two sub-keys signed by the master key."""
        return {
            "master_key": key_object(user_id, MASTER, self.master.public),
            "self_signing_key": self.master.sign_json(
                key_object(user_id, SELF_SIGNING, self.self_signing.public), user_id
            ),
            "user_signing_key": self.master.sign_json(
                key_object(user_id, USER_SIGNING, self.user_signing.public), user_id
            ),
        }


def check_key_object(obj: Any, user_id: str, usage: str) -> str:
    """The public key of a cross-signing key object after its shape checks. Raises CrossSigningError."""
    if not isinstance(obj, dict):
        raise CrossSigningError(f"{usage} key is not an object")
    if obj.get("user_id") != user_id:
        raise CrossSigningError(f"{usage} key names another user")
    usages = obj.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        raise CrossSigningError(f"{usage} key lacks usage {usage!r}")
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise CrossSigningError(f"{usage} key must hold exactly one key")
    [(key_id, public)] = keys.items()
    if not isinstance(public, str) or key_id != f"ed25519:{public}":
        raise CrossSigningError(f"{usage} key id does not match its Ed25519 key")
    try:
        if len(_unb64(public)) != 32:
            raise ValueError
    except ValueError:
        raise CrossSigningError(f"{usage} key is not an Ed25519 public key") from None
    return public


def check_signed_by(obj: Any, user_id: str, signer_public: str, what: str) -> None:
    """`obj` carries a valid signature of `user_id`'s key `signer_public`. Raises CrossSigningError."""
    if not isinstance(obj, dict):
        raise CrossSigningError(f"{what} is not an object")
    try:
        verify_json(obj, user_id, f"ed25519:{signer_public}", signer_public)
    except SignatureError as e:
        raise CrossSigningError(f"{what}: {e}") from None


def signed_by(obj: Any, user_id: str, signer_public: str) -> bool:
    try:
        check_signed_by(obj, user_id, signer_public, "object")
    except CrossSigningError:
        return False
    return True


@dataclass(frozen=True)
class PublicIdentity:
    """A user's published cross-signing keys, checked (master → self-signing → devices)."""

    user_id: str
    master_key: str
    self_signing_key: str
    user_signing_key: str | None
    master_json: dict[str, Any]


def check_identity(
    user_id: str, master: Any, self_signing: Any, user_signing: Any | None = None
) -> PublicIdentity:
    """Check a user's master key, self-signing key (signed by the master key) and, for our own user,
    the user-signing key (signed by the master key). Raises CrossSigningError."""
    master_key = check_key_object(master, user_id, MASTER)
    ssk = check_key_object(self_signing, user_id, SELF_SIGNING)
    check_signed_by(self_signing, user_id, master_key, "self-signing key is not signed by the master key")
    usk = None
    if user_signing is not None:
        usk = check_key_object(user_signing, user_id, USER_SIGNING)
        check_signed_by(user_signing, user_id, master_key, "user-signing key is not signed by the master key")
    return PublicIdentity(user_id, master_key, ssk, usk, dict(master))
