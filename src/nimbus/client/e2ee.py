"""The client's end-to-end encryption loop: it drives the sans-I/O OlmMachine with real I/O.

Spec: Client-Server API, "End-to-End Encryption" (https://spec.matrix.org/v1.12/client-server-api/#end-to-end-encryption).

Rules this module keeps (the machine defines them; this is where they meet the network and the disk):
- Save before sending: every change set the machine hands over is committed to the store before any
  request built from it leaves the process. To-device room keys are stored by the machine as
  outgoing objects, so a crash resends the very same ciphertext with the same txn id.
- Incoming: the to-device changes of a sync batch, the decrypted timeline of that batch and the
  batch's next_batch token are committed in ONE transaction (`prepare_batch` returns them; the sync
  loop saves them) before the next /sync acknowledges them.
- Outgoing room messages: the Megolm ratchet advance and the ciphertext go into the store together
  with the outbox entry (`encrypt_for_outbox` returns both); the outbox resends the same bytes.
- Keys are shared with the full member list from /members (never a lazy-loaded subset), invited
  members included unless history visibility is "joined"; in a limited sync any non-join membership
  counts as a leave and rotates the room's session.
- Late keys: when a room key (or a withheld notice) arrives, earlier events of that session that
  failed are decrypted again (so they decrypt, or show the withheld cause).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nimbus.api import keys as keys_api
from nimbus.api import room_state
from nimbus.api.uia import with_password_auth
from nimbus.client.transport import Transport
from nimbus.crypto.devices.tracker import DeviceProblem
from nimbus.crypto.errors import CryptoError, DecryptionCause, DecryptionError, ToDeviceCause
from nimbus.crypto.identity.manager import IdentityChange
from nimbus.crypto.machine import OlmMachine, RequestKind, ToDeviceStatus
from nimbus.crypto.store import CryptoChanges
from nimbus.store import Store
from nimbus.types.events import Event, SyncBatch
from nimbus.types.ids import EventId, RoomId, UserId

log = logging.getLogger("nimbus.client.e2ee")

MEGOLM = "m.megolm.v1.aes-sha2"
RETRY_SCAN = 500  # how many stored events of a room are looked at again when a late key arrives
UNVERIFIED_RETRY_MAX = 1000  # events from not-yet-known devices kept (in memory) to judge again


def now_ms() -> int:
    return int(time.time() * 1000)


def decrypted_record(result: Any) -> dict[str, Any]:
    """What the store's decrypted-event cache keeps for one event (encrypted at rest by the store)."""
    return {
        "ok": True,
        "type": result.type,
        "content": result.content,
        "sender_device": result.sender_device,
        "verified": result.verified,
        "trust": result.trust,
        "authentic": result.authentic,
        "session_id": result.session_id,
    }


def failure_record(exc: DecryptionError, session_id: str | None) -> dict[str, Any]:
    return {
        "ok": False,
        "cause": exc.cause.value,
        "code": exc.code,
        "reason": exc.reason,
        "session_id": session_id,
    }


@dataclass
class BatchExtras:
    """What the sync loop saves with a batch, in the same transaction."""

    crypto: CryptoChanges = field(default_factory=CryptoChanges)
    decrypted: dict[EventId, dict[str, Any]] = field(default_factory=dict)


