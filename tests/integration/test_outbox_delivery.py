"""Exactly-once delivery against a real Synapse: the server goes away, the client is SIGKILLed.

Three ways a message can sit between "accepted" and "delivered", each ending with the message in the
room exactly once:
1. the homeserver is stopped while messages are sent (in-process client);
2. the CLI process is SIGKILLed while it retries against a stopped server (accepted, never sent);
3. the CLI process is SIGKILLed after the server stored the event but before the answer reached it
   (a loopback TCP relay holds the answer back), so the restarted client re-sends the same txnId and
   the server's transaction-id idempotency must absorb it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimbus.client.client import Client
from nimbus.client.profile import Profile
from nimbus.homeserver import Homeserver
from tests.integration.cli import PASSPHRASE, command, env_with, login, nimbus
from tests.integration.relay import HoldingRelay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """A server of our own: these tests stop and start it."""
    hs = Homeserver.configure(tmp_path_factory.mktemp("outbox") / "hs")
    try:
        hs.launch()
        yield hs
    finally:
        hs.stop()


def wait_until(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pending_in(profile: Path) -> int:
    """Read the profile's outbox from a second connection, as a restarted process would."""
    with contextlib.closing(sqlite3.connect(f"file:{profile / 'store.db'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0])


def users_and_room(server: Homeserver, tmp_path: Path) -> tuple[Path, Path, str]:
    """alice (sender) and bob (reader), both logged in with the CLI, in one room."""
    profiles = []
    for name in ("alice", "bob"):
        user = server.create_user(f"{name}-{os.urandom(3).hex()}", password := os.urandom(8).hex())
        profile = tmp_path / name
        login(profile, server.client_url, user.user_id, password)
        profiles.append((profile, user.user_id))
    (alice, _), (bob, bob_id) = profiles
    room_id = nimbus(alice, "create-room", "--invite", bob_id, "--json").objects[0]["room_id"]
    assert nimbus(bob, "join", room_id).code == 0
    return alice, bob, room_id


def bodies_seen_by(profile: Path, room_id: str) -> list[str]:
    history = nimbus(profile, "history", room_id, "--limit", "50", "--json")
    assert history.code == 0, history.stderr
    return [m["body"] for m in history.objects if m["event_type"] == "m.room.message"]


def test_messages_sent_while_the_server_is_down_arrive_once(server: Homeserver, tmp_path: Path) -> None:
    alice, bob, room_id = users_and_room(server, tmp_path)

    async def scenario() -> None:
        client = await Client.open(Profile(alice), passphrase=PASSPHRASE)
        try:
            await client.sync_once(0)
            server.stop()
            for n in range(3):
                await client.send_text(room_id, f"during outage {n}")
            early = await client.flush_outbox(timeout=1.5)
            assert len(early.pending) == 3 and early.last_error == "ServerUnreachable"
            await asyncio.to_thread(server.launch)
            done = await client.flush_outbox(timeout=60)
            assert done.pending == [] and len(done.sent) == 3
        finally:
            await client.close()

    asyncio.run(scenario())
    assert bodies_seen_by(bob, room_id) == ["during outage 0", "during outage 1", "during outage 2"]


def test_cli_killed_before_delivery_delivers_once_after_restart(server: Homeserver, tmp_path: Path) -> None:
    alice, bob, room_id = users_and_room(server, tmp_path)
    server.stop()
    sender = subprocess.Popen(
        command(alice, "send", room_id, "survives SIGKILL", "--timeout", "120"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env_with(),
    )
    try:
        wait_until(lambda: pending_in(alice) == 1, "the message to be accepted into the outbox")
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert pending_in(alice) == 1
    server.launch()
    flushed = nimbus(alice, "outbox", "flush", "--json")
    assert flushed.code == 0, flushed.stderr
    assert len(flushed.objects) == 1
    assert nimbus(alice, "outbox", "flush", "--json").objects == []  # nothing left to send twice
    assert bodies_seen_by(bob, room_id).count("survives SIGKILL") == 1


def test_cli_killed_after_the_server_stored_the_message_does_not_duplicate_it(
    server: Homeserver, tmp_path: Path
) -> None:
    alice, bob, room_id = users_and_room(server, tmp_path)
    port = int(server.client_url.rsplit(":", 1)[1])
    relay = HoldingRelay(port, b"/send/m.room.encrypted/")  # rooms are end-to-end encrypted
    # Point alice's session at the relay: same server, same access token, same txn-id scope.
    with contextlib.closing(sqlite3.connect(alice / "store.db")) as db:
        db.execute("UPDATE session SET homeserver = ?", (f"http://127.0.0.1:{relay.port}",))
        db.commit()
    sender = subprocess.Popen(
        command(alice, "send", room_id, "answer lost", "--timeout", "120"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env_with(),
    )
    try:
        wait_until(relay.seen.is_set, "the PUT to reach the server")
        # The server has it (bob can read it) while the sender still waits for the answer.
        wait_until(lambda: "answer lost" in bodies_seen_by(bob, room_id), "bob to see the message", 60)
        assert pending_in(alice) == 1
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
    finally:
        if sender.poll() is None:
            sender.kill()
        relay.close()
    with contextlib.closing(sqlite3.connect(alice / "store.db")) as db:
        db.execute("UPDATE session SET homeserver = ?", (server.client_url,))
        db.commit()
    flushed = nimbus(alice, "outbox", "flush", "--json")
    assert flushed.code == 0, flushed.stderr
    assert len(flushed.objects) == 1  # re-sent with the same txnId...
    assert bodies_seen_by(bob, room_id).count("answer lost") == 1  # ...and absorbed by the server
