"""OlmMachine: the sans-I/O end-to-end encryption facade (spec: Client-Server API, "End-to-End
Encryption", https://spec.matrix.org/v1.12/client-server-api/#end-to-end-encryption).

Composed of sub-machines, each owning its state: AccountMachine (olm/account.py), DeviceTracker
(devices/tracker.py), OlmSessions (olm/sessions.py), GroupSessionSender / GroupSessionReceiver
(megolm/). No sockets, no sleeping, no clock: time comes in as `now_ms`.

API (what the client codes against):

    machine = await OlmMachine.load(store, user_id, device_id, pickle_key)   # creates the account once
    machine.identity_keys -> {"curve25519": str, "ed25519": str}
    await machine.receive_sync_changes(to_device=[...], changed=[...], left=[...],
        one_time_key_counts={...}, unused_fallback_key_types=[...] | None, now_ms=...)
        -> list[ToDeviceResult]
    await machine.outgoing_requests() -> list[OutgoingRequest]    # keys upload/query/claim, to-device
    await machine.mark_request_as_sent(request_id, response_body)
    await machine.update_tracked_users(users)                        # members of encrypted rooms
    await machine.share_room_key(room_id, members, history_visibility=..., now_ms=...,
        encryption=<m.room.encryption content>) -> list[OutgoingRequest]
        # a keys query or claim if one is needed first (send it, mark it sent, call again),
        # else the to-device requests carrying the room key (also listed by outgoing_requests)
    await machine.encrypt_room_event(room_id, event_type, content, now_ms=...) -> dict
    await machine.decrypt_room_event(event, now_ms=...) -> DecryptedEvent   # or DecryptionError(.cause)
    await machine.room_members_changed(room_id, left=[...]); machine.invalidate_group_session(room_id)
    machine.take_changes() -> CryptoChanges       # commit it in ONE transaction with the sync batch
    machine.changes_committed(changes)           # optional: lets the overlay drop committed entries
    await machine.devices(user_id); await machine.rejected_devices(user_id); machine.take_device_problems()

Persistence ("nothing lost, nothing reused"): every change goes into an overlay the machine reads
through; `take_changes()` hands it over. Ciphertext that advanced a ratchet (room keys, m.dummy over
Olm) is stored as an outgoing object in the same change set; `outgoing_requests()` lists it with a
stable request id = txn id, so a retry after a crash sends the same bytes; the caller must commit the
change set before sending. `mark_request_as_sent` deletes it in the next change set. Errors: all
derive from CryptoError (crypto/errors.py); API parse errors are nimbus.api.errors.MalformedResponse.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from nimbus.api import keys as keys_api
from nimbus.api.request import Request
from nimbus.api.to_device import send_to_device
from nimbus.crypto import records
from nimbus.crypto.devices.tracker import DeviceProblem, DeviceTracker
from nimbus.crypto.errors import CryptoError, ToDeviceCause
from nimbus.crypto.megolm.inbound import DecryptedEvent, GroupSessionReceiver
from nimbus.crypto.megolm.outbound import GroupSessionSender, shared_history_for
from nimbus.crypto.olm.account import OLM_ALGORITHM, AccountMachine
from nimbus.crypto.olm.sessions import OlmFailure, OlmSessions
from nimbus.crypto.records import DeviceRecord, OutgoingRecord, RejectedDeviceRecord
from nimbus.crypto.state import State
from nimbus.crypto.store import CryptoChanges, CryptoStore
from nimbus.types.events import Event

__all__ = [
    "DecryptedEvent",
    "OlmMachine",
    "OutgoingRequest",
    "RequestKind",
    "ToDeviceResult",
    "ToDeviceStatus",
]

NO_OTK_RETRY_MS = 60 * 60 * 1000


class RequestKind(enum.StrEnum):
    KEYS_UPLOAD = "keys_upload"
    KEYS_QUERY = "keys_query"
    KEYS_CLAIM = "keys_claim"
    TO_DEVICE = "to_device"


@dataclass(frozen=True)
class OutgoingRequest:
    request_id: str
    kind: RequestKind
    request: Request


class ToDeviceStatus(enum.StrEnum):
    DECRYPTED = "decrypted"  # an Olm message we decrypted and checked (see `event`)
    ROOM_KEY = "room_key"  # a room key was stored: retry events of (room_id, session_id)
    WITHHELD = "withheld"  # a withheld notice was recorded for (room_id, session_id)
    PLAINTEXT = "plaintext"  # an unencrypted to-device event for the client (see `event`)
    IGNORED = "ignored"  # dropped on purpose, see `cause`
    FAILED = "failed"  # could not be decrypted, see `cause`


@dataclass(frozen=True)
class ToDeviceResult:
    """What became of one to-device event. `event` never carries key material."""

    status: ToDeviceStatus
    event_type: str
    sender: str
    cause: ToDeviceCause | None = None
    detail: str | None = None
    room_id: str | None = None
    session_id: str | None = None
    sender_device: str | None = None
    event: dict[str, Any] | None = field(default=None, repr=False)


class OlmMachine:
    def __init__(self, state: State, account: AccountMachine, pickle_key: bytes) -> None:
        self._state = state
        self._account = account
        self._tracker = DeviceTracker(state, account.user_id, account.device_id)
        self._olm = OlmSessions(state, account, self._tracker, pickle_key)
        self._sender = GroupSessionSender(state, account, self._olm, pickle_key)
        self._receiver = GroupSessionReceiver(state, self._tracker, pickle_key)
        self._claims: dict[str, tuple[Request, set[tuple[str, str]], int]] = {}  # id → (req, devices, now)
        self._no_otk: dict[tuple[str, str], int] = {}  # device → when a claim gave it no key

    @classmethod
    async def load(cls, store: CryptoStore, user_id: str, device_id: str, pickle_key: bytes) -> OlmMachine:
        if len(pickle_key) != 32:
            raise CryptoError("the pickle key must be 32 bytes")
        state = State(store)
        account = await AccountMachine.load(state, user_id, device_id, pickle_key)
        machine = cls(state, account, pickle_key)
        await machine._tracker.track([user_id])
        return machine

    @property
    def user_id(self) -> str:
        return self._account.user_id

    @property
    def device_id(self) -> str:
        return self._account.device_id

    @property
    def identity_keys(self) -> dict[str, str]:
        return {"curve25519": self._account.curve25519, "ed25519": self._account.ed25519}

    # -- persistence ----------------------------------------------------------------------------------

    def take_changes(self) -> CryptoChanges:
        return self._state.take()

    def changes_committed(self, changes: CryptoChanges) -> None:
        self._state.committed(changes)

    # -- sync -------------------------------------------------------------------------------------------

    async def receive_sync_changes(
        self,
        *,
        to_device: list[Any],
        changed: list[str],
        left: list[str],
        one_time_key_counts: dict[str, int],
        unused_fallback_key_types: list[str] | None,
        now_ms: int,
    ) -> list[ToDeviceResult]:
        await self._tracker.mark_changed(list(changed))
        await self._tracker.stop_tracking(list(left))
        self._account.update_key_counts(dict(one_time_key_counts), unused_fallback_key_types)
        return [await self._to_device(event, now_ms) for event in to_device]

    async def _to_device(self, event: Any, now_ms: int) -> ToDeviceResult:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return ToDeviceResult(ToDeviceStatus.IGNORED, "", "", ToDeviceCause.MALFORMED, "not an event")
        etype, sender, content = event["type"], event.get("sender"), event.get("content")
        if not isinstance(sender, str) or not isinstance(content, dict):
            return ToDeviceResult(
                ToDeviceStatus.IGNORED, etype, "", ToDeviceCause.MALFORMED, "no sender/content"
            )
        if etype == "m.room.encrypted":
            if content.get("algorithm") != OLM_ALGORITHM:
                return ToDeviceResult(
                    ToDeviceStatus.IGNORED, etype, sender, ToDeviceCause.UNSUPPORTED_ALGORITHM
                )
            try:
                olm = await self._olm.decrypt(sender, content, now_ms)
            except OlmFailure as e:
                return ToDeviceResult(ToDeviceStatus.FAILED, etype, sender, e.cause, e.detail)
            if not olm.device_known:  # learn the sender's devices so the session can be verified
                await self._tracker.track([sender])
            inner_type: str = olm.payload["type"]
            inner: dict[str, Any] = olm.payload["content"]
            dev = olm.sender_device
            try:
                if inner_type == "m.room_key":  # spec: #mroom_key, only ever accepted over Olm
                    room_id, session_id = await self._receiver.add_room_key(sender, olm, inner)
                    return ToDeviceResult(
                        ToDeviceStatus.ROOM_KEY,
                        inner_type,
                        sender,
                        room_id=room_id,
                        session_id=session_id,
                        sender_device=dev,
                    )
            except OlmFailure as e:
                return ToDeviceResult(
                    ToDeviceStatus.FAILED, inner_type, sender, e.cause, e.detail, sender_device=dev
                )
            if inner_type == "m.forwarded_room_key":  # no key requests in this issue: never asked for
                return ToDeviceResult(
                    ToDeviceStatus.IGNORED,
                    inner_type,
                    sender,
                    ToDeviceCause.FORWARDED_KEY_IGNORED,
                    sender_device=dev,
                )
            if inner_type == "m.room_key.withheld":
                return self._withheld(sender, inner, inner_type)
            event_out = {"type": inner_type, "sender": sender, "content": inner}
            return ToDeviceResult(
                ToDeviceStatus.DECRYPTED, inner_type, sender, sender_device=dev, event=event_out
            )
        if etype == "m.room_key":  # spec: room keys only ever arrive Olm-encrypted
            return ToDeviceResult(ToDeviceStatus.IGNORED, etype, sender, ToDeviceCause.UNENCRYPTED_ROOM_KEY)
        if etype == "m.forwarded_room_key":
            return ToDeviceResult(ToDeviceStatus.IGNORED, etype, sender, ToDeviceCause.FORWARDED_KEY_IGNORED)
        if etype == "m.room_key.withheld":  # spec: #reporting-that-decryption-keys-are-withheld
            return self._withheld(sender, content, etype)
        return ToDeviceResult(ToDeviceStatus.PLAINTEXT, etype, sender, event=dict(event))

    def _withheld(self, sender: str, content: dict[str, Any], etype: str) -> ToDeviceResult:
        where = self._receiver.record_withheld(sender, content)
        if where is None:
            return ToDeviceResult(ToDeviceStatus.IGNORED, etype, sender, ToDeviceCause.MALFORMED)
        return ToDeviceResult(ToDeviceStatus.WITHHELD, etype, sender, room_id=where[0], session_id=where[1])

    # -- requests -----------------------------------------------------------------------------------

    async def outgoing_requests(self) -> list[OutgoingRequest]:
        out = []
        upload = self._account.upload_request()
        if upload is not None:
            out.append(OutgoingRequest(upload[0], RequestKind.KEYS_UPLOAD, upload[1]))
        query = await self._tracker.query_request()
        if query is not None:
            out.append(OutgoingRequest(query[0], RequestKind.KEYS_QUERY, query[1]))
        claiming = {d for _, devs, _ in self._claims.values() for d in devs}
        unwedge = [d for d in await self._olm.pending_unwedge() if (d.user_id, d.device_id) not in claiming]
        out += self._claim(unwedge, 0)
        for request_id, raw in sorted((await self._state.list_raw(records.OUTGOING, "")).items()):
            rec = records.load(OutgoingRecord, raw)
            req = send_to_device(rec.event_type, rec.messages, rec.txn_id)
            out.append(OutgoingRequest(request_id, RequestKind.TO_DEVICE, req))
        return out

    def _claim(self, devices: list[DeviceRecord], now_ms: int) -> list[OutgoingRequest]:
        out = []
        for req in self._olm.claim_requests(devices):
            want = req.json["one_time_keys"] if req.json else {}
            request_id = f"keys_claim-{secrets.token_hex(8)}"
            self._claims[request_id] = (req, {(u, d) for u, ds in want.items() for d in ds}, now_ms)
            out.append(OutgoingRequest(request_id, RequestKind.KEYS_CLAIM, req))
        return out

    async def mark_request_as_sent(self, request_id: str, response: Any) -> None:
        upload = self._account.upload_request()
        if upload is not None and upload[0] == request_id:
            keys_api.parse_upload_keys(response)
            self._account.mark_uploaded()
        elif self._tracker.owns(request_id):
            await self._tracker.receive_query(request_id, response)
        elif request_id in self._claims:
            await self._claimed(request_id, response)
        elif await self._state.get_raw(records.OUTGOING, "", request_id) is not None:
            self._state.delete(records.OUTGOING, "", request_id)

    async def _claimed(self, request_id: str, response: Any) -> None:
        _, wanted, now_ms = self._claims.pop(request_id)
        made = await self._olm.receive_claim(response, now_ms)
        got = {(d.user_id, d.device_id) for d in made}
        for missing in wanted - got:
            self._no_otk[missing] = now_ms
        unwedge = {(d.user_id, d.device_id) for d in await self._olm.pending_unwedge()}
        for device in made:
            if (device.user_id, device.device_id) in unwedge:
                # Spec: "Recovering from undecryptable messages": a new session announced by m.dummy.
                content = await self._olm.encrypt(device, "m.dummy", {}, now_ms)
                if content is not None:
                    self._sender.store_outgoing(
                        "m.room.encrypted", {device.user_id: {device.device_id: content}}
                    )
                await self._olm.unwedged(device)

    # -- devices ------------------------------------------------------------------------------------

    async def update_tracked_users(self, users: list[str]) -> None:
        await self._tracker.track(list(users))

    async def devices(self, user_id: str) -> dict[str, DeviceRecord]:
        return await self._tracker.devices(user_id)

    async def rejected_devices(self, user_id: str) -> dict[str, RejectedDeviceRecord]:
        return await self._tracker.rejected(user_id)

    def take_device_problems(self) -> list[DeviceProblem]:
        out, self._tracker.problems = self._tracker.problems, []
        return out

    # -- room keys and room events --------------------------------------------------------------------

    async def share_room_key(
        self,
        room_id: str,
        members: list[str],
        *,
        history_visibility: str,
        now_ms: int,
        encryption: dict[str, Any] | None = None,
    ) -> list[OutgoingRequest]:
        await self._tracker.track(list(members))
        outdated = set(await self._tracker.outdated()) & set(members)
        if outdated - self._tracker.answered:
            query = await self._tracker.query_request()
            return [] if query is None else [OutgoingRequest(query[0], RequestKind.KEYS_QUERY, query[1])]
        devices: dict[str, dict[str, DeviceRecord]] = {}
        for user in set(members):
            devs = await self._tracker.devices(user)
            devices[user] = {k: d for k, d in devs.items() if (user, k) != (self.user_id, self.device_id)}
        shared_history = shared_history_for(history_visibility)
        rec = await self._sender.prepare(room_id, devices, shared_history, encryption, now_ms)
        targets = [
            d
            for user, devs in devices.items()
            for k, d in devs.items()
            if k not in rec.shared_with.get(user, {})
        ]
        missing = []
        claiming = {d for _, devs, _ in self._claims.values() for d in devs}
        if claiming & {(d.user_id, d.device_id) for d in targets}:
            return [
                OutgoingRequest(rid, RequestKind.KEYS_CLAIM, req) for rid, (req, _, _) in self._claims.items()
            ]
        for d in targets:
            no_otk = self._no_otk.get((d.user_id, d.device_id))
            if not await self._olm.has_session(d) and (no_otk is None or now_ms - no_otk >= NO_OTK_RETRY_MS):
                missing.append(d)
        if missing:
            return self._claim(missing, now_ms)
        stored = await self._sender.share(room_id, rec, targets, now_ms)
        return [
            OutgoingRequest(rid, RequestKind.TO_DEVICE, send_to_device(o.event_type, o.messages, o.txn_id))
            for rid, o in stored
        ]

    async def encrypt_room_event(
        self, room_id: str, event_type: str, content: dict[str, Any], *, now_ms: int
    ) -> dict[str, Any]:
        return await self._sender.encrypt(room_id, event_type, content, now_ms)

    async def decrypt_room_event(self, event: Event, *, now_ms: int) -> DecryptedEvent:
        return await self._receiver.decrypt(event)

    async def room_members_changed(self, room_id: str, *, left: list[str]) -> None:
        """Members left (or, after a limited sync, anything but join): rotate if they had the key."""
        rec = await self._sender.current(room_id)
        if rec is not None and any(user in rec.shared_with for user in left):
            self._sender.invalidate(room_id)

    def invalidate_group_session(self, room_id: str) -> None:
        self._sender.invalidate(room_id)
