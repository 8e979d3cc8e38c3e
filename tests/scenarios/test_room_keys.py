"""Scenarios: machines wired through the in-memory server share room keys and decrypt each other."""

from __future__ import annotations

import pytest

from nimbus.crypto.errors import DecryptionCause, DecryptionError
from tests.scenarios.harness import Device, FakeServer, room_event

ROOM = "!room:example.org"
ALICE, BOB, CAROL = "@alice:example.org", "@bob:example.org", "@carol:example.org"


async def test_alice_shares_with_bobs_two_devices() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    bob1 = await Device.create(server, BOB, "B1")
    bob2 = await Device.create(server, BOB, "B2")
    content = await alice.encrypt(ROOM, "hello bob", members=[ALICE, BOB])
    # one m.room.encrypted to-device per bob device, each carrying only Olm ciphertext
    sent = [(u, d) for u, d, t, _ in server.to_device_log if t == "m.room.encrypted"]
    assert sorted(sent) == [(BOB, "B1"), (BOB, "B2")]
    for bob in (bob1, bob2):
        results = await bob.sync()
        assert [r.status for r in results] == ["room_key"]
        ev = await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$e1"), now_ms=bob.now)
        assert ev.content["body"] == "hello bob"
        assert ev.sender_device == "A1" and ev.verified
    # alice reads her own message
    ev = await alice.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$e1"), now_ms=alice.now)
    assert ev.content["body"] == "hello bob"


async def test_member_leave_rotates_and_leaver_never_gets_the_new_session() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    bob = await Device.create(server, BOB, "B1")
    carol = await Device.create(server, CAROL, "C1")
    first = await alice.encrypt(ROOM, "to both", members=[ALICE, BOB, CAROL])
    await bob.sync()
    await carol.sync()
    second = await alice.encrypt(ROOM, "carol left", members=[ALICE, BOB])
    assert second["session_id"] != first["session_id"]
    await bob.sync()
    assert (await carol.sync()) == []
    ev = await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, second, "$e2"), now_ms=1)
    assert ev.content["body"] == "carol left"
    with pytest.raises(DecryptionError) as err:
        await carol.machine.decrypt_room_event(room_event(ROOM, ALICE, second, "$e2"), now_ms=1)
    assert err.value.cause is DecryptionCause.NO_SESSION
    carol_got = [c for u, _, _, c in server.to_device_log if u == CAROL]
    assert len(carol_got) == 1  # only the first session's key


async def test_same_members_reuse_the_session() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    await Device.create(server, BOB, "B1")
    a = await alice.encrypt(ROOM, "one", members=[ALICE, BOB])
    b = await alice.encrypt(ROOM, "two", members=[ALICE, BOB])
    assert a["session_id"] == b["session_id"]
    assert len([1 for u, *_ in server.to_device_log if u == BOB]) == 1
