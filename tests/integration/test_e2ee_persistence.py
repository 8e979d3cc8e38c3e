"""E2EE persistence against real Synapse: the CLI is SIGKILLed mid-request; nothing is lost or reused.

Issue 3, "Persistence: nothing lost, nothing reused". A loopback relay (tests/integration/relay.py)
sits between the killed `nimbus` process and the server:
1. between encrypt and PUT: the message was sealed (ciphertext + ratchet advance saved) but its PUT
   never reached the server (the relay swallows it); after restart the sealed bytes go out, later
   messages are encrypted at later Megolm indexes: every message arrives once and decrypts, and no
   (session_id, message_index) pair appears twice among the ciphertexts the server holds;
2. after the PUT reached the server but before its answer: the restarted process resends the very
   same outbox row (same txn id, same ciphertext bytes) and the server's txn-id idempotency absorbs
   it: one event, whose ciphertext is the stored one;
3. between /keys/upload and its answer (fresh login): the restarted process re-uploads the same
   one-time keys (the server would refuse a known key id with other key material), the server's count
   is unchanged, and a message that another user encrypts to the device with a claimed key decrypts.
Rules: waits poll a condition with a deadline; processes are tracked by PID and killed by it; the
shared `homeserver` is never stopped (these tests only cut the path through their own relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import vodozemac

from nimbus.homeserver import Homeserver
from nimbus.store import OutboxEntry, Session, SqliteStore
from nimbus.types.ids import TxnId
from tests.integration.cli import PASSPHRASE, NewUser, command, env_with, login, nimbus
from tests.integration.relay import DROP_REQUEST, HOLD_ANSWER, WATCH, HoldingRelay

pytestmark = pytest.mark.integration

T = TypeVar("T")
SEND_MARKER = b"/send/m.room.encrypted/"  # room messages, not /sendToDevice/


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def with_store(profile: Path, use: Callable[[SqliteStore], Awaitable[T]]) -> T:
    """Read a profile's store through nimbus's own store code (a second reader is fine under WAL)."""

    async def go() -> T:
        store = await SqliteStore.open(profile / "store.db", passphrase=PASSPHRASE)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(go())


def session_of(profile: Path) -> Session:
    session = with_store(profile, lambda s: s.load_session())
    assert session is not None
    return session


def outbox_row(profile: Path, txn_id: str) -> OutboxEntry:
    entry = with_store(profile, lambda s: s.outbox_get(TxnId(txn_id)))
    assert entry is not None
    return entry


def outbox_rows(profile: Path) -> list[tuple[str, str, str]]:
    """(txn_id, event_type, state) of every outbox row, oldest first (plain columns, raw SQLite)."""
    with contextlib.closing(sqlite3.connect(f"file:{profile / 'store.db'}?mode=ro", uri=True)) as db:
        return [
            (str(t), str(e), str(s))
            for t, e, s in db.execute("SELECT txn_id, event_type, state FROM outbox ORDER BY seq")
        ]


def point_at(profile: Path, base_url: str) -> None:
    """Route the profile's session (same token, same txn-id scope) through `base_url`."""
    with contextlib.closing(sqlite3.connect(profile / "store.db")) as db:
        db.execute("UPDATE session SET homeserver = ?", (base_url,))
        db.commit()


def server_port(server: Homeserver) -> int:
    return int(server.client_url.rsplit(":", 1)[1])


