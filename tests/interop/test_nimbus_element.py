"""nimbus opposite Element's crypto (matrix-js-sdk 43 + matrix-sdk-crypto-wasm in Node 22) on real Synapse.

Issue 3, "Interop": messages both ways in an encrypted room on one server and across a two-server
federation (either side creating the room); a room of several nimbus and js devices where a member
leaves, after which the next Megolm session is one the leaver never received while everyone else
decrypts it (once with a nimbus sender and a js leaver, once with a js sender and a nimbus leaver of
two devices); an encrypted attachment sent by each side opening on the other.
Every wait is on a condition with a deadline (device lists, invites, memberships, messages).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from nimbus.client.client import Client
from nimbus.homeserver import Homeserver, Lab
from tests.fixtures_synapse import NewUser
from tests.interop.conftest import JsPeerFactory
from tests.interop.jspeer import JsPeer
from tests.interop.nimbus_side import (
    NimbusUser,
    inbound_session_ids,
    join_when_invited,
    new_client,
    send_and_flush,
    send_file,
    wait_devices,
    wait_event,
    wait_membership,
    wire_session_id,
)

pytestmark = [pytest.mark.integration, pytest.mark.interop]

MEGOLM = "m.megolm.v1.aes-sha2"


async def js_peer(factory: JsPeerFactory, server: Homeserver, new_user: NewUser, name: str) -> JsPeer:
    """A js user with a cross-signing identity (as Element sets one up for every account): nimbus's
    default sharing mode (cross_signed) shares only with devices their owner signed."""
    user_id, password = await asyncio.to_thread(new_user, server, name)
    peer = await factory(name)
    await peer.login(server.client_url, user_id, password)
    await peer.bootstrap_cross_signing(password)
    return peer


async def shared_room(nimbus: Client, js: JsPeer, creator: str) -> str:
    """An encrypted room holding both, created by `creator` ("nimbus" or "js"); both see the other join."""
    assert js.user_id is not None
    if creator == "nimbus":
        room_id = str(await nimbus.create_room(name="interop", invite=[js.user_id]))
        await js.join(room_id)
    else:
        room_id = await js.create_room(invite=[nimbus.user_id], name="interop")
        await join_when_invited(nimbus, room_id)
    await wait_membership(nimbus, room_id, js.user_id)
    await js.wait_for_member(room_id, nimbus.user_id)
    return room_id


async def nimbus_to_js(nimbus: Client, js: JsPeer, room_id: str) -> str:
    """nimbus sends a fresh text; js decrypts it, naming nimbus's device; returns the session id."""
    assert js.user_id is not None
    await wait_devices(nimbus, js.user_id, [str(js.device_id)])
    body = f"nimbus->js {secrets.token_hex(4)}"
    event_id = await send_and_flush(nimbus, room_id, body)
    got = await js.wait_for_message(room_id, body=body, sender=nimbus.user_id)
    assert got["event_id"] == event_id
    assert got["wire_type"] == "m.room.encrypted" and got["algorithm"] == MEGOLM
    assert got["encrypted"] and got["decrypted"], got["decryption_failure"]
    assert got["content"] == {"msgtype": "m.text", "body": body}
    assert got["sender_device"] == nimbus.device_id
    nimbus_keys = (await nimbus.device_keys(nimbus.user_id))[nimbus.device_id]
    assert got["sender_key"] == nimbus_keys["curve25519"]
    assert got["claimed_ed25519"] == nimbus_keys["ed25519"]
    assert got["session_id"] == await wire_session_id(nimbus, room_id, event_id)
    return str(got["session_id"])


async def js_to_nimbus(js: JsPeer, nimbus: Client, room_id: str) -> str:
    """js sends a fresh text; nimbus decrypts it, naming js's device; returns the session id."""
    await js.wait_for_devices(nimbus.user_id, device_ids=[nimbus.device_id])
    body = f"js->nimbus {secrets.token_hex(4)}"
    event_id = await js.send_text(room_id, body)
    message = await wait_event(nimbus, room_id, event_id)
    assert message.e2ee is not None and message.e2ee["decrypted"], message.e2ee
    assert message.e2ee["sender_device"] == js.device_id
    assert message.body == body and message.sender == js.user_id and message.type == "m.room.message"
    session_id = await wire_session_id(nimbus, room_id, event_id)
    assert session_id == await js.session_id_of(room_id, event_id)
    return session_id


