"""The nimbus side of the interop tests: logged-in nimbus clients and the waits they need opposite Element.

Owns: logging a nimbus device in (a fresh user, or another device of an existing user), waiting for
an invite / a membership / another user's devices / a message by event id, sending a text or a file
and returning its event id, and reading what nimbus stored (the wire `session_id` of an encrypted
event, the inbound Megolm sessions of a room). Rules: every wait syncs with a short long-poll and has
a deadline (no fixed sleeps); passwords and message bodies are never logged.
Cross-signing waits: an event that settles as undecryptable with a given cause, another user's
identity (master key, pinned key, changed flag) or device trust as nimbus sees it after syncing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimbus.client.client import Client
from nimbus.client.profile import Profile
from nimbus.client.room import Message
from nimbus.crypto.records import INBOUND
from nimbus.homeserver import Homeserver
from nimbus.types.events import Event
from nimbus.types.ids import RoomId
from tests.fixtures_synapse import register_new_user
from tests.integration.helpers import PASSPHRASE, SYNC_POLL_MS, send_and_flush, wait_until

__all__ = ["PASSPHRASE", "NimbusUser", "send_and_flush", "wait_until"]


@dataclass
class NimbusUser:
    """A registered user whose devices are nimbus clients (each with its own profile)."""

    server: Homeserver
    user_id: str
    password: str
    profiles: Path

    @classmethod
    async def register(cls, server: Homeserver, tmp_path: Path, name: str) -> NimbusUser:
        user_id, password = await asyncio.to_thread(register_new_user, server, name)
        return cls(server, user_id, password, tmp_path / "nimbus" / user_id.split(":", 1)[0].lstrip("@"))

    async def device(self, label: str, *, cross_signing: bool = True) -> Client:
        """Log a new nimbus device of this user in (its keys published); the caller closes it."""
        profile = Profile(self.profiles / label)
        return await Client.login(
            profile,
            self.server.client_url,
            self.user_id,
            self.password,
            passphrase=PASSPHRASE,
            device_name=f"nimbus-{label}",
            cross_signing=cross_signing,
        )

    async def unsigned_device(self, label: str) -> Client:
        """Log a new nimbus device in without bootstrapping cross-signing (`cross_signing=False`): the
        device stays unsigned by its owner even if the user has no identity yet; the caller closes it."""
        return await self.device(label, cross_signing=False)


async def new_client(server: Homeserver, tmp_path: Path, name: str) -> Client:
    """One nimbus device of a fresh user."""
    return await (await NimbusUser.register(server, tmp_path, name)).device(secrets.token_hex(3))


async def join_when_invited(client: Client, room_id: str, timeout: float = 30.0) -> None:
    """Sync until invited, join, and sync until the join is in this device's store."""

    async def invited() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        return room_id in await client.room_ids("invite")

    await wait_until(invited, timeout, f"{client.user_id}'s invite to {room_id}")
    await client.join(room_id)

    async def joined() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        return room_id in await client.room_ids("join")

    await wait_until(joined, timeout, f"{client.user_id}'s join of {room_id} in sync")


async def wait_membership(
    client: Client, room_id: str, user_id: str, membership: str = "join", timeout: float = 30.0
) -> None:
    """Sync until this device's synced room state has `user_id` with `membership`."""

    async def seen() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        for event in await client.store.state_events(RoomId(room_id), "m.room.member"):
            if event.state_key == user_id:
                return event.content.get("membership") == membership
        return False

    await wait_until(seen, timeout, f"{client.user_id} to see {user_id} {membership} {room_id}")


async def wait_devices(client: Client, user_id: str, device_ids: list[str], timeout: float = 30.0) -> None:
    """Sync until nimbus's crypto knows (signatures checked) every one of `device_ids` of `user_id`."""

    async def known() -> bool:
        await client.sync_once(0)  # device_lists.changed marks the user outdated; device_keys re-queries
        have = await client.device_keys(user_id)
        return all(d in have for d in device_ids)

    await wait_until(known, timeout, f"{client.user_id} to know devices {device_ids} of {user_id}")


