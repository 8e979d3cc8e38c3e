"""How the CLI shows identities, device trust and the key-sharing policy: JSON objects and lines.

Pure formatting: no I/O, no client calls (trust_commands and commands call these). Rules: master keys
are shown whole (they are public keys, and the whole key is what people compare out of band), grouped
in 4-character blocks for people; JSON always carries the key without spaces.

Spec: "Cross-signing" (https://spec.matrix.org/v1.12/client-server-api/#cross-signing) for the keys;
m.room_key.withheld codes (https://spec.matrix.org/v1.12/client-server-api/#mroom_keywithheld).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nimbus.client.client import OwnIdentity
from nimbus.crypto.identity.manager import IdentityChange, UserIdentity
from nimbus.crypto.machine import DeviceInfo

NOT_SIGNED_HINT = (
    "this device is not cross-signed: other users' clients (and nimbus in cross_signed mode) will not "
    "share room keys with it until you verify it from a signed device (nimbus devices sign DEVICE_ID there)"
)

WITHHELD_WORDS = {
    "m.unverified": "the sender does not share keys with unverified devices",
    "m.blacklisted": "the sender blocked this device",
    "m.unauthorised": "the sender does not think this device may read it",
    "m.unavailable": "the key was asked for but nobody had it",
    "m.no_olm": "the sender could not open a secure channel to this device",
}


def grouped(key: str | None) -> str:
    """A key in 4-character blocks for reading aloud and comparing ("abcd efgh ijkl ...")."""
    if not key:
        return "(none)"
    return " ".join(key[i : i + 4] for i in range(0, len(key), 4))


def normalized_key(parts: Iterable[str]) -> str:
    """A key the user typed or pasted, whole or in blocks (one argument or several): no whitespace."""
    return "".join("".join(parts).split())


# --- our own identity -----------------------------------------------------------------------------


def own_identity_json(ident: OwnIdentity) -> dict[str, Any]:
    return {
        "type": "identity",
        "user_id": ident.user_id,
        "device_id": ident.device_id,
        "master_key": ident.master_key,
        "self_signing_key": ident.self_signing_key,
        "user_signing_key": ident.user_signing_key,
        "has_private_keys": ident.has_private_keys,
        "device_signed": ident.device_signed,
    }


def own_identity_text(ident: OwnIdentity) -> str:
    if ident.master_key is None:
        return (
            f"{ident.user_id} has no cross-signing identity (no master key): set one up, e.g. by logging "
            f"in without --no-cross-signing on a new profile, or from another client"
        )
    lines = [
        f"{ident.user_id} (device {ident.device_id})",
        f"  fingerprint (master key): {grouped(ident.master_key)}",
        f"  self-signing key:         {grouped(ident.self_signing_key)}",
        f"  user-signing key:         {grouped(ident.user_signing_key)}",
        "  private keys:             "
        + ("on this device" if ident.has_private_keys else "not on this device"),
        "  this device:              " + ("cross-signed" if ident.device_signed else "NOT cross-signed"),
    ]
    if not ident.device_signed:
        lines.append(NOT_SIGNED_HINT)
    return "\n".join(lines)


# --- other users --------------------------------------------------------------------------------


def user_identity_fields(ident: UserIdentity) -> dict[str, Any]:
    """The identity state as keys added to each device object of `devices --user`."""
    return {
        "master_key": ident.master_key,
        "pinned_master_key": ident.pinned_master_key,
        "identity_verified": ident.verified,
        "identity_changed": ident.changed,
    }


def user_identity_json(ident: UserIdentity) -> dict[str, Any]:
    return {
        "type": "user_identity",
        "user_id": ident.user_id,
        "master_key": ident.master_key,
        "self_signing_key": ident.self_signing_key,
        "user_signing_key": ident.user_signing_key,
        "pinned_master_key": ident.pinned_master_key,
        "pinned": ident.master_key is not None and ident.master_key == ident.pinned_master_key,
        "verified": ident.verified,
        "changed": ident.changed,
    }


def acknowledge_hint(user_id: str) -> str:
    return f"verify it, or run: nimbus trust acknowledge {user_id}"


def user_identity_text(ident: UserIdentity) -> str:
    if ident.master_key is None:
        return f"{ident.user_id}: no cross-signing identity (master key: none; every device is unsigned)"
    if ident.changed:
        state = "CHANGED"
    elif ident.verified:
        state = "verified"
    else:
        state = "pinned, not verified"
    line = f"{ident.user_id}: identity {state}; master key {grouped(ident.master_key)}"
    if ident.changed:
        line += (
            f"\n! the identity of {ident.user_id} changed (you had pinned "
            f"{grouped(ident.pinned_master_key)}); {acknowledge_hint(ident.user_id)}"
        )
    return line


def device_json(d: DeviceInfo, ident: UserIdentity) -> dict[str, Any]:
    """A device of `devices --user`: the earlier keys (type, user_id, device_id, curve25519, ed25519)
    plus trust, signed_by_owner, blocked and the owner's identity state."""
    return {
        "type": "device",
        "user_id": d.user_id,
        "device_id": d.device_id,
        "curve25519": d.curve25519,
        "ed25519": d.ed25519,
        "trust": d.trust,
        "signed_by_owner": d.signed_by_owner,
        "blocked": d.blocked,
        **user_identity_fields(ident),
    }


def device_text(d: DeviceInfo) -> str:
    flags = [d.trust]
    if d.blocked:
        flags.append("BLOCKED")
    return f"{d.user_id} {d.device_id}  [{', '.join(flags)}]  curve25519 {d.curve25519}  ed25519 {d.ed25519}"


# --- messages and sync ----------------------------------------------------------------------------


def undecrypted_text(e2ee: dict[str, Any]) -> str:
    """Why a message cannot be shown, for people: the withheld code explained, or the cause."""
    cause = e2ee.get("cause")
    if cause == "withheld":
        code = str(e2ee.get("code") or "unknown")
        return f"[withheld: {code} — {WITHHELD_WORDS.get(code, e2ee.get('reason') or 'no reason given')}]"
    if cause == "unverified_sender":
        return (
            "[hidden: unverified_sender — sent from a device its owner has not cross-signed; "
            "nimbus in cross_signed mode does not show it]"
        )
    return f"(unable to decrypt: {cause})"


def identity_change_warning(change: IdentityChange) -> str:
    line = f"! the identity of {change.user_id} changed; {acknowledge_hint(change.user_id)}"
    if change.was_verified:
        line += " (you had verified it: nothing is sent to them until you do)"
    return line
