"""Shared helpers for integration tests that drive nimbus clients against real Synapse.

Owns: waiting on a condition with a deadline (`wait_until`), logging a fresh user in on a lab server
(`logged_in`), syncing until a message arrives (`wait_for_message`) and counting messages by body.
Rules: every wait has a deadline and polls a condition (no fixed sleeps); each poll that syncs uses a
short long-poll so a new event wakes it at once; passwords are random and never printed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nimbus.client.client import Client
from nimbus.client.profile import Profile
from nimbus.client.room import Message
from nimbus.homeserver import Homeserver

POLL_INTERVAL = 0.05
SYNC_POLL_MS = 1000  # long-poll per round: returns at once when something new arrives


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Poll `predicate` (sync or async) until it is true; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


PASSPHRASE = "test store passphrase"
"""The store passphrase of every test profile (tests only; nimbus itself has no default)."""


async def logged_in(server: Homeserver, tmp_path: Path, name: str) -> Client:
    """Register `<name>-<random>` on `server` with a random password and log a client in for it.

    The client's profile lives in `tmp_path/profiles/<localpart>`; the caller closes the client.
    """
    localpart = f"{name.lower()}-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    user = await asyncio.to_thread(server.create_user, localpart, password)
    profile = Profile(tmp_path / "profiles" / localpart)
    return await Client.login(
        profile, server.client_url, user.user_id, password, passphrase=PASSPHRASE, device_name=name
    )


async def messages_with_body(client: Client, room_id: str, body: str) -> list[Message]:
    """The messages with this body in the client's stored timeline of the room (no network)."""
    room = await client.room(room_id, limit=500)
    return [m for m in room.timeline if m.type == "m.room.message" and m.body == body]


async def wait_for_message(client: Client, room_id: str, body: str, timeout: float = 30.0) -> Message:
    """Sync `client` until a message with `body` is in the room's timeline; return it."""
    found: list[Message] = []

    async def arrived() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        if room_id not in await client.room_ids():
            return False
        found[:] = await messages_with_body(client, room_id, body)
        return bool(found)

    await wait_until(arrived, timeout, f"{client.user_id} to receive a message in {room_id}")
    return found[0]


async def wait_for_invite(client: Client, room_id: str, timeout: float = 30.0) -> None:
    """Sync `client` until it is invited to `room_id`."""

    async def invited() -> bool:
        await client.sync_once(0)
        return room_id in await client.room_ids("invite")

    await wait_until(invited, timeout, f"{client.user_id}'s invite to {room_id}")


async def send_and_flush(client: Client, room_id: str, body: str, timeout: float = 30.0) -> str:
    """Send a text and deliver the outbox; returns the event id the server gave it."""
    entry = await client.send_text(room_id, body)
    result = await client.flush_outbox(timeout=timeout)
    assert not result.pending and not result.failed, f"not delivered: {result.last_error}"
    sent = [e for e in result.sent if e.txn_id == entry.txn_id]
    assert sent and sent[0].event_id, "the outbox did not report the event id"
    return str(sent[0].event_id)