async def wait_event(client: Client, room_id: str, event_id: str, timeout: float = 30.0) -> Message:
    """Sync until the event is in the timeline and, if encrypted, decrypted; return it.

    On the deadline the AssertionError names the failure cause nimbus recorded, if any.
    """
    found: list[Message] = []

    async def decrypted() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        if room_id not in await client.room_ids():
            return False
        room = await client.room(room_id, limit=500)
        found[:] = [m for m in room.timeline if m.event_id == event_id]
        return bool(found) and (found[0].e2ee is None or bool(found[0].e2ee.get("decrypted")))

    try:
        await wait_until(decrypted, timeout, f"{client.user_id} ({client.device_id}) to decrypt {event_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {found[0].e2ee if found else 'not in timeline'}") from None
    return found[0]


async def wire_session_id(client: Client, room_id: str, event_id: str, timeout: float = 30.0) -> str:
    """The Megolm `session_id` of an encrypted event as it came over the wire (this device's stored
    timeline; syncs until the event, maybe this device's own, has come down sync)."""
    found: list[Event] = []

    async def stored() -> bool:
        found[:] = [
            e for e in await client.store.timeline(RoomId(room_id), limit=1000) if e.event_id == event_id
        ]
        if not found:
            await client.sync_once(SYNC_POLL_MS)
        return bool(found)

    await wait_until(stored, timeout, f"{event_id} in {client.user_id}'s stored timeline of {room_id}")
    assert found[0].type == "m.room.encrypted", f"{event_id} was not encrypted on the wire"
    return str(found[0].content["session_id"])


async def inbound_session_ids(client: Client, room_id: str) -> set[str]:
    """The ids of every inbound Megolm session this device holds for the room (from its crypto store)."""
    return {item for item, _ in await client.store.crypto_list(INBOUND, room_id)}


async def send_file(client: Client, room_id: str, data: bytes, name: str, mimetype: str) -> str:
    """Send a file and deliver it; returns the event id the server gave it."""
    entry = await client.send_file(room_id, data, name, mimetype)
    result = await client.flush_outbox(timeout=30)
    assert not result.pending and not result.failed, f"not delivered: {result.last_error}"
    sent = [e for e in result.sent if e.txn_id == entry.txn_id]
    assert sent and sent[0].event_id
    return str(sent[0].event_id)


async def wait_undecryptable(
    client: Client, room_id: str, event_id: str, causes: Collection[str], timeout: float = 30.0
) -> Message:
    """Sync until the event is in the timeline as undecryptable with `e2ee["cause"]` in `causes`.

    Fails at once if nimbus decrypts it; on the deadline the AssertionError names the last e2ee seen.
    """
    found: list[Message] = []

    async def settled() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        if room_id not in await client.room_ids():
            return False
        room = await client.room(room_id, limit=500)
        found[:] = [m for m in room.timeline if m.event_id == event_id]
        if not found or found[0].e2ee is None:
            return False
        e2ee = found[0].e2ee
        assert not e2ee.get("decrypted"), f"{event_id} was decrypted by {client.device_id}: {e2ee}"
        return e2ee.get("cause") in causes

    try:
        await wait_until(settled, timeout, f"{client.device_id} to find {event_id} undecryptable ({causes})")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {found[0].e2ee if found else 'not in timeline'}") from None
    return found[0]


async def wait_identity(
    client: Client, user_id: str, predicate: Callable[[Any], bool], what: str, timeout: float = 30.0
) -> Any:
    """Sync (so device_lists.changed is seen) until `client.user_identity(user_id)` satisfies `predicate`."""
    seen: list[Any] = []

    async def matches() -> bool:
        await client.sync_once(0)
        seen[:] = [await client.user_identity(user_id)]
        return predicate(seen[0])

    try:
        await wait_until(matches, timeout, f"{client.user_id}'s view of {user_id}'s identity: {what}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen[0] if seen else None!r}") from None
    return seen[0]


async def wait_user_device(
    client: Client, user_id: str, device_id: str, predicate: Callable[[Any], bool], timeout: float = 30.0
) -> Any:
    """Sync until `client.user_devices(user_id)` lists `device_id` satisfying `predicate`; return it."""
    seen: list[Any] = []

    async def matches() -> bool:
        await client.sync_once(0)
        seen[:] = [d for d in await client.user_devices(user_id) if d.device_id == device_id]
        return bool(seen) and predicate(seen[0])

    try:
        await wait_until(matches, timeout, f"{client.user_id}'s view of device {device_id} of {user_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen[0] if seen else None!r}") from None
    return seen[0]
