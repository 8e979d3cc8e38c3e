"""The key-sharing policy: which member devices get a room key, and the withheld notices for the rest.

Spec: https://spec.matrix.org/v1.12/client-server-api/#reporting-that-decryption-keys-are-withheld and
v1.18 "Recommended client behaviour" (MSC4153). Rules:
- LEGACY mode: every device of every member gets the key, except devices the user blocked
  (`m.blacklisted`);
- CROSS_SIGNED mode (the default): additionally, devices their owner did not cross-sign get
  `m.unverified` instead of the key (and the machine hides events they send);
- a member we verified whose identity changed (not yet acknowledged) blocks the whole share with
  `VerifiedIdentityChanged` while `block_verified_changes` is on;
- a notice goes once per (session, device) and code; `m.no_olm` (no one-time key to make an Olm
  session) goes once per device, without room or session id. Notices are plaintext to-device events,
  stored as outgoing objects like every other to-device message (same bytes on a retry).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from nimbus.crypto import records
from nimbus.crypto.identity.manager import IdentityManager, TrustLevel, VerifiedIdentityChanged
from nimbus.crypto.megolm.outbound import GroupSessionSender
from nimbus.crypto.olm.account import MEGOLM_ALGORITHM, AccountMachine
from nimbus.crypto.records import DeviceRecord, NoOlmRecord, OutgoingRecord
from nimbus.crypto.state import State

WITHHELD = "m.room_key.withheld"
REASONS = {
    "m.unverified": "The sender shares keys only with devices cross-signed by their owner.",
    "m.blacklisted": "The sender blocked this device.",
    "m.no_olm": "Unable to establish a secure channel (no one-time key).",
}


class SharingMode(enum.StrEnum):
    """LEGACY: every device of every member (blocked devices excepted). CROSS_SIGNED: only devices
    cross-signed by their owner; the others get m.room_key.withheld `m.unverified`, and events from
    them are not shown (DecryptionCause.UNVERIFIED_SENDER)."""

    LEGACY = "legacy"
    CROSS_SIGNED = "cross_signed"


DEFAULT_SHARING_MODE = SharingMode.CROSS_SIGNED  # the spec's current recommendation

Devices = dict[str, dict[str, DeviceRecord]]
Stored = list[tuple[str, OutgoingRecord]]


class SharingPolicy:
    def __init__(
        self,
        state: State,
        account: AccountMachine,
        identities: IdentityManager,
        sender: GroupSessionSender,
        trust: Callable[[DeviceRecord], Awaitable[TrustLevel]],
    ) -> None:
        self.state = state
        self.account = account
        self.identities = identities
        self.sender = sender
        self.trust = trust
        self.mode = DEFAULT_SHARING_MODE
        self.block_verified_changes = True

    async def split(self, devices: Devices) -> tuple[Devices, list[tuple[DeviceRecord, str]]]:
        """(devices that get the key, [(device, withheld code)]). Raises VerifiedIdentityChanged."""
        if self.block_verified_changes:
            violating = [u for u in sorted(devices) if await self.identities.verification_violation(u)]
            if violating:
                raise VerifiedIdentityChanged(violating)
        eligible: Devices = {}
        withheld: list[tuple[DeviceRecord, str]] = []
        for user, devs in devices.items():
            eligible[user] = {}
            blocked = await self.identities.blocked_devices(user)
            for device_id, d in devs.items():
                if device_id in blocked:
                    withheld.append((d, "m.blacklisted"))
                elif self.mode == SharingMode.CROSS_SIGNED and await self.trust(d) == TrustLevel.UNSIGNED:
                    withheld.append((d, "m.unverified"))
                else:
                    eligible[user][device_id] = d
        return eligible, withheld

    def _notice(self, code: str, **where: str) -> dict[str, Any]:
        return {
            "algorithm": MEGOLM_ALGORITHM,
            **where,
            "sender_key": self.account.curve25519,
            "from_device": self.account.device_id,
            "code": code,
            "reason": REASONS[code],
        }

    async def withheld_notices(self, room_id: str, withheld: list[tuple[DeviceRecord, str]]) -> Stored:
        """m.room_key.withheld for the room's current session, once per device and code."""
        rec = await self.sender.current(room_id)
        if rec is None or not withheld:
            return []
        sent = {u: dict(d) for u, d in rec.withheld_from.items()}
        messages = []
        for d, code in withheld:
            if sent.get(d.user_id, {}).get(d.device_id) == code:
                continue
            notice = self._notice(code, room_id=room_id, session_id=rec.session_id)
            messages.append((d.user_id, d.device_id, notice))
            sent.setdefault(d.user_id, {})[d.device_id] = code
        if not messages:
            return []
        self.state.put(records.OUTBOUND, "", room_id, replace(rec, withheld_from=sent))
        return self.sender.store_batched(WITHHELD, messages)

    async def no_olm_notices(self, devices: list[DeviceRecord], now_ms: int) -> Stored:
        """m.no_olm once per device, without room or session id (spec)."""
        messages = []
        for d in devices:
            if await self.state.get_raw(records.NO_OLM, d.user_id, d.device_id) is None:
                messages.append((d.user_id, d.device_id, self._notice("m.no_olm")))
                self.state.put(records.NO_OLM, d.user_id, d.device_id, NoOlmRecord(now_ms))
        return self.sender.store_batched(WITHHELD, messages)
