"""Inbound Megolm sessions, room event decryption, the replay table and withheld notices.

Spec: https://spec.matrix.org/v1.12/client-server-api/#mmegolmv1aes-sha2, #mroom_key,
#reporting-that-decryption-keys-are-withheld. Rules:
- a session is added only from an Olm-decrypted m.room_key and bound to the Curve25519/Ed25519 keys of
  the Olm-authenticated device; it is looked up by (room id, session id), never by sender_key;
- a session we already hold is not replaced by one that starts later (a higher first known index);
- the decrypted payload's room_id must equal the event's room, and the event's sender must be the user
  whose device shared the session;
- the replay table maps (session id, message index) → (event id, origin_server_ts) in the store, so the
  same index under another event is rejected, also after a restart;
- a withheld notice is recorded and given as the cause when the session is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import vodozemac

from nimbus.crypto import records
from nimbus.crypto.devices.tracker import DeviceTracker
from nimbus.crypto.errors import DecryptionCause, DecryptionError, StoreDataError, ToDeviceCause
from nimbus.crypto.olm.account import MEGOLM_ALGORITHM
from nimbus.crypto.olm.sessions import OlmDecrypted, OlmFailure
from nimbus.crypto.records import InboundSessionRecord, ReplayRecord, WithheldRecord
from nimbus.crypto.state import State
from nimbus.types.events import Event


@dataclass(frozen=True)
class DecryptedEvent:
    """A decrypted room event. `type`/`content` come from the Megolm payload.

    `sender_device` and `verified` describe the device that shared the session: `verified` is True
    when that device is in our device list with the same keys the session is bound to and the session
    came from it directly (not forwarded). `trust` is that device's cross-signing trust level.
    """

    event_id: str
    room_id: str
    sender: str
    type: str
    content: dict[str, Any]
    session_id: str
    message_index: int
    sender_key: str
    signing_key: str
    sender_device: str | None
    verified: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    trust: str = "unsigned"  # the sending device's trust level (machine.py fills it in)
    authentic: bool = True  # False for a session we got forwarded (authenticity not guaranteed)


def _fail(cause: DecryptionCause, detail: str) -> DecryptionError:
    return DecryptionError(cause, detail)


class GroupSessionReceiver:
    def __init__(self, state: State, devices: DeviceTracker, pickle_key: bytes) -> None:
        self.state = state
        self.devices = devices
        self._pickle_key = pickle_key
        self._live: dict[tuple[str, str], tuple[str, vodozemac.InboundGroupSession]] = {}

    async def add_room_key(self, sender: str, olm: OlmDecrypted, content: dict[str, Any]) -> tuple[str, str]:
        """Store the session of an Olm-decrypted m.room_key. Returns (room id, session id)."""
        bad = ToDeviceCause.BAD_ROOM_KEY
        room_id, session_id = content.get("room_id"), content.get("session_id")
        session_key = content.get("session_key")
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise OlmFailure(bad, "room key for an unsupported algorithm")
        if (
            not isinstance(room_id, str)
            or not isinstance(session_id, str)
            or not isinstance(session_key, str)
        ):
            raise OlmFailure(bad, "room key lacks room_id, session_id or session_key")
        try:
            session = vodozemac.InboundGroupSession(vodozemac.SessionKey(session_key))
        except (ValueError, TypeError):
            raise OlmFailure(bad, "room key does not decode") from None
        if session.session_id != session_id:
            raise OlmFailure(bad, "room key session_id does not match its key")
        old = await self.state.get(InboundSessionRecord, records.INBOUND, room_id, session_id)
        if old is not None:
            if (old.sender_key, old.signing_key) != (olm.sender_key, olm.signing_key):
                raise OlmFailure(bad, "room key for a session another device shared")
            if self._load(old).first_known_index <= session.first_known_index:
                return room_id, session_id
        shared_history = content.get("shared_history") is True
        self.state.put(
            records.INBOUND,
            room_id,
            session_id,
            InboundSessionRecord(
                pickle=session.pickle(self._pickle_key),
                room_id=room_id,
                session_id=session_id,
                sender_user=sender,
                sender_device=olm.sender_device,
                sender_key=olm.sender_key,
                signing_key=olm.signing_key,
                shared_history=shared_history,
            ),
        )
        self.state.delete(records.WITHHELD, room_id, session_id)
        return room_id, session_id

    def record_withheld(self, sender: str, content: dict[str, Any]) -> tuple[str, str] | None:
        """m.room_key.withheld (plaintext to-device). Returns (room id, session id) or None if malformed."""
        room_id, session_id, code = content.get("room_id"), content.get("session_id"), content.get("code")
        reason = content.get("reason")
        if not all(isinstance(x, str) for x in (room_id, session_id, code)):
            return None
        assert isinstance(room_id, str) and isinstance(session_id, str) and isinstance(code, str)
        record = WithheldRecord(sender, code, reason if isinstance(reason, str) else None)
        self.state.put(records.WITHHELD, room_id, session_id, record)
        return room_id, session_id

    def _load(self, rec: InboundSessionRecord) -> vodozemac.InboundGroupSession:
        """The live session for a record, kept while the record's pickle is unchanged."""
        key = (rec.room_id, rec.session_id)
        live = self._live.get(key)
        if live is not None and live[0] == rec.pickle:
            return live[1]
        try:
            session = vodozemac.InboundGroupSession.from_pickle(rec.pickle, self._pickle_key)
        except ValueError:
            raise StoreDataError("an inbound group session pickle cannot be read") from None
        self._live[key] = (rec.pickle, session)
        return session

    async def has_session(self, room_id: str, session_id: str) -> bool:
        return await self.state.get_raw(records.INBOUND, room_id, session_id) is not None

    async def decrypt(self, event: Event) -> DecryptedEvent:
        content = event.content
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise _fail(DecryptionCause.UNSUPPORTED_ALGORITHM, "not a Megolm event")
        session_id, ciphertext = content.get("session_id"), content.get("ciphertext")
        if not isinstance(session_id, str) or not isinstance(ciphertext, str):
            raise _fail(DecryptionCause.MALFORMED, "Megolm event lacks session_id or ciphertext")
        rec = await self.state.get(InboundSessionRecord, records.INBOUND, event.room_id, session_id)
        if rec is None:
            withheld = await self.state.get(WithheldRecord, records.WITHHELD, event.room_id, session_id)
            if withheld is not None and withheld.sender == event.sender:
                raise DecryptionError(
                    DecryptionCause.WITHHELD,
                    "the sender withheld the key",
                    code=withheld.code,
                    reason=withheld.reason,
                )
            raise _fail(DecryptionCause.NO_SESSION, "no room key for this session (yet)")
        if rec.sender_user != event.sender:
            raise _fail(DecryptionCause.SENDER_MISMATCH, "the session belongs to another user")
        try:
            message = vodozemac.MegolmMessage.from_base64(ciphertext)
        except ValueError:
            raise _fail(DecryptionCause.BAD_CIPHERTEXT, "Megolm ciphertext does not decode") from None
        session = self._load(rec)
        try:
            decrypted = session.decrypt(message)
        except ValueError as e:
            if "unknown message index" in str(e):
                raise _fail(
                    DecryptionCause.UNKNOWN_INDEX, "the key we hold starts after this message"
                ) from None
            raise _fail(DecryptionCause.BAD_CIPHERTEXT, "Megolm ciphertext does not verify") from None
        index = decrypted.message_index
        seen = await self.state.get(ReplayRecord, records.REPLAY, session_id, str(index))
        here = ReplayRecord(event.event_id, event.origin_server_ts)
        if seen is not None and seen != here:
            raise _fail(DecryptionCause.REPLAY, f"message index {index} was already used by another event")
        try:
            payload = json.loads(decrypted.plaintext)
        except (ValueError, UnicodeDecodeError):
            raise _fail(DecryptionCause.MALFORMED, "Megolm payload is not JSON") from None
        if not isinstance(payload, dict):
            raise _fail(DecryptionCause.MALFORMED, "Megolm payload is not an object")
        if payload.get("room_id") != event.room_id:
            raise _fail(DecryptionCause.ROOM_MISMATCH, "the payload names another room")
        if not isinstance(payload.get("type"), str) or not isinstance(payload.get("content"), dict):
            raise _fail(DecryptionCause.MALFORMED, "Megolm payload lacks type or content")
        if seen is None:
            self.state.put(records.REPLAY, session_id, str(index), here)
        device = await self.devices.device_by_curve(rec.sender_user, rec.sender_key)
        verified = device is not None and device.ed25519 == rec.signing_key
        return DecryptedEvent(
            event_id=event.event_id,
            room_id=event.room_id,
            sender=event.sender,
            type=payload["type"],
            content=payload["content"],
            session_id=session_id,
            message_index=index,
            sender_key=rec.sender_key,
            signing_key=rec.signing_key,
            sender_device=device.device_id if device else rec.sender_device,
            verified=verified and rec.authentic,
            raw={**event.raw, "type": payload["type"], "content": payload["content"]},
            authentic=rec.authentic,
        )
