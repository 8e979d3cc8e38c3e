"""The interop harness itself: two Element-crypto peers (matrix-js-sdk 43, Rust crypto) against real Synapse.

Proves the harness and Element's crypto work on this machine before nimbus is put opposite them:
encrypted messages both ways on one server and across a two-server federation, and an encrypted (v2)
attachment sent by one peer opening on the other. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import time

import pytest

from nimbus.homeserver import Homeserver, Lab
from tests.fixtures_synapse import NewUser
from tests.interop.conftest import JsPeerFactory
from tests.interop.jspeer import JsPeer, JsPeerError

pytestmark = [pytest.mark.integration, pytest.mark.interop]

MEGOLM = "m.megolm.v1.aes-sha2"


async def logged_in_peer(factory: JsPeerFactory, server: Homeserver, new_user: NewUser, name: str) -> JsPeer:
    user_id, password = await asyncio.to_thread(new_user, server, name)
    peer = await factory(name)
    await peer.login(server.client_url, user_id, password)
    return peer


async def shared_encrypted_room(a: JsPeer, b: JsPeer) -> str:
    """`a` creates an encrypted room and invites `b`; returns once `a` sees `b` joined."""
    assert b.user_id is not None
    room_id = await a.create_room(invite=[b.user_id], name="interop")
    await b.join(room_id)
    await a.wait_for_member(room_id, b.user_id)
    return room_id


async def assert_delivered_encrypted(sender: JsPeer, receiver: JsPeer, room_id: str) -> None:
    """`sender` sends a fresh text; `receiver` decrypts it and sees the sender's device and session."""
    assert sender.user_id is not None and receiver.user_id is not None
    await sender.wait_for_devices(receiver.user_id, device_ids=[str(receiver.device_id)])
    body = f"interop {sender.name}->{receiver.name} {secrets.token_hex(4)}"
    event_id = await sender.send_text(room_id, body)
    got = await receiver.wait_for_message(room_id, body=body, sender=sender.user_id)
    assert got["event_id"] == event_id
    assert got["wire_type"] == "m.room.encrypted"
    assert got["encrypted"] and got["decrypted"], got["decryption_failure"]
    assert got["algorithm"] == MEGOLM
    assert got["content"] == {"msgtype": "m.text", "body": body}
    sender_keys = {d["deviceId"]: d for d in await receiver.device_keys(sender.user_id)}
    assert got["sender_device"] == sender.device_id
    assert got["sender_key"] == sender_keys[str(sender.device_id)]["curve25519"]
    # The sender's own copy names the same Megolm session.
    assert got["session_id"] and got["session_id"] == await sender.session_id_of(room_id, event_id)


async def test_two_js_peers_exchange_encrypted_messages(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser
) -> None:
    alice = await logged_in_peer(jspeer_factory, homeserver, new_user, "alice")
    bob = await logged_in_peer(jspeer_factory, homeserver, new_user, "bob")
    room_id = await shared_encrypted_room(alice, bob)
    await assert_delivered_encrypted(alice, bob, room_id)
    await assert_delivered_encrypted(bob, alice, room_id)
    # Nothing the peers see in the room failed to decrypt.
    for peer in (alice, bob):
        failures = [e for e in await peer.messages(room_id) if e["decryption_failure"]]
        assert failures == []
    # Olm-encrypted to-device messages reach the other device, naming the sending device.
    assert bob.user_id is not None and alice.user_id is not None
    nonce = secrets.token_hex(8)
    sent = await alice.send_to_device(
        "org.nimbus.test", [(bob.user_id, str(bob.device_id))], {"nonce": nonce}
    )
    assert sent == 1
    got = await bob.wait_event(lambda e: e["event"] == "to_device" and e["content"].get("nonce") == nonce)
    assert got["type"] == "org.nimbus.test" and got["sender"] == alice.user_id
    assert got["encrypted"] and got["sender_device"] == alice.device_id
    # The room keys bob received are reported, but never with their key material.
    room_keys = [e for e in bob.events if e["event"] == "to_device" and e["type"] == "m.room_key"]
    assert room_keys and all(e["content"]["session_key"] == "<redacted>" for e in room_keys)


async def test_two_js_peers_across_federation(
    jspeer_factory: JsPeerFactory, lab2: Lab, new_user: NewUser
) -> None:
    alice = await logged_in_peer(jspeer_factory, lab2.servers[0], new_user, "alice")
    bob = await logged_in_peer(jspeer_factory, lab2.servers[1], new_user, "bob")
    assert alice.user_id is not None and bob.user_id is not None
    assert alice.user_id.split(":", 1)[1] != bob.user_id.split(":", 1)[1]
    room_id = await shared_encrypted_room(alice, bob)
    await assert_delivered_encrypted(alice, bob, room_id)
    await assert_delivered_encrypted(bob, alice, room_id)


async def test_encrypted_attachment_opens_on_the_other_peer(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser
) -> None:
    alice = await logged_in_peer(jspeer_factory, homeserver, new_user, "alice")
    bob = await logged_in_peer(jspeer_factory, homeserver, new_user, "bob")
    room_id = await shared_encrypted_room(alice, bob)
    assert bob.user_id is not None and alice.user_id is not None
    await alice.wait_for_devices(bob.user_id, device_ids=[str(bob.device_id)])
    data = os.urandom(150_000)
    event_id = await alice.send_attachment(room_id, data, "blob.bin")
    got = await bob.wait_for_message(room_id, body="blob.bin", sender=alice.user_id)
    assert got["event_id"] == event_id and got["decrypted"]
    file = got["content"]["file"]
    assert "url" not in got["content"]  # only the encrypted file object names the media
    assert file["v"] == "v2" and file["key"]["alg"] == "A256CTR" and file["hashes"]["sha256"]
    assert await bob.download_attachment(room_id, event_id) == data
    assert await alice.download_attachment(room_id, event_id) == data
    # The server holds only ciphertext: same length (CTR), other bytes, and the event's hash is its hash.
    stored = await bob.download_attachment(room_id, event_id, raw=True)
    assert len(stored) == len(data) and stored != data
    digest = base64.b64encode(hashlib.sha256(stored).digest()).decode().rstrip("=")
    assert digest == file["hashes"]["sha256"]


async def test_peer_reports_errors_and_death(jspeer_factory: JsPeerFactory) -> None:
    peer = await jspeer_factory("lonely")
    with pytest.raises(JsPeerError, match="unknown command"):
        await peer.call("no_such_command")
    with pytest.raises(JsPeerError, match="not logged in"):
        await peer.call("messages", roomId="!nowhere:localhost")
    started = time.monotonic()
    peer.proc.kill()
    with pytest.raises(JsPeerError, match="is gone"):
        await peer.call("ping", timeout=10)
    assert time.monotonic() - started < 10
