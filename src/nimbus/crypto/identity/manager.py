"""Identities and trust: our cross-signing keys, other users' checked keys, pinning and trust levels.

Spec: https://spec.matrix.org/v1.12/client-server-api/#cross-signing, POST /keys/device_signing/upload,
POST /keys/signatures/upload; "Recommended client behaviour" (spec v1.18, MSC4153). Rules:
- Bootstrap: the three private keys are put in the change set (committed, encrypted at rest) BEFORE the
  upload request exists; a retry after a crash uploads the same keys. This device is signed by the new
  self-signing key and the master key is signed by this device.
- /keys/query answers are checked (crosssigning.check_identity); a key that fails is refused and reported,
  and what we knew before is kept.
- Trust on first use: the first master key seen for a user is pinned. A different master key later is an
  identity change: it is reported once (`take_changes`) and the user's devices count as "unpinned" until
  the change is acknowledged. For a user we verified, the change blocks sending (`VerifiedIdentityChanged`)
  while `block_verified_changes` is on.
- Trust levels of a device: "verified" (cross-signed by an owner whose pinned key we verified; our own
  identity counts as verified when this device holds its master key), "pinned" (cross-signed by the
  pinned owner), "unpinned" (cross-signed by an identity that replaced the pinned one, not yet
  acknowledged), "unsigned" (no valid signature by its owner's self-signing key, or no identity).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from nimbus.api.keys import KeysQueryResponse
from nimbus.crypto import records
from nimbus.crypto.devices.tracker import DeviceProblem
from nimbus.crypto.errors import CryptoError
from nimbus.crypto.identity.cross_signing import (
    CrossSigningError,
    OwnKeys,
    SigningKey,
    check_identity,
    signed_by,
)
from nimbus.crypto.records import (
    DeviceFlagRecord,
    DeviceRecord,
    IdentityRecord,
    PrivateKeysRecord,
    TrustRecord,
)
from nimbus.crypto.state import State


class TrustLevel(enum.StrEnum):
    VERIFIED = "verified"
    PINNED = "pinned"
    UNPINNED = "unpinned"
    UNSIGNED = "unsigned"


class VerifiedIdentityChanged(CryptoError):
    """A user we verified has a new, unacknowledged identity: nothing is sent to them until the local
    user acknowledges it (`nimbus trust acknowledge USER`)."""

    def __init__(self, users: list[str]) -> None:
        super().__init__(
            "the identity of "
            + ", ".join(users)
            + " changed since you verified it: acknowledge it (nimbus trust acknowledge USER) to send"
        )
        self.users = users


@dataclass(frozen=True)
class IdentityChange:
    """A user's master key is no longer the one we pinned (reported once per new key)."""

    user_id: str
    pinned_master: str
    new_master: str
    was_verified: bool


@dataclass(frozen=True)
class UserIdentity:
    user_id: str
    master_key: str | None
    self_signing_key: str | None
    user_signing_key: str | None
    pinned_master_key: str | None
    verified: bool  # the current master key is the pinned one and the user verified it
    changed: bool  # the current master key is not the pinned one (not yet acknowledged)
    was_verified: bool = False  # changed, and the pinned key had been verified: sending is held


