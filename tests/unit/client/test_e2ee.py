"""ClientCrypto and the client's decrypted view, with no network.

Each device is a `Client.in_memory` over a `MemoryStore` encrypted with weak (test-only) KDF params;
its transport is an httpx.MockTransport that hands the E2EE endpoints (keys upload/query/claim,
sendToDevice) to the scenarios harness's in-memory server and answers /members from the room's member
list. Sync batches are built by hand (what a server would send) and saved the way the sync loop saves
them: `prepare_batch`, then `save_sync_batch(batch, crypto=..., decrypted=...)` in one transaction.

Shows: a late room key decrypts earlier events by itself (saved with the batch that brought the key);
in a limited sync any non-join membership rotates the room session; the failure causes reach
`Client.room()`'s per-message e2ee info.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from nimbus.api.request import Request
from nimbus.client.client import Client
from nimbus.client.e2ee import MEGOLM
from nimbus.client.transport import Transport
from nimbus.store import KdfParams, MemoryStore, Session
from nimbus.types.events import Event, RoomUpdate, SyncBatch, parse_event
from nimbus.types.ids import DeviceId, EventId, RoomId, UserId
from tests.scenarios.harness import FakeServer

ROOM = RoomId("!secret:example.org")
ALICE, BOB, CAROL = UserId("@alice:example.org"), UserId("@bob:example.org"), UserId("@carol:example.org")
WEAK = KdfParams(memory_kib=64, iterations=1, lanes=1)  # tests only


class World:
    """The in-memory server plus the room's member list (what /members answers)."""

    def __init__(self) -> None:
        self.server = FakeServer()
        self.members: dict[str, str] = {}
        self.batches = 0

    def transport(self, user: str, device: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            path = request.url.raw_path.decode().split("?")[0]
            if path.endswith("/members"):
                chunk = [member(u, m).raw for u, m in self.members.items()]
                return httpx.Response(200, json={"chunk": chunk})
            body = json.loads(request.content) if request.content else None
            answer = self.server.handle(Request(request.method, path, json=body), user, device)
            return httpx.Response(200, json=answer)

        return httpx.MockTransport(handle)

    async def client(self, user: UserId, device: str) -> Client:
        store = MemoryStore(passphrase=f"{user} passphrase", kdf=WEAK)
        transport = Transport("https://hs.example.org", transport=self.transport(user, device), max_retries=0)
        session = Session("https://hs.example.org", user, DeviceId(device), f"token-{device}")
        client = await Client.in_memory(store, transport, session)
        await client.crypto.send_outgoing()  # publish device keys and one-time keys
        assert await client.crypto.bootstrap_cross_signing("password")  # what login does
        return client

    def batch(
        self,
        client: Client,
        *,
        timeline: tuple[Event, ...] = (),
        state: tuple[Event, ...] = (),
        limited: bool = False,
        to_device: bool = True,
    ) -> SyncBatch:
        """What /sync would answer `client` now; `to_device=False` holds its to-device inbox back."""
        self.batches += 1
        pending = self.server.sync_for(client.user_id, client.device_id) if to_device else {}
        return SyncBatch(
            next_batch=f"s{self.batches}",
            rooms=(RoomUpdate(ROOM, "join", state=state, timeline=timeline, limited=limited),),
            to_device=tuple(pending.get("to_device", ())),
            device_lists_changed=tuple(UserId(u) for u in pending.get("changed", ())),
            one_time_keys_count=dict(pending.get("one_time_key_counts", {})),
        )


async def deliver(client: Client, batch: SyncBatch) -> dict[EventId, dict[str, Any]]:
    """What the sync loop does with a batch; returns the decrypted records saved with it."""
    extras = await client.crypto.prepare_batch(batch)
    await client.store.save_sync_batch(batch, crypto=extras.crypto, decrypted=extras.decrypted)
    client.crypto.committed(extras.crypto)
    await client.crypto.send_outgoing()
    return extras.decrypted


_n = 0


def event(etype: str, sender: str, content: dict[str, Any], state_key: str | None = None) -> Event:
    global _n
    _n += 1
    raw: dict[str, Any] = {
        "event_id": f"$ev{_n}",
        "type": etype,
        "sender": sender,
        "origin_server_ts": 1_000 + _n,
        "content": content,
    }
    if state_key is not None:
        raw["state_key"] = state_key
    return parse_event(raw, ROOM)


def member(user: str, membership: str) -> Event:
    return event("m.room.member", user, {"membership": membership}, state_key=user)


def room_state(world: World) -> tuple[Event, ...]:
    return (
        event("m.room.encryption", ALICE, {"algorithm": MEGOLM}, state_key=""),
        event("m.room.history_visibility", ALICE, {"history_visibility": "shared"}, state_key=""),
        *(member(u, m) for u, m in world.members.items()),
    )


async def encrypt(client: Client, body: str) -> dict[str, Any]:
    """What `_seal` does: share the key where needed, encrypt, commit the ratchet advance."""
    content, changes = await client.crypto.encrypt_for_outbox(
        ROOM, "m.room.message", {"msgtype": "m.text", "body": body}
    )
    await client.store.crypto_save(changes)
    client.crypto.committed(changes)
    return content


async def setup(*users: UserId) -> tuple[World, list[Client]]:
    world = World()
    world.members = {u: "join" for u in users}
    clients = [await world.client(u, f"{u[1].upper()}1") for u in users]
    state = room_state(world)
    for c in clients:
        await deliver(c, world.batch(c, state=state))
    return world, clients


async def test_a_late_room_key_decrypts_the_earlier_event_with_the_batch_that_brought_it() -> None:
    world, (alice, bob) = await setup(ALICE, BOB)
    content = await encrypt(alice, "sent before the key arrived")
    sent = event("m.room.encrypted", ALICE, content)

    # batch 1: the event, but the to-device room key is still on the server
    first = await deliver(bob, world.batch(bob, timeline=(sent,), to_device=False))
    assert first[sent.event_id]["ok"] is False and first[sent.event_id]["cause"] == "no_session"
    cached = await bob.store.decrypted(ROOM, [sent.event_id])
    assert cached[sent.event_id]["cause"] == "no_session"

    # batch 2: only the to-device room key; the earlier event is decrypted while preparing it ...
    batch2 = world.batch(bob)
    assert [e["type"] for e in batch2.to_device] == ["m.room.encrypted"] and not batch2.rooms[0].timeline
    extras = await bob.crypto.prepare_batch(batch2)
    assert extras.decrypted[sent.event_id]["ok"] is True
    assert extras.crypto  # the new inbound session rides in the same change set
    # ... and nothing is in the store before the batch's transaction
    assert (await bob.store.decrypted(ROOM, [sent.event_id]))[sent.event_id]["ok"] is False
    token_before = await bob.store.load_sync_token()
    assert token_before != batch2.next_batch
    await bob.store.save_sync_batch(batch2, crypto=extras.crypto, decrypted=extras.decrypted)
    bob.crypto.committed(extras.crypto)

    assert await bob.store.load_sync_token() == batch2.next_batch
    record = (await bob.store.decrypted(ROOM, [sent.event_id]))[sent.event_id]
    assert record["ok"] is True and record["content"]["body"] == "sent before the key arrived"
    assert record["sender_device"] == "A1" and record["session_id"] == content["session_id"]
    room = await bob.room(ROOM)
    (message,) = [m for m in room.timeline if m.event_id == sent.event_id]
    assert message.body == "sent before the key arrived"
    assert message.e2ee == {
        "decrypted": True,
        "sender_device": "A1",
        "verified": record["verified"],
        "trust": "pinned",
        "authentic": True,
    }


async def test_a_late_key_only_retries_its_own_session() -> None:
    world, (alice, bob) = await setup(ALICE, BOB)
    a = event("m.room.encrypted", ALICE, await encrypt(alice, "first session"))
    await deliver(bob, world.batch(bob, timeline=(a,), to_device=False))
    alice.crypto.machine.invalidate_group_session(ROOM)
    b_content = await encrypt(alice, "second session")
    world.server.inbox.pop((BOB, "B1"), None)  # the first session's key is lost on the way
    b = event("m.room.encrypted", ALICE, b_content)
    await deliver(bob, world.batch(bob, timeline=(b,), to_device=False))
    alice.crypto.machine.invalidate_group_session(ROOM)
    await encrypt(alice, "third session")  # a key for another session arrives
    got = await deliver(bob, world.batch(bob))
    assert a.event_id not in got and b.event_id not in got
    cached = await bob.store.decrypted(ROOM, [a.event_id, b.event_id])
    assert [cached[e]["cause"] for e in (a.event_id, b.event_id)] == ["no_session", "no_session"]


async def rotation_after(membership: str, *, limited: bool) -> tuple[str, str, World, list[Client]]:
    world, clients = await setup(ALICE, BOB, CAROL)
    alice = clients[0]
    before = (await encrypt(alice, "everyone"))["session_id"]
    world.members[CAROL] = membership
    await deliver(alice, world.batch(alice, state=(member(CAROL, membership),), limited=limited))
    after = (await encrypt(alice, "after the sync"))["session_id"]
    return before, after, world, clients


async def test_limited_sync_with_a_non_join_membership_rotates_the_session() -> None:
    before, after, _, _ = await rotation_after("invite", limited=True)
    assert after != before


async def test_limited_sync_with_a_leave_rotates_and_the_leaver_gets_no_new_key() -> None:
    before, after, world, _ = await rotation_after("leave", limited=True)
    assert after != before
    to_carol = world.server.sync_for(CAROL, "C1")["to_device"]
    to_bob = world.server.sync_for(BOB, "B1")["to_device"]
    assert len(to_bob) == 2 and len(to_carol) == 1  # carol only has the first session's key


async def test_same_state_without_limited_keeps_the_session() -> None:
    """Control: outside a limited sync an invite is not a leave, so nothing rotates."""
    before, after, _, _ = await rotation_after("invite", limited=False)
    assert after == before


async def test_failure_causes_reach_the_rooms_e2ee_info() -> None:
    world, (alice, bob) = await setup(ALICE, BOB)
    good = event("m.room.encrypted", ALICE, await encrypt(alice, "readable"))
    await deliver(bob, world.batch(bob, timeline=(good,)))

    tampered_content = dict(good.content)
    raw = tampered_content["ciphertext"]
    tampered_content["ciphertext"] = raw[:20] + ("A" if raw[20] != "A" else "B") + raw[21:]
    tampered = event("m.room.encrypted", ALICE, tampered_content)
    replayed = event("m.room.encrypted", ALICE, dict(good.content))  # same index, another event id
    unknown_session = event("m.room.encrypted", ALICE, {**good.content, "session_id": "not-a-session"})
    unknown_alg = event("m.room.encrypted", ALICE, {"algorithm": "m.olm.v1.curve25519-aes-sha2"})
    await deliver(bob, world.batch(bob, timeline=(tampered, replayed, unknown_session, unknown_alg)))

    info = {m.event_id: m.e2ee or {} for m in (await bob.room(ROOM)).timeline}
    assert info[good.event_id]["decrypted"] is True
    causes = {e.event_id: info[e.event_id].get("cause") for e in (tampered, replayed, unknown_session)}
    assert causes[tampered.event_id] == "bad_ciphertext"
    assert causes[replayed.event_id] == "replay"
    assert causes[unknown_session.event_id] == "no_session"
    assert info[unknown_alg.event_id]["cause"] == "unsupported_algorithm"
    assert all(info[e].get("decrypted") is False for e in causes)


async def test_withheld_key_after_the_event_shows_as_the_cause() -> None:
    world, (alice, bob) = await setup(ALICE, BOB)
    content = await encrypt(alice, "not for bob")
    world.server.inbox.pop((BOB, "B1"), None)  # bob's key never arrives ...
    sent = event("m.room.encrypted", ALICE, content)
    await deliver(bob, world.batch(bob, timeline=(sent,)))
    withheld = {
        "type": "m.room_key.withheld",
        "sender": ALICE,
        "content": {
            "algorithm": MEGOLM,
            "room_id": ROOM,
            "session_id": content["session_id"],
            "sender_key": alice.crypto.machine.identity_keys["curve25519"],
            "code": "m.unverified",
            "reason": "device not verified",
        },
    }
    world.server.inbox.setdefault((BOB, "B1"), []).append(withheld)  # ... a withheld notice does
    await deliver(bob, world.batch(bob))
    (message,) = [m for m in (await bob.room(ROOM)).timeline if m.event_id == sent.event_id]
    assert message.e2ee is not None and message.e2ee["decrypted"] is False
    assert message.e2ee["cause"] == "withheld" and message.e2ee["code"] == "m.unverified"


async def test_an_event_never_tried_says_so() -> None:
    world, (alice, bob) = await setup(ALICE, BOB)
    sent = event("m.room.encrypted", ALICE, await encrypt(alice, "stored without the crypto loop"))
    await bob.store.save_sync_batch(world.batch(bob, timeline=(sent,), to_device=False))
    (message,) = [m for m in (await bob.room(ROOM)).timeline if m.event_id == sent.event_id]
    assert message.e2ee is not None and message.e2ee["cause"] == "not_decrypted_yet"


async def test_an_identity_change_shows_a_notice_in_the_room_and_a_verified_one_blocks_sending() -> None:
    import pytest

    from nimbus.crypto.identity.cross_signing import OwnKeys
    from nimbus.crypto.identity.manager import VerifiedIdentityChanged

    world, (alice, bob) = await setup(ALICE, BOB)
    await deliver(alice, world.batch(alice, state=room_state(world)))
    await encrypt(alice, "hello")
    assert (await alice.room(ROOM)).notices == []
    # bob's identity is replaced (a reset from elsewhere): alice hears of it through device_lists
    world.server.signing_keys[BOB] = OwnKeys.generate().public_objects(BOB)
    world.server._changed(BOB)
    await deliver(alice, world.batch(alice))
    [notice] = (await alice.room(ROOM)).notices
    assert BOB in notice and "nimbus trust acknowledge" in notice
    assert [c.user_id for c in alice.crypto.identity_changes] == [BOB]
    await encrypt(alice, "a pinned user's change is a notice, not a block")
    await alice.acknowledge_identity(BOB)
    assert (await alice.room(ROOM)).notices == []
    # now alice verifies bob's (new) key; the next change blocks sending until acknowledged
    master = (await alice.user_identity(BOB)).master_key
    assert master is not None
    assert (await alice.verify_identity(BOB, master)).verified
    world.server.signing_keys[BOB] = OwnKeys.generate().public_objects(BOB)
    world.server._changed(BOB)
    await deliver(alice, world.batch(alice))
    [notice] = (await alice.room(ROOM)).notices
    assert "since you verified it" in notice
    with pytest.raises(VerifiedIdentityChanged):  # even with a session that bob's devices hold
        await encrypt(alice, "held back")
    await alice.acknowledge_identity(BOB)
    await encrypt(alice, "sent after acknowledging")
    await bob.close()
    await alice.close()
