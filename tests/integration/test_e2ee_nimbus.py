"""nimbus <-> nimbus end-to-end encryption against a real Synapse (CLI subprocesses and in-process clients).

Shows: messages decrypt both ways and `history --json` says so (with the sending device); `devices`
lists your own and another user's device keys; a second device of a user that logs in later gets the
keys of new messages; a member leaving rotates the session (the leaver never holds the new one, the
others decrypt it); an encrypted attachment round-trips while the media repository holds only
ciphertext; a tampered ciphertext shows as undecryptable with a cause and the sync loop goes on.
Every wait polls a condition with a deadline (no fixed sleeps).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimbus.api.media import DOWNLOAD_PREFIX, parse_mxc
from nimbus.api.request import quote
from nimbus.client.client import Client
from nimbus.client.profile import Profile as ClientProfile
from nimbus.crypto import records
from nimbus.homeserver import Homeserver
from nimbus.types.ids import RoomId
from tests.integration.cli import NewUser, Result, login, nimbus
from tests.integration.helpers import (
    PASSPHRASE,
    SYNC_POLL_MS,
    logged_in,
    send_and_flush,
    wait_for_invite,
    wait_for_message,
    wait_until,
)

pytestmark = pytest.mark.integration

Profile = tuple[Path, str]  # (profile dir, user id)


def cli_user(server: Homeserver, new_user: NewUser, tmp_path: Path, name: str) -> tuple[Profile, str]:
    user_id, password = new_user(server, name)
    profile = tmp_path / f"{name}-{secrets.token_hex(3)}"
    login(profile, server.client_url, user_id, password)
    return (profile, user_id), password


def ok(result: Result) -> list[dict[str, Any]]:
    assert result.code == 0, result.stderr
    return result.objects


def device_id(profile: Path) -> str:
    return str(ok(nimbus(profile, "whoami", "--json"))[0]["device_id"])


def encrypted_room(alice: Profile, *others: Profile) -> str:
    created = ok(
        nimbus(alice[0], "create-room", "--name", "e2ee", *(f"--invite={o[1]}" for o in others), "--json")
    )
    room_id = str(created[0]["room_id"])
    for other in others:
        ok(nimbus(other[0], "join", room_id, "--json"))
    return room_id


def poll_history(
    profile: Path, room_id: str, found: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """`nimbus history --json` until `found(messages)` holds (each run syncs first)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = ok(nimbus(profile, "history", room_id, "--limit", "50", "--json"))
        if found(messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"history never satisfied the condition: {messages}")
        time.sleep(0.2)  # between polls of a condition, not a wait for something to happen


def by_body(messages: list[dict[str, Any]], body: str) -> dict[str, Any] | None:
    return next((m for m in messages if m["body"] == body), None)


