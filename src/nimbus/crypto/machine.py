"""OlmMachine: the sans-I/O end-to-end encryption facade (spec: Client-Server API, "End-to-End
Encryption", https://spec.matrix.org/v1.12/client-server-api/#end-to-end-encryption).

Composed of sub-machines, each owning its state: AccountMachine (olm/account.py), DeviceTracker
(devices/tracker.py), OlmSessions (olm/sessions.py), GroupSessionSender / GroupSessionReceiver
(megolm/), IdentityManager (identity/: cross-signing, pinning, trust levels) and KeyGossip (gossip/:
key requests and forwarded keys between our own devices). No sockets, no sleeping, no clock: time
comes in as `now_ms`.

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
    # cross-signing and trust (spec: "Cross-signing"; v1.18 "Recommended client behaviour", MSC4153)
    plan = await machine.bootstrap_cross_signing()   # commit, upload plan.keys (UIA), plan.signatures
    await machine.cross_signing_done(); await machine.sign_own_device(device_id) -> signatures body
    await machine.device_infos(user_id) -> [DeviceInfo(trust="verified"|"pinned"|"unpinned"|"unsigned")]
    await machine.user_identity(user_id); acknowledge_identity(user_id); verify_identity(user_id, key)
    machine.take_identity_changes(); await machine.set_sharing_mode(SharingMode.LEGACY|CROSS_SIGNED)
    share_room_key raises VerifiedIdentityChanged while a verified member's new identity is unacknowledged

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
from dataclasses import dataclass, field, replace
from typing import Any

from nimbus.api import keys as keys_api
from nimbus.api.request import Request
from nimbus.api.to_device import send_to_device
from nimbus.crypto import records
from nimbus.crypto.devices.tracker import DeviceProblem, DeviceTracker
from nimbus.crypto.errors import CryptoError, DecryptionCause, DecryptionError, ToDeviceCause
from nimbus.crypto.gossip.key_requests import KeyGossip
from nimbus.crypto.identity.cross_signing import OwnKeys
from nimbus.crypto.identity.manager import (
    IdentityChange,
    IdentityManager,
    TrustLevel,
    UserIdentity,
)
from nimbus.crypto.megolm.inbound import DecryptedEvent, GroupSessionReceiver
from nimbus.crypto.megolm.outbound import GroupSessionSender, shared_history_for
from nimbus.crypto.olm.account import OLM_ALGORITHM, AccountMachine
from nimbus.crypto.olm.sessions import OlmFailure, OlmSessions
from nimbus.crypto.records import (
    DeviceRecord,
    OutgoingRecord,
    RejectedDeviceRecord,
    SettingRecord,
)
from nimbus.crypto.sharing.policy import SharingMode, SharingPolicy
from nimbus.crypto.state import State
from nimbus.crypto.store import CryptoChanges, CryptoStore
from nimbus.types.events import Event

__all__ = [
    "CrossSigningPlan",
    "DecryptedEvent",
    "DeviceInfo",
    "OlmMachine",
    "OutgoingRequest",
    "RequestKind",
    "SharingMode",
    "ToDeviceResult",
    "ToDeviceStatus",
]

NO_OTK_RETRY_MS = 60 * 60 * 1000


@dataclass(frozen=True)
class DeviceInfo:
    """A device as the local user sees it: its keys, whether its owner signed it, and its trust."""

    user_id: str
    device_id: str
    curve25519: str
    ed25519: str
    trust: str
    signed_by_owner: bool
    blocked: bool


@dataclass(frozen=True)
class CrossSigningPlan:
    """What to upload to create our identity: POST /keys/device_signing/upload (with UIA) `keys`, then
    POST /keys/signatures/upload `signatures` (this device signed by the self-signing key, the master
    key signed by this device)."""

    keys: dict[str, Any]
    signatures: dict[str, dict[str, Any]]


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
    KEY_REQUEST = "key_request"  # a key request of our own device, answered (or answer queued)
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
        self._identities = IdentityManager(state, account.user_id, account.device_id)
        self._gossip = KeyGossip(
            state, account, self._tracker, self._olm, self, pickle_key, self._sender.store_outgoing
        )
        self._policy = SharingPolicy(state, account, self._identities, self._sender, self.device_trust)

    @classmethod
    async def load(cls, store: CryptoStore, user_id: str, device_id: str, pickle_key: bytes) -> OlmMachine:
        if len(pickle_key) != 32:
            raise CryptoError("the pickle key must be 32 bytes")
        state = State(store)
        account = await AccountMachine.load(state, user_id, device_id, pickle_key)
        machine = cls(state, account, pickle_key)
        await machine._tracker.track([user_id])
        mode = await state.get(SettingRecord, records.SETTING, "", "sharing_mode")
        if mode is not None and mode.value in SharingMode.__members__.values():
            machine._policy.mode = SharingMode(mode.value)
        return machine

    @property
    def sharing_mode(self) -> SharingMode:
        return self._policy.mode

    @property
    def block_verified_changes(self) -> bool:
        """Policy option: a verified user's new, unacknowledged identity blocks sending to them."""
        return self._policy.block_verified_changes

    @block_verified_changes.setter
    def block_verified_changes(self, value: bool) -> None:
        self._policy.block_verified_changes = value

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
        results = [await self._to_device(event, now_ms) for event in to_device]
        await self._gossip.answer_pending(now_ms)
        return results

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
                if inner_type in ("m.room_key", "m.forwarded_room_key"):  # only ever accepted over Olm
                    if inner_type == "m.room_key":  # spec: #mroom_key
                        room_id, session_id = await self._receiver.add_room_key(sender, olm, inner)
                        await self._gossip.key_arrived(room_id, session_id)
                    else:  # spec: #mforwarded_room_key: only our own request, own trusted device
                        room_id, session_id = await self._gossip.handle_forwarded(sender, olm, inner)
                    return ToDeviceResult(
                        ToDeviceStatus.ROOM_KEY,
                        inner_type,
                        sender,
                        room_id=room_id,
                        session_id=session_id,
                        sender_device=dev,
                    )
            except OlmFailure as e:
                status = ToDeviceStatus.FAILED
                if e.cause == ToDeviceCause.FORWARDED_KEY_IGNORED:
                    status = ToDeviceStatus.IGNORED  # refused on purpose (not asked for, not ours)
                return ToDeviceResult(status, inner_type, sender, e.cause, e.detail, sender_device=dev)
            if inner_type == "m.room_key_request":  # some clients send it encrypted
                return await self._key_request(sender, inner, inner_type, now_ms)
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
        if etype == "m.room_key_request":  # spec: #mroom_key_request
            return await self._key_request(sender, content, etype, now_ms)
        return ToDeviceResult(ToDeviceStatus.PLAINTEXT, etype, sender, event=dict(event))

    async def _key_request(
        self, sender: str, content: dict[str, Any], etype: str, now_ms: int
    ) -> ToDeviceResult:
        refused = await self._gossip.handle_request(sender, content, now_ms)
        if refused is not None:
            cause = ToDeviceCause.KEY_REQUEST_REFUSED
            return ToDeviceResult(ToDeviceStatus.IGNORED, etype, sender, cause, refused)
        return ToDeviceResult(ToDeviceStatus.KEY_REQUEST, etype, sender)

    async def own_device_trusted(self, device_id: str) -> bool:
        """Key gossip trusts one of our own devices only when our verified identity signed it and we
        did not block it (a merely pinned identity could be the server's own keys)."""
        if await self._identities.blocked(self.user_id, device_id):
            return False
        device = await self._tracker.device(self.user_id, device_id)
        return device is not None and await self.device_trust(device) == TrustLevel.VERIFIED

    def _withheld(self, sender: str, content: dict[str, Any], etype: str) -> ToDeviceResult:
        if content.get("code") == "m.no_olm":  # no room or session: the sender could not reach us
            return ToDeviceResult(ToDeviceStatus.WITHHELD, etype, sender, detail="m.no_olm")
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
        answering = [
            d
            for d in await self._gossip.devices_needing_session()
            if (d.user_id, d.device_id) not in claiming
            and (d.user_id, d.device_id) not in self._no_otk
            and d not in unwedge
        ]
        out += self._claim(unwedge + answering, 0)
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
            parsed = keys_api.parse_query_keys(response)
            await self._tracker.receive_query(request_id, parsed)
            await self._identities.receive_query(parsed)
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
        await self._gossip.answer_pending(now_ms)

    # -- devices ------------------------------------------------------------------------------------

    async def mark_tracked_users_outdated(self, users: list[str] | None = None) -> None:
        """Query these (default: every) tracked users again, e.g. after an initial sync: changes made
        before it, such as a device that logged in meanwhile, are not in device_lists.changed."""
        await self._tracker.mark_changed(list(await self._tracker.tracked()) if users is None else users)

    async def update_tracked_users(self, users: list[str]) -> None:
        await self._tracker.track(list(users))

    async def devices(self, user_id: str) -> dict[str, DeviceRecord]:
        return await self._tracker.devices(user_id)

    async def rejected_devices(self, user_id: str) -> dict[str, RejectedDeviceRecord]:
        return await self._tracker.rejected(user_id)

    def take_device_problems(self) -> list[DeviceProblem]:
        out, self._tracker.problems = self._tracker.problems, []
        out += self._identities.problems
        self._identities.problems = []
        return out

    # -- cross-signing and trust (spec: "Cross-signing"; identity/manager.py) ----------------------------

    def take_identity_changes(self) -> list[IdentityChange]:
        out, self._identities.changes = self._identities.changes, []
        return out

    async def own_identity_known(self) -> bool:
        """Whether a /keys/query answered for our own user since load (so `user_identity` is current)."""
        return self.user_id in self._tracker.answered

    async def own_cross_signing_keys(self) -> OwnKeys | None:
        return await self._identities.own_keys()

    async def cross_signing_uploaded(self) -> bool:
        rec = await self._identities.private_keys()
        return rec is not None and rec.uploaded and rec.device_signed

    async def bootstrap_cross_signing(self) -> CrossSigningPlan:
        """Create our cross-signing keys (saved in the change set first: commit before uploading)."""
        keys = await self._identities.bootstrap()
        public = keys.public_objects(self.user_id)
        device = keys.self_signing.sign_json(self._account.device_keys(), self.user_id)
        master = self._account._sign(dict(public["master_key"]))
        return CrossSigningPlan(public, {self.user_id: {self.device_id: device, keys.master.public: master}})

    async def cross_signing_done(self) -> None:
        """The server accepted our keys and signatures: note it, and fetch our own keys again."""
        await self._identities.mark_uploaded(device_signed=True)
        await self._tracker.mark_changed([self.user_id])

    async def sign_own_device(self, device_id: str) -> dict[str, dict[str, Any]]:
        """Vouch for another of our devices (the user checked it): its device keys signed by our
        self-signing key, as the body of POST /keys/signatures/upload. Needs our private keys."""
        keys = await self._identities.own_keys()
        if keys is None:
            raise CryptoError(
                "this device does not hold our self-signing key: sign from the device that does"
            )
        device = await self._tracker.device(self.user_id, device_id)
        if device is None:
            raise CryptoError(f"unknown device {device_id} of ours: fetch our keys first")
        signed = keys.self_signing.sign_json(dict(device.keys_json), self.user_id)
        return {self.user_id: {device_id: signed}}

    async def user_identity(self, user_id: str) -> UserIdentity:
        return await self._identities.user_identity(user_id)

    async def acknowledge_identity(self, user_id: str) -> bool:
        return await self._identities.acknowledge(user_id)

    async def verify_identity(self, user_id: str, master_key: str) -> dict[str, Any] | None:
        """Mark a master key (compared out of band) verified; the signature body to upload, if any."""
        return await self._identities.verify(user_id, master_key)

    def set_device_blocked(self, user_id: str, device_id: str, blocked: bool) -> None:
        self._identities.set_blocked(user_id, device_id, blocked)

    async def device_trust(self, device: DeviceRecord) -> TrustLevel:
        if (device.user_id, device.device_id) == (self.user_id, self.device_id):
            own = await self._identities.private_keys()
            if own is not None and own.device_signed and await self._identities.own_keys_current():
                return TrustLevel.VERIFIED  # our identity, made here, still the one published
        return await self._identities.device_trust(device)

    async def device_infos(self, user_id: str) -> list[DeviceInfo]:
        out = []
        for device_id, d in sorted((await self._tracker.devices(user_id)).items()):
            out.append(
                DeviceInfo(
                    user_id,
                    device_id,
                    d.curve25519,
                    d.ed25519,
                    (await self.device_trust(d)).value,
                    await self._identities.signed_by_owner(d),
                    await self._identities.blocked(user_id, device_id),
                )
            )
        return out

    async def setting(self, name: str) -> str | None:
        rec = await self._state.get(SettingRecord, records.SETTING, "", name)
        return None if rec is None else rec.value

    def set_setting(self, name: str, value: str) -> None:
        self._state.put(records.SETTING, "", name, SettingRecord(value))

    async def set_sharing_mode(self, mode: SharingMode) -> None:
        """Choose the sharing policy; every outbound session is replaced so it applies at once."""
        self._policy.mode = SharingMode(mode)
        self._state.put(records.SETTING, "", "sharing_mode", SettingRecord(self._policy.mode.value))
        for room_id in await self._state.list_raw(records.OUTBOUND, ""):
            self._sender.invalidate(room_id)

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
        eligible, withheld = await self._policy.split(devices)
        shared_history = shared_history_for(history_visibility)
        rec = await self._sender.prepare(room_id, eligible, shared_history, encryption, now_ms)
        targets = [
            d
            for user, devs in eligible.items()
            for k, d in devs.items()
            if k not in rec.shared_with.get(user, {})
        ]
        missing = []
        claiming = {d for _, devs, _ in self._claims.values() for d in devs}
        if claiming & {(d.user_id, d.device_id) for d in targets}:
            return [
                OutgoingRequest(rid, RequestKind.KEYS_CLAIM, req) for rid, (req, _, _) in self._claims.items()
            ]
        no_olm = []
        for d in targets:
            no_otk = self._no_otk.get((d.user_id, d.device_id))
            if not await self._olm.has_session(d):
                if no_otk is None or now_ms - no_otk >= NO_OTK_RETRY_MS:
                    missing.append(d)
                else:
                    no_olm.append(d)
        if missing:
            return self._claim(missing, now_ms)
        stored = await self._sender.share(room_id, rec, targets, now_ms)
        stored += await self._policy.withheld_notices(room_id, withheld)
        stored += await self._policy.no_olm_notices(no_olm, now_ms)
        return [
            OutgoingRequest(rid, RequestKind.TO_DEVICE, send_to_device(o.event_type, o.messages, o.txn_id))
            for rid, o in stored
        ]

    async def encrypt_room_event(
        self, room_id: str, event_type: str, content: dict[str, Any], *, now_ms: int
    ) -> dict[str, Any]:
        return await self._sender.encrypt(room_id, event_type, content, now_ms)

    async def decrypt_room_event(self, event: Event, *, now_ms: int) -> DecryptedEvent:
        """Decrypt, then judge the sending device (spec v1.18 "Recommended client behaviour"): in
        CROSS_SIGNED mode an event from a device its owner did not cross-sign is not shown."""
        try:
            decrypted = await self._receiver.decrypt(event)
        except DecryptionError as e:
            if e.cause in (DecryptionCause.NO_SESSION, DecryptionCause.UNKNOWN_INDEX):
                await self._request_key(event, now_ms)
            raise
        ours = (decrypted.sender_key, decrypted.signing_key) == (
            self._account.curve25519,
            self._account.ed25519,
        )
        trust = TrustLevel.VERIFIED if ours else TrustLevel.UNSIGNED  # this very device: always shown
        if not ours:
            device = await self._tracker.device_by_curve(decrypted.sender, decrypted.sender_key)
            if device is not None and device.ed25519 == decrypted.signing_key:
                trust = await self.device_trust(device)
        if self.sharing_mode == SharingMode.CROSS_SIGNED and trust == TrustLevel.UNSIGNED:
            raise DecryptionError(
                DecryptionCause.UNVERIFIED_SENDER, "the sending device is not cross-signed by its owner"
            )
        return replace(decrypted, trust=trust.value)

    async def _request_key(self, event: Event, now_ms: int) -> None:
        """Spec: #key-requests: ask our own other devices (if we have any) for a missing session."""
        session_id, sender_key = event.content.get("session_id"), event.content.get("sender_key")
        if not isinstance(session_id, str):
            return
        others = [d for d in await self._tracker.devices(self.user_id) if d != self.device_id]
        if others:
            key = sender_key if isinstance(sender_key, str) else None
            await self._gossip.request(event.room_id, session_id, key, event.sender, now_ms)

    async def resend_key_requests(self) -> int:
        """Ask our other devices again for every key we still miss (after this device was verified)."""
        return await self._gossip.resend()

    async def outstanding_key_requests(self) -> list[tuple[str, str]]:
        return [(r.room_id, r.session_id) for r in await self._gossip.outstanding()]

    async def room_members_changed(self, room_id: str, *, left: list[str]) -> None:
        """Members left (or, after a limited sync, anything but join): rotate if they had the key."""
        rec = await self._sender.current(room_id)
        if rec is not None and any(user in rec.shared_with for user in left):
            self._sender.invalidate(room_id)

    def invalidate_group_session(self, room_id: str) -> None:
        self._sender.invalidate(room_id)