async def exchange_both_ways(nimbus: Client, js: JsPeer, creator: str) -> None:
    room_id = await shared_room(nimbus, js, creator)
    await nimbus_to_js(nimbus, js, room_id)
    await js_to_nimbus(js, nimbus, room_id)
    # A second round on the same sessions: both sides keep decrypting (ratchet indexes advance).
    await nimbus_to_js(nimbus, js, room_id)
    await js_to_nimbus(js, nimbus, room_id)
    failures = [e for e in await js.messages(room_id) if e["decryption_failure"]]
    assert failures == []


@pytest.mark.parametrize("creator", ["nimbus", "js"])
async def test_messages_both_ways_on_one_server(
    creator: str, jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    nimbus = await new_client(homeserver, tmp_path, "nim")
    try:
        js = await js_peer(jspeer_factory, homeserver, new_user, "js")
        await exchange_both_ways(nimbus, js, creator)
    finally:
        await nimbus.close()


@pytest.mark.parametrize("creator", ["nimbus", "js"])
async def test_messages_both_ways_across_federation(
    creator: str, jspeer_factory: JsPeerFactory, lab2: Lab, new_user: NewUser, tmp_path: Path
) -> None:
    nimbus = await new_client(lab2.servers[0], tmp_path, "nim")
    try:
        js = await js_peer(jspeer_factory, lab2.servers[1], new_user, "js")
        assert nimbus.user_id.split(":", 1)[1] != str(js.user_id).split(":", 1)[1]
        await exchange_both_ways(nimbus, js, creator)
    finally:
        await nimbus.close()


def js_room_key_sessions(peer: JsPeer, room_id: str) -> set[str]:
    """Session ids of every m.room_key for the room that reached this js device over to-device."""
    return {
        str(e["content"].get("session_id"))
        for e in peer.events
        if e["event"] == "to_device" and e["type"] == "m.room_key" and e["content"].get("room_id") == room_id
    }


async def test_member_leave_rotates_the_session_for_everyone_else(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    """nimbus alice, nimbus bob on two devices, js carol and js dave share a room.

    Phase 1: alice (nimbus) sends; dave (js) leaves; alice's next session is new, dave never got it
    (not among the m.room_key session ids pushed to dave), carol, bob and bob's second device decrypt.
    Phase 2: carol (js) sends; bob (nimbus, both devices) leaves; carol's next session is new, neither
    bob device holds an inbound session for it, alice decrypts it.
    """
    alice = await new_client(homeserver, tmp_path, "alice")
    bob_user = await NimbusUser.register(homeserver, tmp_path, "bob")
    bobs: list[Client] = []
    try:
        bobs.append(await bob_user.device("one"))
        bobs.append(await bob_user.device("two"))
        await bobs[0].sign_own_device(bobs[1].device_id)  # bob vouches for his second device
        carol = await js_peer(jspeer_factory, homeserver, new_user, "carol")
        dave = await js_peer(jspeer_factory, homeserver, new_user, "dave")
        assert carol.user_id is not None and dave.user_id is not None
        nimbus_clients = [alice, *bobs]
        js_peers = [carol, dave]

        room_id = str(
            await alice.create_room(name="leave", invite=[bob_user.user_id, carol.user_id, dave.user_id])
        )
        await asyncio.gather(join_when_invited(bobs[0], room_id), carol.join(room_id), dave.join(room_id))
        for member in (bob_user.user_id, carol.user_id, dave.user_id):
            await wait_membership(alice, room_id, member)
        for client in bobs:
            await join_or_sync(client, room_id)
        for peer in js_peers:
            for member in (alice.user_id, bob_user.user_id, carol.user_id, dave.user_id):
                await peer.wait_for_member(room_id, member)
        # Every device knows every other device before anything is encrypted.
        bob_devices = [str(b.device_id) for b in bobs]
        await wait_devices(alice, bob_user.user_id, bob_devices)
        for peer in js_peers:
            await wait_devices(alice, str(peer.user_id), [str(peer.device_id)])
            await peer.wait_for_devices(bob_user.user_id, count=2, device_ids=bob_devices)
            await peer.wait_for_devices(alice.user_id, device_ids=[alice.device_id])
            for other in js_peers:
                await peer.wait_for_devices(str(other.user_id), device_ids=[str(other.device_id)])

        # ---- phase 1: nimbus sender, js leaver --------------------------------------------------
        before = f"before dave leaves {secrets.token_hex(4)}"
        before_id = await send_and_flush(alice, room_id, before)
        before_session = await wire_session_id(alice, room_id, before_id)
        for peer in js_peers:
            got = await peer.wait_for_message(room_id, body=before, sender=alice.user_id)
            assert got["decrypted"] and got["session_id"] == before_session, got
        for client in bobs:
            assert (await wait_event(client, room_id, before_id)).body == before
        assert before_session in js_room_key_sessions(dave, room_id)  # the check below can fail

        await dave.leave(room_id)
        await wait_membership(alice, room_id, dave.user_id, "leave")
        after = f"after dave left {secrets.token_hex(4)}"
        after_id = await send_and_flush(alice, room_id, after)
        got = await carol.wait_for_message(room_id, body=after, sender=alice.user_id)
        after_session = str(got["session_id"])  # fetched through another member (carol, js)
        assert got["decrypted"] and got["content"]["body"] == after, got
        assert after_session == await wire_session_id(alice, room_id, after_id)
        assert after_session != before_session
        for client in bobs:
            message = await wait_event(client, room_id, after_id)
            assert message.body == after and message.e2ee is not None and message.e2ee["decrypted"]
        # Fence: to-device messages reach a device in order, so once carol's nonce reached dave, any
        # room key alice sent dave before would have too.
        nonce = secrets.token_hex(8)
        await carol.send_to_device("org.nimbus.fence", [(dave.user_id, str(dave.device_id))], {"n": nonce})
        await dave.wait_event(lambda e: e["event"] == "to_device" and e["content"].get("n") == nonce)
        assert after_session not in js_room_key_sessions(dave, room_id)

        # ---- phase 2: js sender, nimbus leaver (two devices) ----------------------------------------
        before = f"before bob leaves {secrets.token_hex(4)}"
        before_id = await carol.send_text(room_id, before)
        before_session = str(await carol.session_id_of(room_id, before_id))
        for client in nimbus_clients:
            message = await wait_event(client, room_id, before_id)
            assert message.body == before and message.e2ee is not None
            assert message.e2ee["sender_device"] == carol.device_id
        for client in bobs:  # the check below can fail: bob's devices hold the session before the leave
            assert before_session in await inbound_session_ids(client, room_id)

        await bobs[0].leave(room_id)
        await carol.wait_for_member(room_id, bob_user.user_id, membership="leave")
        after = f"after bob left {secrets.token_hex(4)}"
        after_id = await carol.send_text(room_id, after)
        message = await wait_event(alice, room_id, after_id)
        assert message.body == after and message.e2ee is not None and message.e2ee["decrypted"]
        after_session = await wire_session_id(alice, room_id, after_id)  # through alice (nimbus)
        assert after_session == await carol.session_id_of(room_id, after_id)
        assert after_session != before_session
        for client in bobs:
            await client.sync_once(0)  # picks up every to-device message sent before this request
            await client.sync_once(0)
            held = await inbound_session_ids(client, room_id)
            assert before_session in held and after_session not in held
    finally:
        for client in (alice, *bobs):
            await client.close()


async def join_or_sync(client: Client, room_id: str) -> None:
    """Sync until this device sees its user joined (the user joined from another device)."""
    await wait_membership(client, room_id, client.user_id)


async def test_attachment_sent_by_each_side_opens_on_the_other(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    nimbus = await new_client(homeserver, tmp_path, "nim")
    try:
        js = await js_peer(jspeer_factory, homeserver, new_user, "js")
        assert js.user_id is not None
        room_id = await shared_room(nimbus, js, "nimbus")
        await wait_devices(nimbus, js.user_id, [str(js.device_id)])
        await js.wait_for_devices(nimbus.user_id, device_ids=[nimbus.device_id])

        data = os.urandom(120_000)
        event_id = await send_file(nimbus, room_id, data, "from-nimbus.bin", "application/octet-stream")
        got = await js.wait_for_message(room_id, body="from-nimbus.bin", sender=nimbus.user_id)
        assert got["event_id"] == event_id and got["decrypted"], got
        assert got["content"]["file"]["v"] == "v2" and "url" not in got["content"]
        assert await js.download_attachment(room_id, event_id) == data
        stored = await js.download_attachment(room_id, event_id, raw=True)
        assert len(stored) == len(data) and stored != data  # the server holds only ciphertext

        data = os.urandom(90_000)
        event_id = await js.send_attachment(room_id, data, "from-js.bin")
        message = await wait_event(nimbus, room_id, event_id)
        assert message.e2ee is not None and message.e2ee["decrypted"] and message.body == "from-js.bin"
        assert await nimbus.download(room_id, event_id) == (data, "from-js.bin")
    finally:
        await nimbus.close()