def test_messages_decrypt_both_ways_and_devices_list_keys(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, _ = cli_user(homeserver, new_user, tmp_path, "alice")
    bob, _ = cli_user(homeserver, new_user, tmp_path, "bob")
    room_id = encrypted_room(alice, bob)
    ok(nimbus(alice[0], "send", room_id, "hello bob", "--json"))
    ok(nimbus(bob[0], "send", room_id, "hello alice", "--json"))
    alice_dev, bob_dev = device_id(alice[0]), device_id(bob[0])

    at_bob = poll_history(bob[0], room_id, lambda ms: by_body(ms, "hello bob") is not None)
    got = by_body(at_bob, "hello bob")
    assert got is not None and got["encrypted"] is True and got["decrypted"] is True
    assert got["sender"] == alice[1] and got["sender_device"] == alice_dev and got["cause"] is None
    at_alice = poll_history(alice[0], room_id, lambda ms: by_body(ms, "hello alice") is not None)
    got = by_body(at_alice, "hello alice")
    assert got is not None and got["decrypted"] is True and got["sender_device"] == bob_dev

    mine = ok(nimbus(alice[0], "devices", "--json"))
    (current,) = [d for d in mine if d["current"]]
    assert current["device_id"] == alice_dev and current["user_id"] == alice[1]
    assert len(current["ed25519"]) == 43 and len(current["curve25519"]) == 43  # unpadded base64
    bobs_own = {d["device_id"]: d for d in ok(nimbus(bob[0], "devices", "--json"))}
    seen = ok(nimbus(alice[0], "devices", "--user", bob[1], "--json"))
    assert [d["device_id"] for d in seen] == [bob_dev]
    assert seen[0]["user_id"] == bob[1]
    assert (seen[0]["ed25519"], seen[0]["curve25519"]) == (
        bobs_own[bob_dev]["ed25519"],
        bobs_own[bob_dev]["curve25519"],
    )


async def sync_until(client: Client, what: str, check: Callable[[], Any], timeout: float = 60) -> None:
    async def done() -> bool:
        await client.sync_once(SYNC_POLL_MS)
        return bool(await check())

    await wait_until(done, timeout, what)


async def shared_room(owner: Client, *others: Client) -> RoomId:
    room_id = await owner.create_room(name="e2ee", invite=[o.user_id for o in others])
    for other in others:
        await wait_for_invite(other, room_id)
        await other.join(room_id)
    for client in (owner, *others):

        async def all_joined(c: Client = client) -> bool:
            joined = [
                e
                for e in await c.store.state_events(room_id, "m.room.member")
                if e.content.get("membership") == "join"
            ]
            return len(joined) == 1 + len(others)

        await sync_until(client, f"{client.user_id} to see everyone joined", all_joined)
    return room_id


async def login_device(server: Homeserver, tmp_path: Path, user_id: str, password: str, name: str) -> Client:
    """A new device (own profile, own store) for an existing user."""
    profile = ClientProfile(tmp_path / "profiles" / f"{name}-{secrets.token_hex(3)}")
    return await Client.login(
        profile, server.client_url, user_id, password, passphrase=PASSPHRASE, device_name=name
    )


async def alice_and_bob(homeserver: Homeserver, tmp_path: Path) -> tuple[Client, Client, str]:
    """alice's device and bob's first device (which makes bob's identity); bob's password for more."""
    password = secrets.token_urlsafe(16)
    bob_id = (
        await asyncio.to_thread(homeserver.create_user, f"bob-{secrets.token_hex(4)}", password)
    ).user_id
    alice = await logged_in(homeserver, tmp_path, "alice")
    return alice, await login_device(homeserver, tmp_path, bob_id, password, "bob-laptop"), password


async def test_second_device_that_logs_in_later_gets_keys_for_new_messages(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    """A later device of bob is not cross-signed (bob made his identity on his first device; this
    device needs verification, a later feature). In the default cross_signed mode alice withholds the
    key from it (m.unverified, shown as the cause) while bob's signed device reads the message; once
    alice switches to legacy mode, the unsigned device gets the keys of new messages too."""
    alice, bob1, password = await alice_and_bob(homeserver, tmp_path)
    bob_id = bob1.user_id
    bob2: Client | None = None
    try:
        room_id = await shared_room(alice, bob1)
        await send_and_flush(alice, room_id, "before the second device")
        first = await wait_for_message(bob1, room_id, "before the second device")
        assert first.e2ee is not None and first.e2ee["decrypted"] is True

        bob2 = await login_device(homeserver, tmp_path, bob_id, password, "bob-phone")
        new_device = bob2.device_id
        assert not (await bob2.identity()).device_signed
        assert (await bob1.identity()).device_signed

        async def alice_knows_bob2() -> bool:
            return new_device in await alice.crypto.machine.devices(bob_id)

        await sync_until(alice, "alice to learn bob's new device", alice_knows_bob2)
        trust = {d.device_id: d.trust for d in await alice.user_devices(bob_id)}
        assert trust == {bob1.device_id: "pinned", new_device: "unsigned"}
        assert alice.sharing_mode == "cross_signed"
        withheld_id = await send_and_flush(alice, room_id, "after the second device")
        message = await wait_for_message(bob1, room_id, "after the second device")
        assert message.e2ee is not None and message.e2ee["decrypted"] is True
        assert message.e2ee["sender_device"] == alice.device_id and message.e2ee["trust"] == "pinned"
        hidden = await wait_e2ee(bob2, room_id, withheld_id, lambda e: e.get("cause") == "withheld")
        assert hidden["code"] == "m.unverified" and hidden["decrypted"] is False

        await alice.set_sharing_mode("legacy")
        await send_and_flush(alice, room_id, "in legacy mode")
        for device in (bob2, bob1):
            message = await wait_for_message(device, room_id, "in legacy mode")
            assert message.e2ee is not None and message.e2ee["decrypted"] is True
            assert message.e2ee["sender_device"] == alice.device_id
    finally:
        for c in (alice, bob1, bob2):
            if c is not None:
                await c.close()


async def test_a_new_signed_device_gets_history_keys_from_our_other_device(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    """Key requests and forwarding (spec: "Key requests", m.forwarded_room_key) on real Synapse: bob's
    later device, signed from his first one and trusting his identity, cannot read an older message,
    asks his own devices, gets the key forwarded over Olm by the first device and reads it, marked as
    forwarded (authenticity not guaranteed). The first device answers only because the new one is
    cross-signed: before that, the same request gets nothing."""
    alice, bob1, password = await alice_and_bob(homeserver, tmp_path)
    bob_id = bob1.user_id
    bob2: Client | None = None
    try:
        room_id = await shared_room(alice, bob1)
        old_id = await send_and_flush(alice, room_id, "before the phone existed")
        await wait_for_message(bob1, room_id, "before the phone existed")

        bob2 = await login_device(homeserver, tmp_path, bob_id, password, "bob-phone")
        await sync_until(bob2, "bob2 to join", lambda: _in_room(bob2, room_id))
        # unsigned: bob1 refuses the request bob2 makes for the old session
        missing = await wait_e2ee(bob2, room_id, old_id, lambda e: e.get("decrypted") is False)
        assert missing["cause"] in ("no_session", "unknown_index")
        await sync_until(bob1, "bob1 to refuse bob2's request", lambda: _refused(bob1))

        await bob1.sign_own_device(bob2.device_id)  # bob checked it is his phone
        master = (await bob2.user_identity(bob_id)).master_key
        assert master is not None
        assert (await bob2.verify_identity(bob_id, master)).verified  # compared on both screens
        assert (await bob2.identity()).device_signed

        # verifying our own identity on bob2 asked bob1 again; bob1 answers now
        async def answered() -> bool:
            await bob1.sync_once(SYNC_POLL_MS)
            info = await wait_e2ee_once(bob2, room_id, old_id)
            return bool(info and info.get("decrypted"))

        await wait_until(answered, 60, "bob2 to read the old message with a forwarded key")
        info = await wait_e2ee_once(bob2, room_id, old_id)
        assert info is not None and info["authentic"] is False and info["verified"] is False
        old = [m for m in (await bob2.room(room_id)).timeline if m.event_id == old_id]
        assert old[0].body == "before the phone existed"
    finally:
        for c in (alice, bob1, bob2):
            if c is not None:
                await c.close()


async def _in_room(client: Client, room_id: str) -> bool:
    return RoomId(room_id) in await client.room_ids("join")


async def _refused(client: Client) -> bool:
    return client.crypto.key_requests_refused > 0


async def wait_e2ee_once(client: Client, room_id: str, event_id: str) -> dict[str, Any] | None:
    await client.sync_once(0)
    room = await client.room(room_id, limit=200)
    found = [m.e2ee for m in room.timeline if m.event_id == event_id]
    return found[0] if found else None


async def wait_e2ee(
    client: Client, room_id: str, event_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Sync until the event's e2ee info satisfies `done`; return that info."""
    seen: list[dict[str, Any]] = []

    async def check() -> bool:
        room = await client.room(room_id, limit=200)
        seen[:] = [m.e2ee for m in room.timeline if m.event_id == event_id and m.e2ee is not None]
        return bool(seen) and done(seen[0])

    await sync_until(client, f"the e2ee state of {event_id}", check)
    return seen[0]


async def stored_event(client: Client, room_id: RoomId, event_id: str) -> Any:
    """The raw event as the client stored it from sync (for encrypted events: the wire content)."""
    found: list[Any] = []

    async def stored() -> bool:
        found[:] = [e for e in await client.store.timeline(room_id, limit=200) if e.event_id == event_id]
        return bool(found)

    await sync_until(client, f"{event_id} in {client.user_id}'s store", stored)
    return found[0]


async def test_leave_rotates_the_session_and_the_leaver_never_holds_the_new_one(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    alice = await logged_in(homeserver, tmp_path, "alice")
    bob = await logged_in(homeserver, tmp_path, "bob")
    carol = await logged_in(homeserver, tmp_path, "carol")
    try:
        room_id = await shared_room(alice, bob, carol)
        before_id = await send_and_flush(alice, room_id, "carol can read this")
        for reader in (bob, carol):
            got = await wait_for_message(reader, room_id, "carol can read this")
            assert got.e2ee is not None and got.e2ee["decrypted"] is True
        before = await stored_event(bob, room_id, before_id)

        await carol.leave(room_id)

        async def alice_saw_the_leave() -> bool:
            event = await alice.store.state_event(room_id, "m.room.member", carol.user_id)
            return event is not None and event.content.get("membership") == "leave"

        await sync_until(alice, "alice to see carol leave", alice_saw_the_leave)
        after_id = await send_and_flush(alice, room_id, "carol is gone")
        after = await stored_event(bob, room_id, after_id)
        assert after.type == before.type == "m.room.encrypted"
        assert after.content["session_id"] != before.content["session_id"]

        message = await wait_for_message(bob, room_id, "carol is gone")
        assert message.e2ee is not None and message.e2ee["decrypted"] is True

        # carol keeps syncing (to-device still reaches her): she never gets the new session
        await carol.sync_once(0)
        await carol.sync_once(0)
        assert (
            await carol.store.crypto_get(records.INBOUND, room_id, before.content["session_id"]) is not None
        )
        assert await carol.store.crypto_get(records.INBOUND, room_id, after.content["session_id"]) is None
    finally:
        for c in (alice, bob, carol):
            await c.close()


def test_encrypted_attachment_round_trips_and_the_server_holds_only_ciphertext(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice, _ = cli_user(homeserver, new_user, tmp_path, "alice")
    bob, _ = cli_user(homeserver, new_user, tmp_path, "bob")
    room_id = encrypted_room(alice, bob)
    plaintext = b"quarterly numbers: " + secrets.token_bytes(4096) + b" end of file"
    source = tmp_path / "report.bin"
    source.write_bytes(plaintext)
    sent = ok(nimbus(alice[0], "send-file", room_id, str(source), "--json"))
    event_id = str(sent[0]["event_id"])

    target = tmp_path / "downloaded.bin"
    got = ok(nimbus(bob[0], "download", room_id, event_id, "--out", str(target), "--json"))
    assert got[0]["bytes"] == len(plaintext) and got[0]["name"] == "report.bin"
    assert target.read_bytes() == plaintext

    mxc, token = asyncio.run(file_url_and_token(bob[0], room_id, event_id))
    server_name, media_id = parse_mxc(mxc)
    raw = httpx.get(
        f"{homeserver.client_url}{DOWNLOAD_PREFIX}/{quote(server_name)}/{quote(media_id)}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert raw.status_code == 200
    assert len(raw.content) == len(plaintext)  # AES-CTR: same length ...
    assert raw.content != plaintext and b"quarterly numbers" not in raw.content  # ... but not the bytes


async def file_url_and_token(profile: Path, room_id: str, event_id: str) -> tuple[str, str]:
    """The mxc URL inside the decrypted event's `file` object, and the device's access token."""
    client = await Client.open(ClientProfile(profile), passphrase=PASSPHRASE)
    try:
        room = await client.room(room_id, limit=100)
        (message,) = [m for m in room.timeline if m.event_id == event_id]
        assert message.e2ee is not None and message.e2ee["decrypted"] is True
        assert "url" not in message.content  # an encrypted attachment has only `file`
        return str(message.content["file"]["url"]), client.session.access_token
    finally:
        await client.close()


async def test_tampered_ciphertext_is_shown_with_a_cause_and_the_sync_loop_goes_on(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    alice = await logged_in(homeserver, tmp_path, "alice")
    bob = await logged_in(homeserver, tmp_path, "bob")
    stop = asyncio.Event()
    runner: asyncio.Future[None] | None = None
    try:
        room_id = await shared_room(alice, bob)
        good_id = await send_and_flush(alice, room_id, "the genuine one")
        await wait_for_message(bob, room_id, "the genuine one")
        wire = dict((await stored_event(alice, room_id, good_id)).content)
        ciphertext = str(wire["ciphertext"])
        middle = len(ciphertext) // 2
        wire["ciphertext"] = (
            ciphertext[:middle] + ("A" if ciphertext[middle] != "A" else "B") + ciphertext[middle + 1 :]
        )
        async with httpx.AsyncClient(base_url=homeserver.client_url, timeout=30) as http:
            put = await http.put(
                f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.encrypted/{secrets.token_hex(8)}",
                json=wire,
                headers={"Authorization": f"Bearer {alice.session.access_token}"},
            )
        assert put.status_code == 200, put.text
        tampered_id = put.json()["event_id"]

        runner = asyncio.ensure_future(bob.run(stop))  # the real sync loop, in the background
        await send_and_flush(alice, room_id, "after the tampered one")

        async def later_message_decrypted() -> bool:
            assert runner is not None and not runner.done(), "the sync loop ended"
            room = await bob.room(room_id, limit=100)
            later = [m for m in room.timeline if m.body == "after the tampered one"]
            return bool(later) and later[0].e2ee is not None and later[0].e2ee["decrypted"] is True

        await wait_until(later_message_decrypted, 60, "bob to decrypt the message after the tampered one")
        history = await bob.history(room_id, limit=50)
        (tampered,) = [m for m in history if m.event_id == tampered_id]
        assert tampered.e2ee is not None and tampered.e2ee["decrypted"] is False
        assert tampered.e2ee["cause"] == "bad_ciphertext"  # the Megolm signature/MAC check fails
        assert bob.sync.errors == 0
    finally:
        stop.set()
        if runner is not None:
            await asyncio.gather(runner, return_exceptions=True)
        for c in (alice, bob):
            await c.close()


async def test_server_gone_during_the_cross_signing_upload_login_succeeds_and_the_next_start_finishes(
    homeserver: Homeserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The homeserver goes away exactly when the new identity is uploaded: the login still succeeds
    (the keys are saved, nothing is lost), and the next start uploads the same identity."""
    from nimbus.api.errors import ServerUnreachable
    from nimbus.client.transport import Transport

    password = secrets.token_urlsafe(16)
    user_id = (
        await asyncio.to_thread(homeserver.create_user, f"carol-{secrets.token_hex(4)}", password)
    ).user_id
    real_send = Transport.send
    failed: list[str] = []

    async def flaky(self: Transport, request: Any) -> Any:
        if request.path.endswith("/keys/device_signing/upload") and not failed:
            failed.append(request.path)
            raise ServerUnreachable("the homeserver went away", request.path)
        return await real_send(self, request)

    monkeypatch.setattr(Transport, "send", flaky)
    profile = ClientProfile(tmp_path / "profiles" / "carol")
    client = await Client.login(profile, homeserver.client_url, user_id, password, passphrase=PASSPHRASE)
    try:
        assert failed  # the upload was attempted and lost
        assert (await client.identity()).master_key is None
        saved = await client.crypto.machine.own_cross_signing_keys()
        assert saved is not None  # the keys were saved before the upload
    finally:
        await client.close()
    client = await Client.open(profile, passphrase=PASSPHRASE)
    try:
        me = await client.identity()
        assert me.master_key == saved.master.public and me.device_signed and me.has_private_keys
    finally:
        await client.close()