class IdentityManager:
    def __init__(self, state: State, own_user: str, own_device: str) -> None:
        self.state = state
        self.own_user = own_user
        self.own_device = own_device
        self.changes: list[IdentityChange] = []
        self.problems: list[DeviceProblem] = []
        self._signed_cache: dict[tuple[str, str, str, str], bool] = {}
        self._own_master: tuple[str, str] | None = None  # (seed, public key) of our master key

    # -- our own keys -----------------------------------------------------------------------------

    async def private_keys(self) -> PrivateKeysRecord | None:
        return await self.state.get(PrivateKeysRecord, records.CROSS_SIGNING_PRIVATE, "", "")

    async def own_keys(self) -> OwnKeys | None:
        rec = await self.private_keys()
        if rec is None:
            return None
        return OwnKeys(
            SigningKey.from_seed(rec.master),
            SigningKey.from_seed(rec.self_signing),
            SigningKey.from_seed(rec.user_signing),
        )

    async def own_keys_current(self) -> bool:
        """Our private keys are those of the identity the server publishes (or none is known yet).
        False once our identity was replaced from elsewhere: the old keys then vouch for nothing (they
        are kept: a server could fake a replacement, and the user decides with `trust acknowledge`)."""
        rec = await self.private_keys()
        ident = await self.identity(self.own_user)
        if rec is None:
            return False
        if ident is None:
            return True
        if self._own_master is None or self._own_master[0] != rec.master:
            self._own_master = (rec.master, SigningKey.from_seed(rec.master).public)
        return self._own_master[1] == ident.master_key

    async def bootstrap(self) -> OwnKeys:
        """Make (or reuse, if made before and not yet uploaded) our cross-signing keys; pins them."""
        keys = await self.own_keys()
        if keys is None:
            keys = OwnKeys.generate()
            self.state.put(
                records.CROSS_SIGNING_PRIVATE,
                "",
                "",
                PrivateKeysRecord(keys.master.seed(), keys.self_signing.seed(), keys.user_signing.seed()),
            )
        self.state.put(records.TRUST, self.own_user, "", TrustRecord(keys.master.public, verified=True))
        return keys

    async def mark_uploaded(self, *, device_signed: bool) -> None:
        rec = await self.private_keys()
        if rec is not None:
            self.state.put(
                records.CROSS_SIGNING_PRIVATE,
                "",
                "",
                replace(rec, uploaded=True, device_signed=device_signed),
            )

    # -- /keys/query ------------------------------------------------------------------------------

    async def receive_query(self, response: KeysQueryResponse) -> list[str]:
        """Check and store the cross-signing keys in a /keys/query answer; returns users whose identity
        changed (new master key) in this answer."""
        changed: list[str] = []
        for user_key, master in response.master_keys.items():
            user = str(user_key)
            ssk = response.self_signing_keys.get(user_key)
            usk = response.user_signing_keys.get(user_key) if user == self.own_user else None
            try:
                identity = check_identity(user, master, ssk, usk)
            except CrossSigningError as e:
                self.problems.append(DeviceProblem(user, "", f"cross-signing keys refused: {e}"))
                continue
            record = IdentityRecord(
                identity.master_key,
                identity.self_signing_key,
                identity.user_signing_key,
                identity.master_json,
            )
            old = await self.state.get(IdentityRecord, records.CROSS_SIGNING_IDENTITY, user, "")
            if old != record:
                self.state.put(records.CROSS_SIGNING_IDENTITY, user, "", record)
            trust = await self.state.get(TrustRecord, records.TRUST, user, "")
            if trust is None:
                self.state.put(records.TRUST, user, "", TrustRecord(identity.master_key))  # first use
            elif trust.pinned_master != identity.master_key:
                if old is None or old.master_key != identity.master_key:
                    change = IdentityChange(user, trust.pinned_master, identity.master_key, trust.verified)
                    self.changes.append(change)
                    changed.append(user)
        return changed

    # -- reading ------------------------------------------------------------------------------------

    async def identity(self, user: str) -> IdentityRecord | None:
        return await self.state.get(IdentityRecord, records.CROSS_SIGNING_IDENTITY, user, "")

    async def trust(self, user: str) -> TrustRecord | None:
        return await self.state.get(TrustRecord, records.TRUST, user, "")

    async def user_identity(self, user: str) -> UserIdentity:
        ident, trust = await self.identity(user), await self.trust(user)
        master = ident.master_key if ident else None
        pinned = trust.pinned_master if trust else None
        verified = trust is not None and trust.verified and master == pinned
        changed = master is not None and pinned is not None and master != pinned
        return UserIdentity(
            user_id=user,
            master_key=master,
            self_signing_key=ident.self_signing_key if ident else None,
            user_signing_key=ident.user_signing_key if ident else None,
            pinned_master_key=pinned,
            verified=verified,
            changed=changed,
            was_verified=changed and trust is not None and trust.verified,
        )

    async def verification_violation(self, user: str) -> bool:
        """A user we verified now shows another identity, not yet acknowledged."""
        return (await self.user_identity(user)).was_verified

    def _signed(self, device: DeviceRecord, ssk: str) -> bool:
        sig = str(device.keys_json.get("signatures", {}).get(device.user_id, {}).get(f"ed25519:{ssk}", ""))
        key = (device.user_id, device.device_id, ssk, sig + device.ed25519)
        hit = self._signed_cache.get(key)
        if hit is None:
            hit = bool(sig) and signed_by(device.keys_json, device.user_id, ssk)
            if len(self._signed_cache) > 100_000:
                self._signed_cache.clear()
            self._signed_cache[key] = hit
        return hit

    async def signed_by_owner(self, device: DeviceRecord) -> bool:
        ident = await self.identity(device.user_id)
        return ident is not None and self._signed(device, ident.self_signing_key)

    async def device_trust(self, device: DeviceRecord) -> TrustLevel:
        ident = await self.identity(device.user_id)
        if ident is None or not self._signed(device, ident.self_signing_key):
            return TrustLevel.UNSIGNED
        trust = await self.trust(device.user_id)
        if trust is None or trust.pinned_master != ident.master_key:
            return TrustLevel.UNPINNED
        return TrustLevel.VERIFIED if trust.verified else TrustLevel.PINNED

    async def blocked_devices(self, user: str) -> set[str]:
        """The device ids of `user` we blocked (one read of the user's trust group)."""
        out = set()
        for item, raw in (await self.state.list_raw(records.TRUST, user)).items():
            if item and records.load(DeviceFlagRecord, raw).blocked:
                out.add(item)
        return out

    async def blocked(self, user: str, device_id: str) -> bool:
        flag = await self.state.get(DeviceFlagRecord, records.TRUST, user, device_id)
        return flag is not None and flag.blocked

    # -- decisions of the local user ------------------------------------------------------------------

    async def acknowledge(self, user: str) -> bool:
        """Pin the user's current master key (after an identity change). False if there is none."""
        ident = await self.identity(user)
        if ident is None:
            return False
        own = await self.own_keys() if user == self.own_user else None
        verified = own is not None and own.master.public == ident.master_key
        self.state.put(records.TRUST, user, "", TrustRecord(ident.master_key, verified=verified))
        return True

    async def verify(self, user: str, master_key: str) -> dict[str, Any] | None:
        """Mark `master_key` (compared out of band by the user) as verified; it must be the user's
        current master key. Returns the user-signing signature body to upload, if we hold that key."""
        ident = await self.identity(user)
        if ident is None or ident.master_key != master_key:
            raise CryptoError("that is not the user's current master key: nothing was verified")
        self.state.put(records.TRUST, user, "", TrustRecord(master_key, verified=True))
        own = await self.own_keys()
        if own is None or user == self.own_user:
            return None
        signed = own.user_signing.sign_json(dict(ident.master_json), self.own_user)
        return {user: {master_key: signed}}

    def set_blocked(self, user: str, device_id: str, blocked: bool) -> None:
        self.state.put(records.TRUST, user, device_id, DeviceFlagRecord(blocked=blocked))