class ClientCrypto:
    """Owns the OlmMachine of one logged-in device and the requests it needs."""

    def __init__(self, machine: OlmMachine, store: Store, transport: Transport) -> None:
        self.machine = machine
        self.store = store
        self.transport = transport
        self._members_loaded: dict[RoomId, dict[str, Event]] = {}
        self.device_problems: list[DeviceProblem] = []  # refused devices seen by this process
        self.identity_changes: list[IdentityChange] = []  # identity changes seen by this process
        self.key_requests_refused = 0  # key requests from devices we do not trust (this process)
        # events hidden because their sender's device was not (yet) known as cross-signed: judged
        # again when a /keys/query answers (their sender's keys may simply not have been fetched yet)
        self._unverified: dict[EventId, Event] = {}

    # --- committing and sending -----------------------------------------------------------------

    async def commit(self) -> None:
        """Commit whatever the machine changed, on its own."""
        changes = self.machine.take_changes()
        if changes:
            await self.store.crypto_save(changes)
            self.machine.changes_committed(changes)

    async def send_outgoing(self) -> None:
        """Send every request the machine has queued (keys upload/query/claim, to-device), each only
        after the state it came from is committed."""
        for _ in range(20):  # a query can lead to a claim; bounded so nothing loops forever
            await self.commit()
            requests = await self.machine.outgoing_requests()
            if not requests:
                return
            queried = False
            for outgoing in requests:
                response = await self.transport.send(outgoing.request)
                await self.machine.mark_request_as_sent(outgoing.request_id, response)
                await self.commit()
                queried = queried or outgoing.kind == RequestKind.KEYS_QUERY
            self._report_device_problems()
            if queried:
                await self._judge_unverified_again()

    async def _judge_unverified_again(self) -> None:
        """Events hidden as from an unsigned device are decrypted again once keys were fetched."""
        for event_id, event in list(self._unverified.items()):
            record = await self._decrypt(event)
            if record.get("cause") == DecryptionCause.UNVERIFIED_SENDER.value:
                continue
            del self._unverified[event_id]
            await self.store.save_decrypted(event.room_id, event.event_id, record)
            await self.commit()

    def _report_device_problems(self) -> None:
        """Devices whose keys were refused (bad self-signature, keys changed under the same id):
        never used for encryption, and said out loud (no key material in the message)."""
        for problem in self.machine.take_device_problems():
            log.warning(
                "refused device %s of %s: %s (it gets no room keys)",
                problem.device_id,
                problem.user_id,
                problem.reason,
            )
            self.device_problems.append(problem)
        for change in self.machine.take_identity_changes():
            log.warning(
                "the identity of %s changed (master key %s → %s)%s",
                change.user_id,
                change.pinned_master[:8],
                change.new_master[:8],
                ": sending to them is blocked until you acknowledge it" if change.was_verified else "",
            )
            self.identity_changes.append(change)

    # --- incoming ------------------------------------------------------------------------------

    async def prepare_batch(self, batch: SyncBatch) -> BatchExtras:
        """Feed one sync batch to the machine and decrypt its timeline. Nothing is committed here:
        the sync loop saves the returned extras with the batch in one transaction."""
        if await self.store.load_sync_token() is None:
            # Spec: "Tracking the device list for a user": an initial sync has no device_lists for
            # what changed before it (e.g. our own device that logged in meanwhile): query again.
            await self.machine.mark_tracked_users_outdated()
        results = await self.machine.receive_sync_changes(
            to_device=list(batch.to_device),
            changed=list(batch.device_lists_changed),
            left=list(batch.device_lists_left),
            one_time_key_counts=dict(batch.one_time_keys_count),
            unused_fallback_key_types=(
                list(batch.unused_fallback_key_types) if batch.unused_fallback_key_types is not None else None
            ),
            now_ms=now_ms(),
        )
        for r in results:
            if r.status in (ToDeviceStatus.FAILED, ToDeviceStatus.IGNORED):
                log.warning("to-device %s from %s not used: %s", r.event_type, r.sender, r.cause)
            if r.cause == ToDeviceCause.KEY_REQUEST_REFUSED:
                self.key_requests_refused += 1
        extras = BatchExtras()
        await self._track_and_rotate(batch)
        for update in batch.rooms:
            for event in update.timeline:
                if event.type == "m.room.encrypted":
                    extras.decrypted[event.event_id] = await self._decrypt(event)
        # A room key (decrypt them now) or a withheld notice (show it as the cause instead of
        # no_session) for a session: earlier events of that session are tried again.
        new_keys = {
            (r.room_id, r.session_id)
            for r in results
            if r.status in (ToDeviceStatus.ROOM_KEY, ToDeviceStatus.WITHHELD) and r.room_id
        }
        if new_keys:
            await self._retry_earlier(new_keys, extras)
        extras.crypto = self.machine.take_changes()
        return extras

    def committed(self, changes: CryptoChanges) -> None:
        """The caller committed a change set it took from us (with a batch or an outbox entry)."""
        self.machine.changes_committed(changes)

    async def _decrypt(self, event: Event) -> dict[str, Any]:
        session_id = (
            event.content.get("session_id") if isinstance(event.content.get("session_id"), str) else None
        )
        try:
            return decrypted_record(await self.machine.decrypt_room_event(event, now_ms=now_ms()))
        except DecryptionError as exc:
            log.info("could not decrypt %s: %s", event.event_id, exc.cause.value)
            if (
                exc.cause == DecryptionCause.UNVERIFIED_SENDER
                and len(self._unverified) < UNVERIFIED_RETRY_MAX
            ):
                self._unverified[event.event_id] = event
                await self.machine.update_tracked_users([event.sender])
            return failure_record(exc, session_id)

    async def _retry_earlier(self, keys: set[tuple[str, str | None]], extras: BatchExtras) -> None:
        for room_id in {room for room, _ in keys}:
            events = await self.store.timeline(RoomId(room_id), limit=RETRY_SCAN)
            candidates = [
                e for e in events if e.type == "m.room.encrypted" and e.event_id not in extras.decrypted
            ]
            if not candidates:
                continue
            cached = await self.store.decrypted(RoomId(room_id), [e.event_id for e in candidates])
            sessions = {s for r, s in keys if r == room_id}
            for event in candidates:
                record = cached.get(event.event_id)
                if record is not None and record.get("ok"):
                    continue
                if event.content.get("session_id") not in sessions:
                    continue
                extras.decrypted[event.event_id] = {**await self._decrypt(event), "room_id": room_id}

    async def _track_and_rotate(self, batch: SyncBatch) -> None:
        """Track members of encrypted rooms; a member leaving rotates the room's session."""
        for update in batch.rooms:
            if update.membership != "join":
                continue
            events = list(update.state) + list(update.timeline)
            encrypted = any(e.type == "m.room.encryption" for e in events) or (
                await self.store.state_event(update.room_id, "m.room.encryption") is not None
            )
            if not encrypted:
                continue
            joined: list[str] = []
            left: list[str] = []
            for member in (e for e in events if e.type == "m.room.member" and e.state_key):
                membership = member.content.get("membership")
                # Spec: after a limited sync any non-join membership counts as a leave.
                if membership == "join" or (membership == "invite" and not update.limited):
                    joined.append(str(member.state_key))
                else:
                    left.append(str(member.state_key))
            if joined:
                await self.machine.update_tracked_users(joined)
            if left:
                await self.machine.room_members_changed(update.room_id, left=left)

    # --- cross-signing ----------------------------------------------------------------------------

    async def bootstrap_cross_signing(self, password: str | None) -> bool:
        """Give this user a cross-signing identity made on this device, if they have none.

        Spec: "Cross-signing": POST /keys/device_signing/upload (user-interactive auth with the
        password; Synapse lets a user with no keys skip it, MSC3967) then POST /keys/signatures/upload
        (this device signed by the new self-signing key). The private keys are committed first, so
        a crash or a failed upload retries with the same keys. Returns False (and changes nothing)
        when the user already has an identity made elsewhere: this device then stays unsigned
        until it is verified (a later feature), which `identity()` says.
        """
        await self.machine.mark_tracked_users_outdated([self.machine.user_id])
        await self.send_outgoing()  # our own keys, fetched now, must be known before deciding
        if not await self.machine.own_identity_known():
            raise CryptoError("our own keys could not be fetched: cannot tell whether we have an identity")
        own = await self.machine.own_cross_signing_keys()
        current = (await self.machine.user_identity(self.machine.user_id)).master_key
        if current is not None and (own is None or own.master.public != current):
            return False
        if own is not None and await self.machine.cross_signing_uploaded():
            return True
        plan = await self.machine.bootstrap_cross_signing()
        await self.commit()  # the private keys are safe before anything is uploaded
        user = self.machine.user_id
        if current is None:
            if password is None:  # raises AuthRequired if the server wants the password
                await self.transport.send(keys_api.upload_signing_keys(plan.keys))
            else:
                flow = with_password_auth(
                    lambda a: keys_api.upload_signing_keys(plan.keys, a), user, password
                )
                await self.transport.drive(flow)
        failures = keys_api.parse_upload_signatures(
            await self.transport.send(keys_api.upload_signatures(plan.signatures))
        )
        if failures:
            raise CryptoError(f"the server refused our cross-signing signatures for {sorted(failures)}")
        await self.machine.cross_signing_done()
        await self.send_outgoing()
        return True

    # --- outgoing room messages -----------------------------------------------------------------

    async def members_to_share_with(self, room_id: RoomId) -> tuple[list[UserId], str, dict[str, Any]]:
        """Who gets the room key: every joined member, and invited ones unless history visibility is
        "joined"; plus the history visibility and the room's m.room.encryption content.

        The full member list comes from /members (spec: never a lazy-loaded subset) the first time
        this process shares in the room; after that from the synced state, which sync keeps current
        (nimbus does not lazy-load members), merged with what /members said.
        """
        if room_id not in self._members_loaded:
            events, _skipped = room_state.parse_members(
                await self.transport.send(room_state.members(room_id)), room_id
            )
            self._members_loaded[room_id] = {e.state_key: e for e in events if e.state_key}
        members = dict(self._members_loaded[room_id])
        for event in await self.store.state_events(room_id, "m.room.member"):
            if event.state_key:
                members[event.state_key] = event  # synced state is newer than the first /members
        visibility_event = await self.store.state_event(room_id, "m.room.history_visibility")
        visibility = "shared"
        if visibility_event is not None:
            visibility = str(visibility_event.content.get("history_visibility", "shared"))
        wanted = ("join", "invite") if visibility != "joined" else ("join",)
        users = [UserId(k) for k, e in members.items() if e.content.get("membership") in wanted]
        encryption = await self.store.state_event(room_id, "m.room.encryption")
        return users, visibility, dict(encryption.content) if encryption else {"algorithm": MEGOLM}

    async def share_room_key(self, room_id: RoomId) -> None:
        """Make sure every device of every member has the room's current session."""
        members, visibility, encryption = await self.members_to_share_with(room_id)
        await self.machine.update_tracked_users(list(members))
        for _ in range(10):
            requests = await self.machine.share_room_key(
                room_id, list(members), history_visibility=visibility, now_ms=now_ms(), encryption=encryption
            )
            await self.commit()  # room keys are stored as outgoing requests before they are sent
            if not requests:
                break
            if all(r.kind == RequestKind.TO_DEVICE for r in requests):
                break
            claims = [r for r in requests if r.kind == RequestKind.KEYS_CLAIM]
            for outgoing in [r for r in requests if r.kind != RequestKind.KEYS_CLAIM]:
                response = await self.transport.send(outgoing.request)
                await self.machine.mark_request_as_sent(outgoing.request_id, response)
                await self.commit()
            await self._send_claims(claims)
        await self.send_outgoing()

    async def _send_claims(self, claims: list[Any]) -> None:
        """/keys/claim chunks go out together (their round trips overlap: a room of a thousand
        devices needs ten); the answers are applied one by one, in order, then committed once."""
        responses = await asyncio.gather(
            *(self.transport.send(c.request) for c in claims), return_exceptions=True
        )
        failure: BaseException | None = None
        for claim, response in zip(claims, responses, strict=True):
            if isinstance(response, BaseException):
                failure = failure or response
                continue
            await self.machine.mark_request_as_sent(claim.request_id, response)
        await self.commit()
        if failure is not None:
            raise failure

    async def encrypt_for_outbox(
        self, room_id: RoomId, event_type: str, content: dict[str, Any]
    ) -> tuple[dict[str, Any], CryptoChanges]:
        """Share the room key if needed, then encrypt. The caller commits the returned changes in the
        same transaction as the outbox entry holding the ciphertext."""
        await self.share_room_key(room_id)
        encrypted = await self.machine.encrypt_room_event(room_id, event_type, content, now_ms=now_ms())
        return encrypted, self.machine.take_changes()
