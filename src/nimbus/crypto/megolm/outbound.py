"""Outbound Megolm sessions: one per room, shared over Olm, rotated by the spec's rules.

Spec: https://spec.matrix.org/v1.12/client-server-api/#mmegolmv1aes-sha2 and #mroom_key; rotation per
"m.room.encryption" (rotation_period_ms default one week, rotation_period_msgs default 100);
`shared_history` in m.room_key per spec v1.19 (MSC3061). A new session is made when:
- none exists, or it is too old or has encrypted too many messages;
- a user it was shared with is no longer a member (left, kicked, banned, or uninvited);
- a device it was shared with is gone from its user's device list or changed its key;
- the history visibility flipped `shared_history`; or invalidate() was called.
Pitfall (vodozemac): `GroupSession.session_key` is the *current* ratchet state, so a room key is
exported before the message it protects is encrypted. Each share and each encrypt puts the advanced
pickle in the change set together with the to-device ciphertext that carries the key.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace as _replace
from typing import Any

import vodozemac

from nimbus.crypto import records
from nimbus.crypto.errors import NotShared, StoreDataError
from nimbus.crypto.olm.account import MEGOLM_ALGORITHM, AccountMachine
from nimbus.crypto.olm.sessions import OlmSessions
from nimbus.crypto.records import DeviceRecord, InboundSessionRecord, OutboundSessionRecord, OutgoingRecord
from nimbus.crypto.state import State

WEEK_MS = 7 * 24 * 3600 * 1000
DEFAULT_ROTATION_MSGS = 100
TO_DEVICE_BATCH = 250  # messages per /sendToDevice request


def shared_history_for(history_visibility: str) -> bool:
    # Spec v1.19, m.room_key.shared_history (MSC3061): "shared" or "world_readable" history.
    return history_visibility in ("shared", "world_readable")


def rotation_settings(encryption: dict[str, Any] | None) -> tuple[int, int]:
    """(rotation_period_ms, rotation_period_msgs) from m.room.encryption content, with the defaults."""
    enc = encryption or {}
    ms, msgs = enc.get("rotation_period_ms"), enc.get("rotation_period_msgs")
    ms_ok = isinstance(ms, int) and not isinstance(ms, bool) and ms > 0
    msgs_ok = isinstance(msgs, int) and not isinstance(msgs, bool) and msgs > 0
    return (ms if ms_ok else WEEK_MS), (msgs if msgs_ok else DEFAULT_ROTATION_MSGS)  # type: ignore[return-value]


class GroupSessionSender:
    def __init__(self, state: State, account: AccountMachine, olm: OlmSessions, pickle_key: bytes) -> None:
        self.state = state
        self.account = account
        self.olm = olm
        self._pickle_key = pickle_key
        self._live: dict[str, tuple[str, vodozemac.GroupSession]] = {}  # session id -> (pickle, session)

    async def current(self, room_id: str) -> OutboundSessionRecord | None:
        return await self.state.get(OutboundSessionRecord, records.OUTBOUND, "", room_id)

    def invalidate(self, room_id: str) -> None:
        self.state.delete(records.OUTBOUND, "", room_id)

    def _expired(self, rec: OutboundSessionRecord, now_ms: int) -> bool:
        return (
            rec.message_count >= rec.rotation_period_msgs or now_ms - rec.created_ms >= rec.rotation_period_ms
        )

    def needs_rotation(
        self,
        rec: OutboundSessionRecord,
        devices: dict[str, dict[str, DeviceRecord]],
        shared_history: bool,
        now_ms: int,
    ) -> str | None:
        """Why `rec` must be replaced, or None."""
        if self._expired(rec, now_ms):
            return "rotation period reached"
        if rec.shared_history != shared_history:
            return "history visibility changed"
        for user, by_device in rec.shared_with.items():
            if user not in devices:
                return "a member left"
            for device_id, curve in by_device.items():
                now = devices[user].get(device_id)
                if now is None or now.curve25519 != curve:
                    return "a device was removed"
        return None

    async def prepare(
        self,
        room_id: str,
        devices: dict[str, dict[str, DeviceRecord]],
        shared_history: bool,
        encryption: dict[str, Any] | None,
        now_ms: int,
    ) -> OutboundSessionRecord:
        rec = await self.current(room_id)
        if rec is not None and self.needs_rotation(rec, devices, shared_history, now_ms) is None:
            return rec
        ms, msgs = rotation_settings(encryption)
        session = vodozemac.GroupSession()
        rec = OutboundSessionRecord(
            pickle=session.pickle(self._pickle_key),
            session_id=session.session_id,
            created_ms=now_ms,
            message_count=0,
            shared_history=shared_history,
            rotation_period_ms=ms,
            rotation_period_msgs=msgs,
        )
        # Our own inbound copy, so we can read our own messages (same binding rules as any other).
        inbound = vodozemac.InboundGroupSession(session.session_key)
        self.state.put(
            records.INBOUND,
            room_id,
            session.session_id,
            InboundSessionRecord(
                pickle=inbound.pickle(self._pickle_key),
                room_id=room_id,
                session_id=session.session_id,
                sender_user=self.account.user_id,
                sender_device=self.account.device_id,
                sender_key=self.account.curve25519,
                signing_key=self.account.ed25519,
                shared_history=shared_history,
            ),
        )
        self.state.put(records.OUTBOUND, "", room_id, rec)
        return rec

    def _load(self, rec: OutboundSessionRecord) -> vodozemac.GroupSession:
        """The live session for a record: kept between messages while its pickle is the one the
        record holds (an unpickle per message costs more than the encryption itself)."""
        live = self._live.get(rec.session_id)
        if live is not None and live[0] == rec.pickle:
            return live[1]
        try:
            session = vodozemac.GroupSession.from_pickle(rec.pickle, self._pickle_key)
        except ValueError:
            raise StoreDataError("an outbound group session pickle cannot be read") from None
        self._live[rec.session_id] = (rec.pickle, session)
        return session

    async def share(
        self, room_id: str, rec: OutboundSessionRecord, targets: list[DeviceRecord], now_ms: int
    ) -> list[tuple[str, OutgoingRecord]]:
        """Encrypt the room key for every target device with an Olm session and not yet shared with.

        Returns the stored outgoing to-device requests (request id, record); the advanced Olm sessions,
        the outgoing records and the updated `shared_with` are all in the same change set.
        """
        if all(d.device_id in rec.shared_with.get(d.user_id, {}) for d in targets):
            return []  # everyone has this session already: no state change, nothing to send
        session = self._load(rec)
        room_key = {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": room_id,
            "session_id": session.session_id,
            "session_key": session.session_key.to_base64(),
            "shared_history": rec.shared_history,
        }
        shared = {u: dict(d) for u, d in rec.shared_with.items()}
        messages: list[tuple[str, str, dict[str, Any]]] = []
        for device in targets:
            if device.device_id in shared.get(device.user_id, {}):
                continue
            content = await self.olm.encrypt(device, "m.room_key", room_key, now_ms)
            if content is None:
                continue
            messages.append((device.user_id, device.device_id, content))
            shared.setdefault(device.user_id, {})[device.device_id] = device.curve25519
        out = self.store_batched("m.room.encrypted", messages)
        self.state.put(records.OUTBOUND, "", room_id, _replace(rec, shared_with=shared))
        return out

    def store_batched(
        self, event_type: str, messages: list[tuple[str, str, dict[str, Any]]]
    ) -> list[tuple[str, OutgoingRecord]]:
        """(user, device, content) messages stored as outgoing to-device requests of at most
        TO_DEVICE_BATCH messages each."""
        out = []
        for i in range(0, len(messages), TO_DEVICE_BATCH):
            batch: dict[str, dict[str, dict[str, Any]]] = {}
            for user, device_id, content in messages[i : i + TO_DEVICE_BATCH]:
                batch.setdefault(user, {})[device_id] = content
            out.append(self.store_outgoing(event_type, batch))
        return out

    def store_outgoing(
        self, event_type: str, messages: dict[str, dict[str, dict[str, Any]]]
    ) -> tuple[str, OutgoingRecord]:
        txn_id = f"nimbus-{secrets.token_hex(12)}"
        outgoing = OutgoingRecord(kind="to_device", event_type=event_type, txn_id=txn_id, messages=messages)
        self.state.put(records.OUTGOING, "", txn_id, outgoing)
        return txn_id, outgoing

    async def encrypt(
        self, room_id: str, event_type: str, content: dict[str, Any], now_ms: int
    ) -> dict[str, Any]:
        """m.room.encrypted content (spec: m.megolm.v1.aes-sha2). Raises NotShared."""
        rec = await self.current(room_id)
        if rec is None or self._expired(rec, now_ms):
            raise NotShared("no usable outbound session for this room: call share_room_key first")
        session = self._load(rec)
        payload = {"type": event_type, "content": content, "room_id": room_id}
        message = session.encrypt(json.dumps(payload).encode())
        pickle = session.pickle(self._pickle_key)  # the ratchet advance, saved before the ciphertext leaves
        self._live[rec.session_id] = (pickle, session)
        self.state.put(
            records.OUTBOUND, "", room_id, _replace(rec, pickle=pickle, message_count=rec.message_count + 1)
        )
        return {
            "algorithm": MEGOLM_ALGORITHM,
            "ciphertext": message.to_base64(),
            "session_id": session.session_id,
            # Deprecated since v1.3 but still read by older clients:
            "sender_key": self.account.curve25519,
            "device_id": self.account.device_id,
        }
