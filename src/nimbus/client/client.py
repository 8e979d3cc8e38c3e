"""The client: one logged-in device, its store, its sync loop and its outbox.

What it owns: the session lifecycle (login, restore, logout), the calls a person or script makes
(rooms, membership, messages, history, devices), and the wiring between the transport (HTTP), the
store (disk) and the sync loop / outbox (background work). It holds no protocol shapes (nimbus.api)
and no storage details (nimbus.store).

Encryption (spec: "End-to-End Encryption", https://spec.matrix.org/v1.12/client-server-api/#end-to-end-encryption):
rooms nimbus creates are encrypted; in an encrypted room `send` encrypts on the device and the timeline
shows decrypted events (see nimbus.client.e2ee). nimbus never sends plaintext into an encrypted room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nimbus.api import account_data, auth, devices, discovery, media, room_events, rooms
from nimbus.api import keys as keys_api
from nimbus.api.errors import ApiError
from nimbus.api.uia import with_password_auth
from nimbus.client.e2ee import MEGOLM, ClientCrypto
from nimbus.client.outbox import TRANSIENT, FlushResult, NotReady, Outbox, new_txn_id
from nimbus.client.profile import Profile
from nimbus.client.room import Message, Room, build_room
from nimbus.client.sync import SyncLoop
from nimbus.client.transport import Transport
from nimbus.crypto.attachments import decrypt_attachment, encrypt_attachment
from nimbus.crypto.identity.manager import UserIdentity
from nimbus.crypto.machine import DeviceInfo, OlmMachine, SharingMode
from nimbus.store import OutboxEntry, Session, SqliteStore, Store
from nimbus.types.errors import NimbusError
from nimbus.types.events import Event
from nimbus.types.ids import DeviceId, RoomId, UserId, parse_room_id

log = logging.getLogger("nimbus.client")


CROSS_SIGNING_SETTING = "cross_signing"  # "auto" (make an identity if we have none), "off", "done"…


class NotLoggedIn(NimbusError):
    """The profile has no session: log in first."""


class UnknownRoom(NimbusError):
    """The room is not known to this device (not joined, invited or synced yet)."""


async def resolve_homeserver(server: str, *, verify: str | bool = True) -> str:
    """A homeserver base URL from a URL or a server name (spec: "Server Discovery", .well-known).

    `https://…`/`http://…` is taken as the base URL. A bare server name is looked up at
    `https://<name>/.well-known/matrix/client`; with no usable answer the name itself is tried as
    `https://<name>`. Either way the result must answer GET /_matrix/client/versions.
    """
    if server.startswith(("https://", "http://")):
        candidates = [server.rstrip("/")]
    else:
        candidates = []
        async with Transport(f"https://{server}", max_retries=0, timeout=10, verify=verify) as t:
            try:
                candidates.append(
                    discovery.parse_well_known(await t.send(discovery.well_known())).homeserver_base_url
                )
            except ApiError as exc:
                log.info("login: no usable .well-known at %s (%s)", server, type(exc).__name__)
        candidates.append(f"https://{server}")
    last: Exception | None = None
    for url in candidates:
        async with Transport(url, max_retries=1, timeout=10, verify=verify) as t:
            try:
                discovery.parse_versions(await t.send(discovery.versions()))
                return url
            except ApiError as exc:
                last = exc
    raise NimbusError(f"no Matrix homeserver found for {server!r} ({type(last).__name__})")


class Client:
    """A logged-in device. Create with `Client.login(...)` or `Client.open(profile)`; `close()` after."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        session: Session,
        crypto: ClientCrypto,
        profile: Profile | None = None,
    ):
        self.store = store
        self.transport = transport
        self.session = session
        self.profile = profile
        self.crypto = crypto
        self.sync = SyncLoop(store, transport)
        self.sync.preparer = crypto
        self.outbox = Outbox(store, transport)
        self.outbox.sealer = self._seal
        self.sync.listeners.append(self._on_batch)

    @classmethod
    async def _assemble(
        cls, store: Store, transport: Transport, session: Session, profile: Profile | None
    ) -> Client:
        """Load (or create, on first use) this device's Olm account and wire everything together."""
        machine = await OlmMachine.load(
            store, session.user_id, session.device_id, store.derive_key("vodozemac-pickle")
        )
        return cls(store, transport, session, ClientCrypto(machine, store, transport), profile)

    # --- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    async def login(
        cls,
        profile: Profile,
        homeserver: str,
        user: str,
        password: str,
        *,
        passphrase: str,
        device_name: str = "nimbus",
        verify: str | bool = True,
        cross_signing: bool = True,
    ) -> Client:
        """Log in with a password (spec: "Login", m.login.password) and keep the session in the profile,
        whose store is encrypted with `passphrase` (chosen by the user; never a default).

        On the first login of a user with no cross-signing identity, one is made on this device and
        the device is signed with it (`cross_signing=False` skips that: the device stays unsigned).
        A new device of a user who has an identity stays unsigned until it is verified."""
        profile.acquire()
        store: Store | None = None
        try:
            store = await SqliteStore.open(profile.store_path, passphrase=passphrase)
            if await store.load_session() is not None:
                raise NimbusError(f"profile {profile.path} is already logged in; log out first")
            base_url = await resolve_homeserver(homeserver, verify=verify)
            transport = Transport(base_url, verify=verify)
            try:
                answer = auth.parse_login(
                    await transport.send(
                        auth.login_password(user, password, initial_device_display_name=device_name)
                    )
                )
            except BaseException:
                await transport.aclose()
                raise
            if answer.homeserver_base_url and answer.homeserver_base_url != base_url:
                log.info(
                    "login: the server names %s as its base URL; keeping %s",
                    answer.homeserver_base_url,
                    base_url,
                )
            session = Session(base_url, answer.user_id, answer.device_id, answer.access_token)
            await store.save_session(session)
            transport.access_token = session.access_token
            client = await cls._assemble(store, transport, session, profile)
            # The choice is saved first: a login killed before the bootstrap finishes it at next open.
            client.crypto.machine.set_setting(CROSS_SIGNING_SETTING, "auto" if cross_signing else "off")
            await client.crypto.commit()
            await client.crypto.send_outgoing()  # publish the new device's keys
            if cross_signing:
                try:
                    await client._bootstrap(password)
                except Exception as exc:  # the server went away mid-way: finished at the next start
                    log.warning(
                        "login: cross-signing not set up yet (%s); retried at next start", type(exc).__name__
                    )
            return client
        except BaseException:
            if store is not None:
                await store.close()
            profile.release()
            raise

    @classmethod
    async def open(cls, profile: Profile, *, passphrase: str, verify: str | bool = True) -> Client:
        """Restore the session kept in a profile (taking its write lock). A wrong passphrase raises
        nimbus.store.WrongPassphrase and changes nothing."""
        if not profile.exists():
            raise NotLoggedIn(f"no nimbus profile at {profile.path}: run 'nimbus login' first")
        profile.acquire()
        try:
            store = await SqliteStore.open(profile.store_path, passphrase=passphrase)
        except BaseException:
            profile.release()
            raise
        session = await store.load_session()
        if session is None:
            await store.close()
            profile.release()
            raise NotLoggedIn(f"profile {profile.path} is not logged in: run 'nimbus login' first")
        transport = Transport(session.homeserver, access_token=session.access_token, verify=verify)
        try:
            client = await cls._assemble(store, transport, session, profile)
        except BaseException:
            await transport.aclose()
            await store.close()
            profile.release()
            raise
        await client._finish_cross_signing()
        return client

    async def _bootstrap(self, password: str | None) -> None:
        made = await self.crypto.bootstrap_cross_signing(password)
        # "done": ours, uploaded; "elsewhere": the user has an identity made on another device
        self.crypto.machine.set_setting(CROSS_SIGNING_SETTING, "done" if made else "elsewhere")
        await self.crypto.commit()

    async def _finish_cross_signing(self) -> None:
        """A bootstrap interrupted (a login killed before it, a crash after the keys were saved, the
        server away) is finished now if the server allows it without the password (a user's first
        cross-signing upload needs none on Synapse, MSC3967); otherwise `nimbus identity` says so."""
        if await self.crypto.machine.setting(CROSS_SIGNING_SETTING) != "auto":
            return
        try:
            await self._bootstrap(None)
        except Exception as exc:  # offline, or the server wants the password: say so, keep the keys
            log.warning("cross-signing keys not uploaded yet (%s)", type(exc).__name__)

    @classmethod
    async def in_memory(cls, store: Store, transport: Transport, session: Session) -> Client:
        """For tests and benchmarks: a client over a given store and transport."""
        transport.access_token = session.access_token
        return await cls._assemble(store, transport, session, None)

    async def close(self) -> None:
        await self.transport.aclose()
        await self.store.close()
        if self.profile is not None:
            self.profile.release()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def logout(self) -> None:
        """Invalidate the access token on the server and forget the session locally."""
        try:
            await self.transport.send(auth.logout())
        finally:
            await self.store.clear_session()

    @property
    def user_id(self) -> UserId:
        return self.session.user_id

    @property
    def device_id(self) -> DeviceId:
        return self.session.device_id

    async def whoami(self) -> auth.WhoAmI:
        return auth.parse_whoami(await self.transport.send(auth.whoami()))

    # --- background work ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Sync and deliver the outbox until `stop` is set."""
        await asyncio.gather(self.sync.run(stop), self.outbox.run(stop))

    async def sync_once(self, timeout_ms: int = 0) -> None:
        await self.sync.sync_once(timeout_ms)

    async def _on_batch(self, batch: Any, confirmed: list[OutboxEntry]) -> None:
        """After each saved batch: send what the crypto machine needs (key uploads, queries, ...)."""
        if confirmed:
            log.debug("sync confirmed %d outbox entr(y/ies)", len(confirmed))
        await self.crypto.send_outgoing()

    # --- rooms --------------------------------------------------------------------------------

    async def create_room(
        self,
        *,
        name: str | None = None,
        topic: str | None = None,
        invite: Sequence[str] = (),
        is_direct: bool = False,
        preset: str | None = None,
        encrypted: bool = True,
    ) -> RoomId:
        """Create a room (spec: POST /createRoom), end-to-end encrypted unless told otherwise (spec:
        "Enabling End-to-End Encryption": an m.room.encryption state event naming Megolm).
        DMs are recorded in m.direct account data."""
        preset = preset or ("trusted_private_chat" if is_direct else "private_chat")
        initial_state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}]
        room_id = rooms.parse_create_room(
            await self.transport.send(
                rooms.create_room(
                    name=name,
                    topic=topic,
                    invite=invite,
                    is_direct=is_direct,
                    preset=preset,
                    initial_state=initial_state if encrypted else (),
                )
            )
        )
        if is_direct and invite:
            await self._add_direct(room_id, list(invite))
        return room_id

    async def _add_direct(self, room_id: RoomId, users: list[str]) -> None:
        # Spec: "Direct Messaging": m.direct maps user id -> list of room ids, in global account data.
        current = dict(await self.store.account_data("m.direct") or {})
        for user in users:
            listed = [r for r in current.get(user, []) if isinstance(r, str)]
            if room_id not in listed:
                listed.append(room_id)
            current[user] = listed
        await self.transport.send(account_data.put_account_data(self.user_id, "m.direct", current))
        await self.store.set_account_data("m.direct", current)

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.transport.send(rooms.invite(room_id, user_id))

    async def join(self, room_id_or_alias: str, via: Sequence[str] = ()) -> RoomId:
        return rooms.parse_join(await self.transport.send(rooms.join(room_id_or_alias, via)))

    async def leave(self, room_id: str) -> None:
        await self.transport.send(rooms.leave(room_id))

    async def room_ids(self, membership: str | None = None) -> list[RoomId]:
        return await self.store.room_ids(membership)

    async def room(self, room_id: str, *, limit: int = 50) -> Room:
        """The room as this device knows it from sync (name, members, timeline with relations)."""
        rid = parse_room_id(room_id)
        membership = await self.store.membership(rid)
        if membership is None:
            raise UnknownRoom(f"room {room_id} is not known to this device (join it, or sync first)")
        state = await self.store.state_events(rid)
        timeline, e2ee = await self._decrypted_view(rid, await self.store.timeline(rid, limit=limit))
        direct = await self.store.account_data("m.direct")
        room = build_room(rid, membership, state, timeline, self.user_id, direct)
        if room.encrypted:
            room = replace(room, notices=await self._identity_notices(room))
        if not e2ee:
            return room
        return replace(room, timeline=[replace(m, e2ee=e2ee.get(m.event_id)) for m in room.timeline])

    async def _identity_notices(self, room: Room) -> list[str]:
        """A notice per joined member whose identity changed since we pinned it (spec v1.18
        "Recommended client behaviour": changes are shown; verified users block sending)."""
        out = []
        for user_id, member in sorted(room.members.items()):
            if member.membership != "join" or user_id == self.user_id:
                continue
            ident = await self.crypto.machine.user_identity(user_id)
            if not ident.changed:
                continue
            if ident.was_verified:
                out.append(
                    f"the identity of {user_id} changed since you verified it: messages to this room "
                    f"are held until you acknowledge it (nimbus trust acknowledge {user_id})"
                )
            else:
                out.append(
                    f"the identity of {user_id} changed (new master key {ident.master_key}); "
                    f"verify it, or accept it with: nimbus trust acknowledge {user_id}"
                )
        return out

    async def decrypted_timeline(self, room_id: str, *, limit: int = 1000) -> list[Event]:
        """The room's stored events, encrypted ones replaced by their decrypted form (for on-device
        features such as search; nothing leaves the device)."""
        rid = parse_room_id(room_id)
        events, _info = await self._decrypted_view(rid, await self.store.timeline(rid, limit=limit))
        return events

    async def _decrypted_view(
        self, room_id: RoomId, events: list[Event]
    ) -> tuple[list[Event], dict[str, Any]]:
        """Encrypted events replaced by their decrypted form from the store's cache (encrypted at rest),
        with what is known of each: decrypted by which device, or why not."""
        ids = [e.event_id for e in events if e.type == "m.room.encrypted"]
        if not ids:
            return events, {}
        cache = await self.store.decrypted(room_id, ids)
        view: list[Event] = []
        info: dict[str, Any] = {}
        for event in events:
            record = cache.get(event.event_id) if event.type == "m.room.encrypted" else None
            if event.type != "m.room.encrypted":
                view.append(event)
            elif record is not None and record.get("ok"):
                content = dict(record["content"])
                relation = event.content.get("m.relates_to")  # relations stay in the clear (spec)
                if relation is not None and "m.relates_to" not in content:
                    content["m.relates_to"] = relation
                view.append(replace(event, type=str(record["type"]), content=content))
                info[event.event_id] = {
                    "decrypted": True,
                    "sender_device": record.get("sender_device"),
                    "verified": record.get("verified"),
                    "trust": record.get("trust"),
                    "authentic": record.get("authentic", True),
                }
            else:
                view.append(event)
                info[event.event_id] = {
                    "decrypted": False,
                    "cause": record.get("cause") if record else "not_decrypted_yet",
                    "code": record.get("code") if record else None,
                    "reason": record.get("reason") if record else None,
                }
        return view, info

    async def rooms(self) -> list[Room]:
        return [await self.room(rid, limit=1) for rid in await self.store.room_ids()]

    async def history(self, room_id: str, limit: int = 50) -> list[Message]:
        """The newest `limit` messages, back-filling older ones from the server (/messages) if needed."""
        rid = parse_room_id(room_id)
        for _ in range(20):  # each round fetches a page; bounded so a broken server cannot loop us
            events = await self.store.timeline(rid, limit=limit * 4)
            token = await self.store.backfill_token(rid)
            room = await self.room(rid, limit=limit * 4)
            if len(room.timeline) >= limit or token is None:
                return room.timeline[-limit:]
            page = room_events.parse_messages(
                await self.transport.send(
                    room_events.messages(rid, dir="b", from_token=token, limit=max(limit, 20))
                ),
                rid,
            )
            await self.store.add_backfill(rid, list(page.chunk), page.end)
            if not page.chunk and not events:
                break
        room = await self.room(rid, limit=limit * 4)
        return room.timeline[-limit:]

    # --- sending ------------------------------------------------------------------------------

    async def is_encrypted(self, room_id: RoomId) -> bool:
        """Whether the room has m.room.encryption, from synced state (syncing once if the room is new
        to this device). An unknown room is an error: nimbus never guesses that a room is plaintext."""
        if await self.store.membership(room_id) is None:
            await self.sync_once(0)
            if await self.store.membership(room_id) is None:
                raise UnknownRoom(f"room {room_id} is not known to this device (join it first)")
        return await self.store.state_event(room_id, "m.room.encryption") is not None

    async def send(
        self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message"
    ) -> OutboxEntry:
        """Accept a message into the outbox (durable before any network I/O) and wake delivery.

        In an encrypted room the event is encrypted (sharing the room key where needed) and the
        ciphertext is saved with the Megolm ratchet advance in one transaction; a retry resends the
        same bytes. If the server cannot be reached for key sharing, the plaintext is accepted
        (encrypted at rest) and the outbox seals it right before its first send (`_seal`).
        """
        rid = parse_room_id(room_id)
        if not await self.is_encrypted(rid):  # the room must be known (synced) so delivery can decide
            return await self.outbox.accept(rid, event_type, content)
        try:
            # Online, the common case: encrypt now and keep only the ciphertext, committed in one
            # transaction with the ratchet advance.
            encrypted, changes = await self.crypto.encrypt_for_outbox(rid, event_type, content)
        except TRANSIENT as exc:
            # The server is away (key sharing needs it): keep the plaintext (encrypted at rest);
            # the outbox seals it before its first send.
            log.info("send: encrypting later, the server is not reachable (%s)", type(exc).__name__)
            return await self.outbox.accept(rid, event_type, content)
        entry = await self.outbox.accept(rid, "m.room.encrypted", encrypted, crypto=changes)
        self.crypto.committed(changes)
        return entry

    async def _seal(self, entry: OutboxEntry) -> OutboxEntry:
        if entry.event_type == "m.room.encrypted":
            return entry  # sealed before (maybe by a process that was killed): resend as is
        if await self.store.membership(entry.room_id) is None:
            raise NotReady(f"room {entry.room_id} is not synced yet: its encryption state is unknown")
        if await self.store.state_event(entry.room_id, "m.room.encryption") is None:
            return entry
        encrypted, changes = await self.crypto.encrypt_for_outbox(
            entry.room_id, entry.event_type, entry.content
        )
        await self.store.outbox_seal(entry.txn_id, "m.room.encrypted", encrypted, crypto=changes)
        self.crypto.committed(changes)
        return replace(entry, event_type="m.room.encrypted", content=encrypted)

    async def send_file(self, room_id: str, data: bytes, name: str, mimetype: str) -> OutboxEntry:
        """Upload and send a file. In an encrypted room the file is encrypted on the device first
        (spec: "Sending encrypted attachments": AES-256-CTR, SHA-256 of the ciphertext, v2 `file`);
        only ciphertext reaches the media repository."""
        rid = parse_room_id(room_id)
        msgtype = "m.image" if mimetype.startswith("image/") else "m.file"
        content: dict[str, Any] = {
            "msgtype": msgtype,
            "body": name,
            "info": {"mimetype": mimetype, "size": len(data)},
        }
        if await self.is_encrypted(rid):
            ciphertext, file_info = encrypt_attachment(data)
            uri = media.parse_upload(await self.transport.send(media.upload(ciphertext)))
            content["file"] = {**file_info, "url": uri}
        else:
            content["url"] = media.parse_upload(await self.transport.send(media.upload(data, mimetype, name)))
        return await self.send(rid, content)

    async def download(self, room_id: str, event_id: str) -> tuple[bytes, str]:
        """The file of a message, decrypted and hash-checked if it was encrypted: (data, file name)."""
        room = await self.room(room_id, limit=1000)
        message = next((m for m in room.timeline if m.event_id == event_id), None)
        if message is None:
            raise NimbusError(f"no message {event_id} in {room_id} on this device")
        if message.e2ee is not None and not message.e2ee.get("decrypted"):
            raise NimbusError(f"message {event_id} could not be decrypted ({message.e2ee.get('cause')})")
        name = str(message.content.get("body") or "file")
        file_info = message.content.get("file")
        if isinstance(file_info, dict):
            data, _ = await self.transport.send_bytes(media.download(str(file_info.get("url"))))
            return decrypt_attachment(data, file_info), name
        url = message.content.get("url")
        if not isinstance(url, str):
            raise NimbusError(f"message {event_id} has no file")
        data, _ = await self.transport.send_bytes(media.download(url))
        return data, name

    async def send_text(self, room_id: str, body: str, *, msgtype: str = "m.text") -> OutboxEntry:
        return await self.send(room_id, {"msgtype": msgtype, "body": body})

    async def flush_outbox(self, timeout: float | None = None) -> FlushResult:
        """Deliver pending messages; with `timeout`, give up waiting after that many seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return await self.outbox.flush(deadline)

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> None:
        await self.transport.send(room_events.redact(room_id, event_id, new_txn_id(), reason))

    # --- devices ------------------------------------------------------------------------------

    async def devices(self) -> tuple[devices.Device, ...]:
        return devices.parse_devices(await self.transport.send(devices.list_devices()))

    async def device_keys(self, user_id: str) -> dict[str, dict[str, str]]:
        """A user's devices and their identity keys as this device's crypto knows them (signatures
        checked; fetched with /keys/query first)."""
        await self.crypto.machine.update_tracked_users([user_id])
        await self.crypto.send_outgoing()
        known = await self.crypto.machine.devices(user_id)
        return {
            device_id: {"curve25519": d.curve25519, "ed25519": d.ed25519} for device_id, d in known.items()
        }

    # --- identities and trust (spec: "Cross-signing"; nimbus.crypto.identity) ------------------------

    async def _fresh_keys(self, user_id: str) -> None:
        """Fetch the user's keys now (these calls answer a person: one /keys/query is cheap)."""
        await self.crypto.machine.update_tracked_users([user_id])
        await self.crypto.machine.mark_tracked_users_outdated([user_id])
        await self.crypto.send_outgoing()

    async def identity(self) -> OwnIdentity:
        """Our cross-signing keys and whether this device is signed with them."""
        await self._fresh_keys(self.user_id)
        machine = self.crypto.machine
        ident = await machine.user_identity(self.user_id)
        own = await machine.own_cross_signing_keys()
        me = [d for d in await machine.device_infos(self.user_id) if d.device_id == self.device_id]
        return OwnIdentity(
            user_id=self.user_id,
            device_id=self.device_id,
            master_key=ident.master_key,
            self_signing_key=ident.self_signing_key,
            user_signing_key=ident.user_signing_key,
            has_private_keys=own is not None and own.master.public == ident.master_key,
            device_signed=bool(me) and me[0].signed_by_owner,
        )

    async def user_devices(self, user_id: str) -> list[DeviceInfo]:
        """A user's devices with their trust level ("verified", "pinned", "unpinned", "unsigned")."""
        await self._fresh_keys(user_id)
        return await self.crypto.machine.device_infos(user_id)

    async def user_identity(self, user_id: str) -> UserIdentity:
        """A user's master key, the one we pinned, whether we verified it and whether it changed."""
        await self._fresh_keys(user_id)
        return await self.crypto.machine.user_identity(user_id)

    async def acknowledge_identity(self, user_id: str) -> UserIdentity:
        """Accept a user's new identity (pin its master key); sending to them resumes."""
        await self._fresh_keys(user_id)
        if not await self.crypto.machine.acknowledge_identity(user_id):
            raise NimbusError(f"{user_id} has no cross-signing identity to acknowledge")
        await self.crypto.commit()
        return await self.crypto.machine.user_identity(user_id)

    async def verify_identity(self, user_id: str, master_key: str) -> UserIdentity:
        """Mark `master_key` as verified for `user_id` after comparing it out of band; with our
        user-signing key at hand, the signature is published (spec: POST /keys/signatures/upload)."""
        await self._fresh_keys(user_id)
        body = await self.crypto.machine.verify_identity(user_id, master_key)
        if user_id == self.user_id:  # our own identity: our other devices may now answer us
            await self.crypto.machine.resend_key_requests()
        await self.crypto.send_outgoing()
        if body is not None:
            failures = keys_api.parse_upload_signatures(
                await self.transport.send(keys_api.upload_signatures(body))
            )
            if failures:
                log.warning("the server refused our signature of %s's master key", user_id)
        return await self.crypto.machine.user_identity(user_id)

    async def sign_own_device(self, device_id: str) -> None:
        """Vouch for another device of ours (the user checked it is theirs): sign its keys with our
        self-signing key and publish the signature (spec: POST /keys/signatures/upload). Needs the
        device that holds the private keys."""
        await self._fresh_keys(self.user_id)  # the device may be brand new
        body = await self.crypto.machine.sign_own_device(device_id)
        failures = keys_api.parse_upload_signatures(
            await self.transport.send(keys_api.upload_signatures(body))
        )
        if failures:
            raise NimbusError(f"the server refused the signature of device {device_id}")
        await self._fresh_keys(self.user_id)

    async def set_device_blocked(self, user_id: str, device_id: str, blocked: bool = True) -> None:
        """A blocked device gets no room keys (m.room_key.withheld m.blacklisted instead); a session it
        already holds is replaced at the next message (the sharing policy's rotation rule)."""
        self.crypto.machine.set_device_blocked(user_id, device_id, blocked)
        await self.crypto.commit()

    @property
    def sharing_mode(self) -> str:
        return self.crypto.machine.sharing_mode.value

    async def set_sharing_mode(self, mode: str) -> None:
        """ "legacy" (every device of every member) or "cross_signed" (MSC4153: only devices their
        owner cross-signed; the default)."""
        try:
            chosen = SharingMode(mode)
        except ValueError:
            raise NimbusError(f"unknown sharing mode {mode!r}: use legacy or cross_signed") from None
        await self.crypto.machine.set_sharing_mode(chosen)
        await self.crypto.commit()

    async def delete_device(self, device_id: str, password: str) -> None:
        """Revoke a device (spec: DELETE /devices/{deviceId}, user-interactive auth with the password)."""
        flow = with_password_auth(
            lambda auth_dict: devices.delete_device(device_id, auth_dict), self.user_id, password
        )
        await self.transport.drive(flow)


@dataclass(frozen=True)
class OwnIdentity:
    """This user's cross-signing identity as this device knows it."""

    user_id: str
    device_id: str
    master_key: str | None
    self_signing_key: str | None
    user_signing_key: str | None
    has_private_keys: bool  # this device holds the private keys (it made the identity)
    device_signed: bool  # this device is cross-signed by its owner's self-signing key


def profile_at(path: str | Path | None) -> Profile:
    return Profile(Path(path)) if path is not None else Profile.named()
