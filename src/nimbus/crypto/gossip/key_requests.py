"""Room key requests and forwarded room keys between our OWN devices.

Spec: https://spec.matrix.org/v1.12/client-server-api/#key-requests, #mroom_key_request,
#mforwarded_room_key. Rules (hardened after "Practically-exploitable Cryptographic Vulnerabilities in
Matrix", Albrecht et al., 2022):
- we ask only our own other devices (to-device to {own user: {"*": ...}}), one outstanding request per
  (room id, session id), with a random request id; the request is cancelled as soon as the key arrives
  by any means (`key_arrived`);
- we answer only our own user, from a device that is not this one, that we know, and that our identity
  cross-signed (the injected `OwnDeviceTrust`), for a session we hold (found by room id and session id;
  the deprecated sender_key is optional since v1.3, but must match when given); the answer is always
  Olm-encrypted to that device, never plaintext. Without an Olm session the answer waits as a record
  (`devices_needing_session` / `answer_pending`);
- a forwarded key is accepted only Olm-encrypted, from our own cross-signed device, for exactly a
  session we asked for (and its sender_key, if we knew one); it never replaces a session we hold by one
  that starts later, nor by one whose ratchet is not the same; it is stored as not authentic, with the
  forwarder's Curve25519 key appended to the forwarding chain (a better start of a session we already
  hold keeps that session's provenance). Anything else is refused and changes nothing.
State lives in the store (kind "key_request"): group "" → KeyRequestRecord by request id (ours),
group "answer" → PendingAnswerRecord (answers waiting for an Olm session), so both survive a restart.
Ciphertext is stored as an outgoing to-device object (records.OUTGOING) through `store_outgoing`, in the
same change set as the Olm ratchet advance, so a crash resends the same bytes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import vodozemac

from nimbus.crypto import records
from nimbus.crypto.devices.tracker import DeviceTracker
from nimbus.crypto.errors import StoreDataError, ToDeviceCause
from nimbus.crypto.olm.account import MEGOLM_ALGORITHM, AccountMachine
from nimbus.crypto.olm.sessions import OlmDecrypted, OlmFailure, OlmSessions
from nimbus.crypto.records import DeviceRecord, InboundSessionRecord, OutgoingRecord
from nimbus.crypto.state import State

KEY_REQUEST = "key_request"  # store kind (reserved in store/migrations/0002_crypto.sql)
OURS = ""  # group of our outgoing requests, item = request id
ANSWERS = "answer"  # group of answers waiting for an Olm session, item = json [device id, request id]
PENDING_ANSWER_TTL_MS = 24 * 3600 * 1000  # an answer that found no Olm session in a day is dropped

REQUEST_TYPE = "m.room_key_request"
FORWARDED_TYPE = "m.forwarded_room_key"

StoreOutgoing = Callable[[str, dict[str, dict[str, dict[str, Any]]]], tuple[str, OutgoingRecord]]


class OwnDeviceTrust(Protocol):
    """Whether one of our own devices is cross-signed by our identity (our self-signing key)."""

    async def own_device_trusted(self, device_id: str) -> bool: ...


@dataclass(frozen=True)
class KeyRequestRecord:
    """A room key we asked our other devices for and have not received yet."""

    request_id: str
    room_id: str
    session_id: str
    sender_key: str | None  # Curve25519 key of the session's creator, if the event still names it
    sender_user: str  # the user who sent the undecryptable event: the session belongs to them
    created_ms: int


@dataclass(frozen=True)
class PendingAnswerRecord:
    """A request from one of our devices we will answer once we have an Olm session with it."""

    request_id: str
    device_id: str
    room_id: str
    session_id: str
    sender_key: str | None
    received_ms: int


def _answer_item(device_id: str, request_id: str) -> str:
    return json.dumps([device_id, request_id])


def _ignored(detail: str) -> OlmFailure:
    return OlmFailure(ToDeviceCause.FORWARDED_KEY_IGNORED, detail)


def _bad(detail: str) -> OlmFailure:
    return OlmFailure(ToDeviceCause.BAD_ROOM_KEY, detail)


class KeyGossip:
    def __init__(
        self,
        state: State,
        account: AccountMachine,
        tracker: DeviceTracker,
        olm: OlmSessions,
        trust: OwnDeviceTrust,
        pickle_key: bytes,
        store_outgoing: StoreOutgoing,
    ) -> None:
        self.state = state
        self.account = account
        self.tracker = tracker
        self.olm = olm
        self.trust = trust
        self._pickle_key = pickle_key
        self._store_outgoing = store_outgoing

    # -- our requests (spec: #key-requests, "m.room_key_request") -------------------------------------

    async def outstanding(self) -> list[KeyRequestRecord]:
        recs = (await self.state.list(KeyRequestRecord, KEY_REQUEST, OURS)).values()
        return sorted(recs, key=lambda r: (r.created_ms, r.request_id))

    async def _find(self, room_id: str, session_id: str) -> KeyRequestRecord | None:
        for rec in await self.outstanding():
            if (rec.room_id, rec.session_id) == (room_id, session_id):
                return rec
        return None

    def _to_own_devices(self, content: dict[str, Any]) -> None:
        # Spec: requests and cancellations go to all of our own devices, in plaintext.
        self._store_outgoing(REQUEST_TYPE, {self.account.user_id: {"*": content}})

    async def request(
        self, room_id: str, session_id: str, sender_key: str | None, sender_user: str, now_ms: int
    ) -> bool:
        """Ask our other devices for a Megolm session. True if a new request was queued.

        `sender_key` is the event's (deprecated) sender_key, or None when the event has none; it goes
        out only if known (spec v1.3+: "should still be included ... if the event ... has a sender_key").
        """
        if await self._find(room_id, session_id) is not None:
            return False
        rec = KeyRequestRecord(secrets.token_hex(16), room_id, session_id, sender_key, sender_user, now_ms)
        self.state.put(KEY_REQUEST, OURS, rec.request_id, rec)
        body = {"algorithm": MEGOLM_ALGORITHM, "room_id": room_id, "session_id": session_id}
        if sender_key is not None:
            body["sender_key"] = sender_key
        self._to_own_devices(
            {
                "action": "request",
                "body": body,
                "request_id": rec.request_id,
                "requesting_device_id": self.account.device_id,
            }
        )
        return True

    async def resend(self) -> int:
        """Send every outstanding request again (same request ids), e.g. once this device was
        verified: our other devices refused it before. Returns how many went out."""
        recs = await self.outstanding()
        for rec in recs:
            body = {"algorithm": MEGOLM_ALGORITHM, "room_id": rec.room_id, "session_id": rec.session_id}
            if rec.sender_key is not None:
                body["sender_key"] = rec.sender_key
            self._to_own_devices(
                {
                    "action": "request",
                    "body": body,
                    "request_id": rec.request_id,
                    "requesting_device_id": self.account.device_id,
                }
            )
        return len(recs)

    async def key_arrived(self, room_id: str, session_id: str) -> None:
        """The session arrived (room key, forward, backup…): cancel our request for it, if any."""
        rec = await self._find(room_id, session_id)
        if rec is None:
            return
        self.state.delete(KEY_REQUEST, OURS, rec.request_id)
        self._to_own_devices(
            {
                "action": "request_cancellation",
                "request_id": rec.request_id,
                "requesting_device_id": self.account.device_id,
            }
        )

    # -- answering our other devices ------------------------------------------------------------------

    async def handle_request(self, sender: str, content: dict[str, Any], now_ms: int) -> str | None:
        """An m.room_key_request. None = answered (or queued until an Olm session exists); otherwise
        the reason it was refused, for the caller's log (holds no key material). Refusals store nothing."""
        if sender != self.account.user_id:
            return "key request from another user"
        action, request_id = content.get("action"), content.get("request_id")
        device_id = content.get("requesting_device_id")
        if not isinstance(action, str) or not isinstance(request_id, str) or not isinstance(device_id, str):
            return "key request lacks action, request_id or requesting_device_id"
        if device_id == self.account.device_id:
            return "our own key request"
        if action == "request_cancellation":
            item = _answer_item(device_id, request_id)
            if await self.state.get_raw(KEY_REQUEST, ANSWERS, item) is not None:
                self.state.delete(KEY_REQUEST, ANSWERS, item)
                return "cancellation: dropped the pending answer"
            return "cancellation"
        if action != "request":
            return "unknown key request action"
        body = content.get("body")
        if not isinstance(body, dict):
            return "key request lacks a body"
        room_id, session_id, sender_key = body.get("room_id"), body.get("session_id"), body.get("sender_key")
        if body.get("algorithm") != MEGOLM_ALGORITHM:
            return "key request for an unsupported algorithm"
        if not isinstance(room_id, str) or not isinstance(session_id, str):
            return "key request body lacks room_id or session_id"
        if sender_key is not None and not isinstance(sender_key, str):
            return "key request body has a bad sender_key"
        device = await self.tracker.device(self.account.user_id, device_id)
        if device is None:
            return "key request from a device we do not know"
        if not await self.trust.own_device_trusted(device_id):
            return "key request from a device our identity has not cross-signed"
        why = await self._cannot_forward(room_id, session_id, sender_key)
        if why is not None:
            return why
        pending = PendingAnswerRecord(request_id, device_id, room_id, session_id, sender_key, now_ms)
        if not await self._answer(device, pending, now_ms):
            self.state.put(KEY_REQUEST, ANSWERS, _answer_item(device_id, request_id), pending)
        return None

    async def _cannot_forward(self, room_id: str, session_id: str, sender_key: str | None) -> str | None:
        # Sessions are found by (room id, session id) only. The deprecated sender_key is optional since
        # spec v1.3; when a request names one, it must be the one we hold (we refuse, never guess).
        rec = await self.state.get(InboundSessionRecord, records.INBOUND, room_id, session_id)
        if rec is None:
            return "key request for a session we do not hold"
        if sender_key is not None and rec.sender_key != sender_key:
            return "key request sender_key differs from the session we hold"
        return None

    def _unpickle(self, rec: InboundSessionRecord) -> vodozemac.InboundGroupSession:
        try:
            return vodozemac.InboundGroupSession.from_pickle(rec.pickle, self._pickle_key)
        except ValueError:
            raise StoreDataError("an inbound group session pickle cannot be read") from None

    async def _answer(self, device: DeviceRecord, pending: PendingAnswerRecord, now_ms: int) -> bool:
        """Olm-encrypt the forwarded key to `device` and store it as outgoing. False without a session."""
        rec = await self.state.get(InboundSessionRecord, records.INBOUND, pending.room_id, pending.session_id)
        if rec is None:
            return False
        session = self._unpickle(rec)
        exported = session.export_at(session.first_known_index)
        if exported is None:  # cannot happen for the first known index; refuse rather than guess
            return False
        # Spec: #mforwarded_room_key; shared_history per spec v1.19 (MSC3061), as in m.room_key.
        content = {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": rec.room_id,
            "sender_key": rec.sender_key,
            "session_id": rec.session_id,
            "session_key": exported.to_base64(),
            "sender_claimed_ed25519_key": rec.signing_key,
            "forwarding_curve25519_key_chain": list(rec.forwarding_chain),
            "shared_history": rec.shared_history,
        }
        encrypted = await self.olm.encrypt(device, FORWARDED_TYPE, content, now_ms)
        if encrypted is None:
            return False
        self._store_outgoing("m.room.encrypted", {device.user_id: {device.device_id: encrypted}})
        return True

    async def _pending(self) -> dict[str, PendingAnswerRecord]:
        return await self.state.list(PendingAnswerRecord, KEY_REQUEST, ANSWERS)

    async def devices_needing_session(self) -> list[DeviceRecord]:
        """Our devices with an answer waiting for an Olm session: /keys/claim for them, then
        call `answer_pending`."""
        out: dict[str, DeviceRecord] = {}
        for pending in (await self._pending()).values():
            device = await self.tracker.device(self.account.user_id, pending.device_id)
            if device is not None and device.device_id not in out and not await self.olm.has_session(device):
                out[device.device_id] = device
        return [out[k] for k in sorted(out)]

    async def answer_pending(self, now_ms: int) -> None:
        """Answer every waiting request whose device now has an Olm session. Each one is checked again
        (device known and trusted, session held); stale or expired ones are dropped."""
        for item, pending in sorted((await self._pending()).items()):
            device = await self.tracker.device(self.account.user_id, pending.device_id)
            if (
                device is None
                or now_ms - pending.received_ms >= PENDING_ANSWER_TTL_MS
                or not await self.trust.own_device_trusted(pending.device_id)
                or await self._cannot_forward(pending.room_id, pending.session_id, pending.sender_key)
            ):
                self.state.delete(KEY_REQUEST, ANSWERS, item)
                continue
            if await self._answer(device, pending, now_ms):
                self.state.delete(KEY_REQUEST, ANSWERS, item)

    # -- forwarded keys we asked for (spec: #mforwarded_room_key) -------------------------------------

    async def handle_forwarded(
        self, sender: str, olm: OlmDecrypted, content: dict[str, Any]
    ) -> tuple[str, str]:
        """Import an Olm-decrypted m.forwarded_room_key. Returns (room id, session id).

        Raises OlmFailure(FORWARDED_KEY_IGNORED) when it is not from one of our trusted devices or was
        not asked for, OlmFailure(BAD_ROOM_KEY) when the key itself is wrong. Nothing changes then.
        """
        own = self.account.user_id
        if sender != own:
            raise _ignored("forwarded room key from another user")
        device = await self.tracker.device_by_curve(own, olm.sender_key)
        if device is None or olm.sender_device is None or device.device_id != olm.sender_device:
            raise _ignored("forwarded room key from a device we do not know")
        if device.ed25519 != olm.signing_key:
            raise _ignored("forwarded room key from a device whose keys differ")
        if device.device_id == self.account.device_id:
            raise _ignored("forwarded room key from this device")
        if not await self.trust.own_device_trusted(device.device_id):
            raise _ignored("forwarded room key from a device our identity has not cross-signed")
        room_id, session_id = content.get("room_id"), content.get("session_id")
        if not isinstance(room_id, str) or not isinstance(session_id, str):
            raise _bad("forwarded room key lacks room_id or session_id")
        request = await self._find(room_id, session_id)
        if request is None:
            raise _ignored("forwarded room key we did not request")
        sender_key = content.get("sender_key")
        if not isinstance(sender_key, str):
            raise _bad("forwarded room key lacks sender_key")
        if request.sender_key is not None and sender_key != request.sender_key:
            raise _ignored("forwarded room key for another sender_key than we requested")
        rec, session = self._import(request, sender_key, olm, content)
        await self._store(rec, session)
        await self.key_arrived(room_id, session_id)
        return room_id, session_id

    def _import(
        self, request: KeyRequestRecord, sender_key: str, olm: OlmDecrypted, content: dict[str, Any]
    ) -> tuple[InboundSessionRecord, vodozemac.InboundGroupSession]:
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise _bad("forwarded room key for an unsupported algorithm")
        session_key, signing_key = content.get("session_key"), content.get("sender_claimed_ed25519_key")
        chain = content.get("forwarding_curve25519_key_chain", [])
        if not isinstance(session_key, str) or not isinstance(signing_key, str):
            raise _bad("forwarded room key lacks session_key or sender_claimed_ed25519_key")
        if not isinstance(chain, list) or not all(isinstance(k, str) for k in chain):
            raise _bad("forwarded room key has a bad forwarding_curve25519_key_chain")
        try:
            session = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(session_key))
        except (ValueError, TypeError):
            raise _bad("forwarded room key does not decode") from None
        if session.session_id != request.session_id:
            raise _bad("forwarded room key session_id does not match its key")
        rec = InboundSessionRecord(
            pickle=session.pickle(self._pickle_key),
            room_id=request.room_id,
            session_id=request.session_id,
            sender_user=request.sender_user,
            sender_device=None,
            sender_key=sender_key,
            signing_key=signing_key,
            shared_history=content.get("shared_history") is True,
            forwarding_chain=[*chain, olm.sender_key],
            authentic=False,
        )
        return rec, session

    async def _store(self, new: InboundSessionRecord, session: vodozemac.InboundGroupSession) -> None:
        old = await self.state.get(InboundSessionRecord, records.INBOUND, new.room_id, new.session_id)
        if old is not None:
            if (old.sender_key, old.signing_key) != (new.sender_key, new.signing_key):
                raise _bad("forwarded room key for a session bound to other keys")
            held = self._unpickle(old)
            if held.first_known_index <= session.first_known_index:
                raise _ignored("forwarded room key is not better than the session we hold")
            # Same ratchet? The forwarded key advanced to where ours starts must equal ours.
            at = held.first_known_index
            ours, theirs = held.export_at(at), session.export_at(at)
            if ours is None or theirs is None or ours.to_base64() != theirs.to_base64():
                raise _bad("forwarded room key is not the ratchet of the session we hold")
            # Only the earlier start is new: keep what we knew about who shared the session with us.
            new = replace(old, pickle=new.pickle, backed_up=False)
        self.state.put(records.INBOUND, new.room_id, new.session_id, new)
        self.state.delete(records.WITHHELD, new.room_id, new.session_id)