def api(server: Homeserver, token: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(
        method,
        f"{server.client_url}/_matrix/client/v3{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,
    )
    assert response.status_code == 200, response.text
    return response.json()


def wire_events(server: Homeserver, token: str, room_id: str) -> list[dict[str, Any]]:
    """The room's m.room.encrypted events exactly as the server holds them (GET /messages)."""
    page = api(
        server, token, "GET", f"/rooms/{quote(room_id, safe='')}/messages", params={"dir": "b", "limit": 200}
    )
    return [e for e in reversed(page["chunk"]) if e["type"] == "m.room.encrypted"]


def megolm_index(content: dict[str, Any]) -> tuple[str, int]:
    message = vodozemac.MegolmMessage.from_base64(content["ciphertext"])
    return str(content["session_id"]), int(message.message_index())


def assert_no_index_reused(events: list[dict[str, Any]]) -> None:
    pairs = [megolm_index(e["content"]) for e in events]
    assert len(pairs) == len(set(pairs)), f"a Megolm (session, index) was used twice: {pairs}"


def received(profile: Path, room_id: str) -> list[dict[str, Any]]:
    """What the other member reads (its own sync + decryption): one JSON object per message."""
    history = nimbus(profile, "history", room_id, "--limit", "50", "--json")
    assert history.code == 0, history.stderr
    return history.objects


def assert_each_once_and_decrypted(profile: Path, room_id: str, bodies: list[str]) -> None:
    messages = received(profile, room_id)
    undecrypted = [m for m in messages if m["encrypted"] and not m["decrypted"]]
    assert undecrypted == [], f"not decrypted: {[m.get('cause') for m in undecrypted]}"
    seen = [m["body"] for m in messages if m["event_type"] == "m.room.message"]
    assert seen == bodies, seen  # each exactly once, in order
    assert all(m["encrypted"] for m in messages if m["body"] in bodies)


def two_users_in_a_room(server: Homeserver, new_user: NewUser, tmp_path: Path) -> tuple[Path, Path, str]:
    """alice (sender) and bob (reader), logged in with the CLI, in one encrypted room."""
    (alice_id, alice_pw), (bob_id, bob_pw) = new_user(server, "alice"), new_user(server, "bob")
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    login(alice, server.client_url, alice_id, alice_pw)
    login(bob, server.client_url, bob_id, bob_pw)
    room_id = nimbus(alice, "create-room", "--invite", bob_id, "--json").objects[0]["room_id"]
    assert nimbus(bob, "join", room_id).code == 0
    return alice, bob, room_id


def sigkill(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_between_encrypt_and_put_no_index_reused_each_message_once(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, bob, room_id = two_users_in_a_room(homeserver, new_user, tmp_path)
    relay = HoldingRelay(server_port(homeserver), SEND_MARKER, DROP_REQUEST)
    point_at(alice, relay.url)
    sender = subprocess.Popen(
        command(alice, "send", room_id, "--lines", "--timeout", "120"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env_with(),
        text=True,
    )
    try:
        assert sender.stdin is not None
        sender.stdin.write("first, sealed then killed\nsecond\nthird\n")
        sender.stdin.close()
        wait_until(relay.seen.is_set, "the first PUT to leave the process (and be swallowed)")
        # Sealed before its PUT: the first row holds the ciphertext (later rows may be sealed already,
        # at accept time, or still be plaintext to be sealed right before their own first PUT).
        wait_until(lambda: [r[1] for r in outbox_rows(alice)][:1] == ["m.room.encrypted"], "the seal")
        assert sender.poll() is None, "the sender should still be waiting for its PUT"
        sigkill(sender)
    finally:
        if sender.poll() is None:
            sender.kill()
        relay.close()
    rows = outbox_rows(alice)
    assert len(rows) == 3 and all(state == "pending" for _, _, state in rows)
    assert rows[0][1] == "m.room.encrypted"
    sealed = {txn: outbox_row(alice, txn).content for txn, etype, _ in rows if etype == "m.room.encrypted"}
    bob_token = session_of(bob).access_token
    assert wire_events(homeserver, bob_token, room_id) == []  # the server never got the PUT

    point_at(alice, homeserver.client_url)
    flushed = nimbus(alice, "outbox", "flush", "--json")
    assert flushed.code == 0, flushed.stderr
    assert [o["txn_id"] for o in flushed.objects] == [r[0] for r in rows]
    assert nimbus(alice, "send", room_id, "after restart").code == 0

    events = wire_events(homeserver, bob_token, room_id)
    assert len(events) == 4
    by_id = {e["event_id"]: e for e in events}
    for txn_id, content in sealed.items():  # sealed before the kill: those bytes went out, unchanged
        row = outbox_row(alice, txn_id)
        assert row.state == "sent" and row.content == content
        assert by_id[row.event_id]["content"]["ciphertext"] == content["ciphertext"]
    assert_no_index_reused(events)
    assert_each_once_and_decrypted(
        bob, room_id, ["first, sealed then killed", "second", "third", "after restart"]
    )


def test_killed_after_the_put_reached_the_server_resends_the_same_bytes_once(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, bob, room_id = two_users_in_a_room(homeserver, new_user, tmp_path)
    bob_token = session_of(bob).access_token
    relay = HoldingRelay(server_port(homeserver), SEND_MARKER, HOLD_ANSWER)
    point_at(alice, relay.url)
    sender = subprocess.Popen(
        command(alice, "send", room_id, "answer lost", "--timeout", "120"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env_with(),
    )
    try:
        wait_until(relay.seen.is_set, "the PUT to reach the server")
        wait_until(lambda: len(wire_events(homeserver, bob_token, room_id)) == 1, "the server to store it")
        assert sender.poll() is None, "the sender should still be waiting for the answer"
        (txn_id, event_type, state) = outbox_rows(alice)[0]
        assert (event_type, state) == ("m.room.encrypted", "pending")
        before = outbox_row(alice, txn_id)
        sigkill(sender)
    finally:
        if sender.poll() is None:
            sender.kill()
        relay.close()
    (stored_event,) = wire_events(homeserver, bob_token, room_id)
    assert stored_event["content"]["ciphertext"] == before.content["ciphertext"]

    point_at(alice, homeserver.client_url)
    flushed = nimbus(alice, "outbox", "flush", "--json")
    assert flushed.code == 0, flushed.stderr
    assert [(o["txn_id"], o["event_id"]) for o in flushed.objects] == [(txn_id, stored_event["event_id"])]
    after = outbox_row(alice, txn_id)
    assert after.state == "sent" and after.event_id == stored_event["event_id"]
    assert (after.event_type, after.content) == (before.event_type, before.content)  # same bytes resent
    assert nimbus(alice, "send", room_id, "next one").code == 0

    events = wire_events(homeserver, bob_token, room_id)
    assert len(events) == 2  # the resend was absorbed by txn-id idempotency
    assert_no_index_reused(events)
    assert_each_once_and_decrypted(bob, room_id, ["answer lost", "next one"])


def otk_count(server: Homeserver, token: str) -> int:
    """The server's count of the device's unclaimed one-time keys (an empty POST /keys/upload)."""
    counts = api(server, token, "POST", "/keys/upload", json={})["one_time_key_counts"]
    return int(counts.get("signed_curve25519", 0))


def test_killed_between_keys_upload_and_its_answer_no_one_time_key_collides(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    (alice_id, alice_pw), (bob_id, bob_pw) = new_user(homeserver, "alice"), new_user(homeserver, "bob")
    bob = tmp_path / "bob"
    login(bob, homeserver.client_url, bob_id, bob_pw)
    bob_token = session_of(bob).access_token
    alice = tmp_path / "alice"
    relay = HoldingRelay(server_port(homeserver), b"/keys/upload", HOLD_ANSWER)
    login_proc = subprocess.Popen(
        command(alice, "login", relay.url, alice_id, "--password-env", "NIMBUS_TEST_PASSWORD", "--json"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env_with(NIMBUS_TEST_PASSWORD=alice_pw),
    )

    def published_devices() -> dict[str, Any]:
        answer = api(homeserver, bob_token, "POST", "/keys/query", json={"device_keys": {alice_id: []}})
        return dict(answer["device_keys"].get(alice_id, {}))

    try:
        wait_until(relay.seen.is_set, "the first /keys/upload to be sent")
        wait_until(lambda: bool(published_devices()), "the server to store the uploaded device keys")
        assert login_proc.poll() is None, "login should still be waiting for the upload's answer"
        sigkill(login_proc)
    finally:
        if login_proc.poll() is None:
            login_proc.kill()
        relay.close()
    session = session_of(alice)
    assert list(published_devices()) == [session.device_id]
    on_server = otk_count(homeserver, session.access_token)
    assert on_server > 0  # the first upload's one-time keys are on the server, unanswered

    watch = HoldingRelay(server_port(homeserver), b"/keys/upload", WATCH)
    try:
        point_at(alice, watch.url)
        restarted = nimbus(alice, "rooms", "--json")
        assert restarted.code == 0, restarted.stderr  # a colliding key id would be refused (400)
        assert watch.seen.is_set()  # the restarted process did upload (the same keys) again
    finally:
        watch.close()
    point_at(alice, homeserver.client_url)
    assert otk_count(homeserver, session.access_token) == on_server  # no new ids, none lost
    keys = published_devices()[session.device_id]["keys"]
    assert (keys[f"curve25519:{session.device_id}"], keys[f"ed25519:{session.device_id}"]) == tuple(
        nimbus(alice, "devices", "--user", alice_id, "--json").objects[0][k]
        for k in ("curve25519", "ed25519")
    )

    # A message to the device: bob claims one of its one-time keys and encrypts to it.
    room_id = nimbus(bob, "create-room", "--invite", alice_id, "--json").objects[0]["room_id"]
    assert nimbus(alice, "join", room_id).code == 0
    assert nimbus(bob, "send", room_id, "to the restarted device").code == 0
    assert otk_count(homeserver, session.access_token) == on_server - 1  # bob's Olm session used one
    assert_each_once_and_decrypted(alice, room_id, ["to the restarted device"])
