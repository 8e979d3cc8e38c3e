"""Canonical JSON and Ed25519 signatures of JSON objects.

Spec: https://spec.matrix.org/v1.12/appendices/#canonical-json and #signing-json. Canonical JSON: keys
sorted by code point, no insignificant whitespace, UTF-8, no floats (integers in [-(2**53)+1, 2**53-1]).
A signature covers the object without its `signatures` and `unsigned` members.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import vodozemac

from nimbus.crypto.errors import CryptoError

_MAX_INT = 2**53 - 1


class CanonicalJsonError(CryptoError):
    """A value cannot be written as canonical JSON (a float, a huge integer, a non-string key)."""


class SignatureError(CryptoError):
    """A JSON object's signature is missing or does not verify."""


def _check(value: Any, depth: int = 0) -> None:
    if depth > 100:
        raise CanonicalJsonError("JSON nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -_MAX_INT <= value <= _MAX_INT:
            raise CanonicalJsonError("integer out of the canonical JSON range")
        return
    if isinstance(value, float):
        raise CanonicalJsonError("floats are not allowed in canonical JSON")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalJsonError("object key is not a string")
            _check(v, depth + 1)
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check(v, depth + 1)
        return
    raise CanonicalJsonError(f"{type(value).__name__} is not JSON")


def canonical_json(value: Any) -> bytes:
    """The canonical JSON encoding of `value`."""
    _check(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def signable(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature of `obj` covers (spec: "Signing JSON", step 1-3)."""
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def sign_json(
    obj: Mapping[str, Any], signer: Callable[[bytes], str], user_id: str, key_id: str
) -> dict[str, Any]:
    """A copy of `obj` with `signatures[user_id][key_id]` added; `signer` returns unpadded base64."""
    signature = signer(signable(obj))
    out = dict(obj)
    sigs = {u: dict(s) for u, s in dict(out.get("signatures") or {}).items()}
    sigs.setdefault(user_id, {})[key_id] = signature
    out["signatures"] = sigs
    return out


def verify_json(obj: Mapping[str, Any], user_id: str, key_id: str, ed25519_key: str) -> None:
    """Check `obj.signatures[user_id][key_id]` against an Ed25519 public key (unpadded base64).

    Raises SignatureError (also for a malformed key, signature or object).
    """
    sigs = obj.get("signatures")
    if not isinstance(sigs, Mapping):
        raise SignatureError("object has no signatures")
    by_user = sigs.get(user_id)
    if not isinstance(by_user, Mapping):
        raise SignatureError("no signature by the expected user")
    sig = by_user.get(key_id)
    if not isinstance(sig, str):
        raise SignatureError("no signature by the expected key")
    try:
        message = signable(obj)
        key = vodozemac.Ed25519PublicKey.from_base64(ed25519_key)
        key.verify_signature(message, vodozemac.Ed25519Signature.from_base64(sig))
    except CanonicalJsonError as e:
        raise SignatureError(f"object is not canonical JSON: {e}") from None
    except (ValueError, TypeError):
        raise SignatureError("signature does not verify") from None
