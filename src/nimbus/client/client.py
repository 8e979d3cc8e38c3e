"""The client: one logged-in device, its store, its sync loop and its outbox.

What it owns: the session lifecycle (login, restore, logout), the calls a person or script makes
(rooms, membership, messages, history, devices), and the wiring between the transport (HTTP), the
store (disk) and the sync loop / outbox (background work). It holds no protocol shapes (nimbus.api)
and no storage details (nimbus.store).

Encryption: until the end-to-end encryption core lands, nimbus refuses to send into a room that has
`m.room.encryption` state (spec: "End-to-End Encryption", https://spec.matrix.org/v1.12/client-server-api/#end-to-end-encryption):
it never sends plaintext into an encrypted room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nimbus.api import account_data, auth, devices, discovery, room_events, room_state, rooms
from nimbus.api.errors import ApiError, NotFound
from nimbus.api.uia import with_password_auth
from nimbus.client.outbox import FlushResult, Outbox, new_txn_id
from nimbus.client.profile import Profile
from nimbus.client.room import Message, Room, build_room
from nimbus.client.sync import SyncLoop
from nimbus.client.transport import Transport
from nimbus.store import OutboxEntry, Session, SqliteStore, Store
from nimbus.types.errors import NimbusError
from nimbus.types.ids import DeviceId, RoomId, UserId, parse_room_id

log = logging.getLogger("nimbus.client")


class NotLoggedIn(NimbusError):
    """The profile has no session: log in first."""


class EncryptedRoomRefused(NimbusError):
    """The room is end-to-end encrypted and this build of nimbus cannot encrypt yet."""


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

    def __init__(self, store: Store, transport: Transport, session: Session, profile: Profile | None = None):
        self.store = store
        self.transport = transport
        self.session = session
        self.profile = profile
        self.sync = SyncLoop(store, transport)
        self.outbox = Outbox(store, transport)
        self.sync.listeners.append(self._on_batch)

    # --- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    async def login(
        cls,
        profile: Profile,
        homeserver: str,
        user: str,
        password: str,
        *,
        device_name: str = "nimbus",
        verify: str | bool = True,
    ) -> Client:
        """Log in with a password (spec: "Login", m.login.password) and keep the session in the profile."""
        profile.acquire()
        store: Store | None = None
        try:
            store = await SqliteStore.open(profile.store_path)
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
            return cls(store, transport, session, profile)
        except BaseException:
            if store is not None:
                await store.close()
            profile.release()
            raise

    @classmethod
    async def open(cls, profile: Profile, *, verify: str | bool = True) -> Client:
        """Restore the session kept in a profile (taking its write lock)."""
        if not profile.exists():
            raise NotLoggedIn(f"no nimbus profile at {profile.path}: run 'nimbus login' first")
        profile.acquire()
        try:
            store = await SqliteStore.open(profile.store_path)
        except BaseException:
            profile.release()
            raise
        session = await store.load_session()
        if session is None:
            await store.close()
            profile.release()
            raise NotLoggedIn(f"profile {profile.path} is not logged in: run 'nimbus login' first")
        transport = Transport(session.homeserver, access_token=session.access_token, verify=verify)
        return cls(store, transport, session, profile)

    @classmethod
    def in_memory(cls, store: Store, transport: Transport, session: Session) -> Client:
        """For tests and benchmarks: a client over a given store and transport."""
        transport.access_token = session.access_token
        return cls(store, transport, session)

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
        if confirmed:
            log.debug("sync confirmed %d outbox entr(y/ies)", len(confirmed))

    # --- rooms --------------------------------------------------------------------------------

    async def create_room(
        self,
        *,
        name: str | None = None,
        topic: str | None = None,
        invite: Sequence[str] = (),
        is_direct: bool = False,
        preset: str | None = None,
    ) -> RoomId:
        """Create a room (spec: POST /createRoom). DMs are recorded in m.direct account data."""
        preset = preset or ("trusted_private_chat" if is_direct else "private_chat")
        room_id = rooms.parse_create_room(
            await self.transport.send(
                rooms.create_room(name=name, topic=topic, invite=invite, is_direct=is_direct, preset=preset)
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
        timeline = await self.store.timeline(rid, limit=limit)
        direct = await self.store.account_data("m.direct")
        return build_room(rid, membership, state, timeline, self.user_id, direct)

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

    async def ensure_can_send(self, room_id: RoomId) -> None:
        """Refuse plaintext into an encrypted room, asking the server when the room is not synced."""
        if await self.store.membership(room_id) is not None:
            encrypted = await self.store.state_event(room_id, "m.room.encryption") is not None
        else:
            try:
                await self.transport.send(room_state.state_event(room_id, "m.room.encryption"))
                encrypted = True
            except NotFound:
                encrypted = False
        if encrypted:
            raise EncryptedRoomRefused(
                f"room {room_id} is end-to-end encrypted; this version of nimbus cannot encrypt yet, "
                "so it refuses to send plaintext there"
            )

    async def send(
        self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message"
    ) -> OutboxEntry:
        """Accept a message into the outbox (durable before any network I/O) and wake delivery."""
        rid = parse_room_id(room_id)
        await self.ensure_can_send(rid)
        return await self.outbox.accept(rid, event_type, content)

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

    async def delete_device(self, device_id: str, password: str) -> None:
        """Revoke a device (spec: DELETE /devices/{deviceId}, user-interactive auth with the password)."""
        flow = with_password_auth(
            lambda auth_dict: devices.delete_device(device_id, auth_dict), self.user_id, password
        )
        await self.transport.drive(flow)


def profile_at(path: str | Path | None) -> Profile:
    return Profile(Path(path)) if path is not None else Profile.named()
