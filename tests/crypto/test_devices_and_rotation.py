"""Device tracking checks, Megolm rotation rules, withheld notices, batching and chunking."""

from __future__ import annotations

from typing import Any

import pytest

from nimbus.crypto.errors import DecryptionCause, DecryptionError, NotShared
from nimbus.crypto.machine import RequestKind
from nimbus.crypto.megolm.outbound import rotation_settings, shared_history_for
from nimbus.crypto.olm.sessions import CLAIM_CHUNK
from nimbus.crypto.records import InboundSessionRecord
from tests.crypto.helpers import RawDevice
from tests.scenarios.harness import Device, FakeServer, room_event

ROOM = "!room:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"


async def _pair() -> tuple[FakeServer, Device, Device]:
    server = FakeServer()
    return server, await Device.create(server, ALICE, "A1"), await Device.create(server, BOB, "B1")


async def test_device_with_bad_signature_rejected_and_never_used() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    raw = RawDevice(server, BOB, "EVIL")
    keys = raw.device_keys()
    keys["keys"]["curve25519:EVIL"] = RawDevice(server, BOB, "X").curve  # swapped after signing
    raw.publish(keys)
    await alice.share(ROOM, [ALICE, BOB])
    assert await alice.machine.devices(BOB) == {}
    assert "EVIL" in await alice.machine.rejected_devices(BOB)
    [problem] = alice.machine.take_device_problems()
    assert problem.device_id == "EVIL" and "signature" in problem.reason
    assert not [1 for u, *_ in server.to_device_log if u == BOB]
    assert server.claim_log == []


async def test_device_keys_listed_under_another_id_rejected() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    raw = RawDevice(server, BOB, "B9")
    server.device_keys[BOB] = {"OTHER": raw.device_keys()}
    await alice.share(ROOM, [ALICE, BOB])
    assert await alice.machine.devices(BOB) == {}


async def test_keys_changed_under_same_device_id_rejected_old_kept() -> None:
    server, alice, _bob = await _pair()
    await alice.share(ROOM, [ALICE, BOB])
    before = (await alice.machine.devices(BOB))["B1"]
    impostor = RawDevice(server, BOB, "B1")
    server.device_keys[BOB]["B1"] = impostor.device_keys()
    server.changed.setdefault((ALICE, "A1"), set()).add(BOB)
    await alice.sync()
    assert (await alice.machine.devices(BOB))["B1"] == before
    assert "changed" in (await alice.machine.rejected_devices(BOB))["B1"].reason


async def test_left_stops_tracking() -> None:
    _server, alice, _bob = await _pair()
    await alice.share(ROOM, [ALICE, BOB])
    await alice.machine.receive_sync_changes(
        to_device=[],
        changed=[BOB],
        left=[BOB],
        one_time_key_counts={"signed_curve25519": 25},
        unused_fallback_key_types=["signed_curve25519"],
        now_ms=1,
    )
    assert [r for r in await alice.machine.outgoing_requests() if r.kind == RequestKind.KEYS_QUERY] == []


async def test_device_removed_rotates_session() -> None:
    server, alice, _bob = await _pair()
    bob2 = await Device.create(server, BOB, "B2")
    first = await alice.encrypt(ROOM, "a", members=[ALICE, BOB])
    del server.device_keys[BOB]["B2"]
    server.changed.setdefault((ALICE, "A1"), set()).add(BOB)
    await alice.sync()
    second = await alice.encrypt(ROOM, "b", members=[ALICE, BOB])
    assert second["session_id"] != first["session_id"]
    await bob2.sync()
    with pytest.raises(DecryptionError):
        await bob2.machine.decrypt_room_event(room_event(ROOM, ALICE, second, "$2"), now_ms=1)


@pytest.mark.parametrize(
    ("old", "new", "rotates"), [("joined", "shared", True), ("shared", "world_readable", False)]
)
async def test_history_visibility_flip_rotates(old: str, new: str, rotates: bool) -> None:
    _server, alice, bob = await _pair()
    a = await alice.encrypt(ROOM, "a", members=[ALICE, BOB], visibility=old)
    b = await alice.encrypt(ROOM, "b", members=[ALICE, BOB], visibility=new)
    assert (a["session_id"] != b["session_id"]) is rotates
    await bob.sync()
    stored = await bob.machine._state.list(InboundSessionRecord, "inbound_group_session", ROOM)
    # m.room_key.shared_history (spec v1.19) arrived with each session and is kept with it
    assert stored[b["session_id"]].shared_history is shared_history_for(new)
    assert stored[a["session_id"]].shared_history is shared_history_for(old)


def test_shared_history_and_rotation_settings() -> None:
    assert shared_history_for("shared") and shared_history_for("world_readable")
    assert not shared_history_for("joined") and not shared_history_for("invited")
    assert rotation_settings(None) == (7 * 24 * 3600 * 1000, 100)
    assert rotation_settings({"rotation_period_ms": 5, "rotation_period_msgs": 2}) == (5, 2)
    assert rotation_settings({"rotation_period_ms": "x", "rotation_period_msgs": True}) == (
        7 * 24 * 3600 * 1000,
        100,
    )


async def test_rotation_by_message_count_and_time() -> None:
    _server, alice, _bob = await _pair()
    enc = {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 2, "rotation_period_ms": 1000}
    ids = [
        (await alice.encrypt(ROOM, f"{i}", members=[ALICE, BOB], encryption=enc))["session_id"]
        for i in range(3)
    ]
    assert ids[0] == ids[1] != ids[2]
    alice.now += 1000
    later = await alice.encrypt(ROOM, "later", members=[ALICE, BOB], encryption=enc)
    assert later["session_id"] != ids[2]
    alice.now += 1000
    with pytest.raises(NotShared):  # expired: encrypt refuses until share_room_key rotates
        await alice.machine.encrypt_room_event(ROOM, "m.room.message", {}, now_ms=alice.now)


async def test_room_members_changed_and_invalidate() -> None:
    _server, alice, _bob = await _pair()
    a = await alice.encrypt(ROOM, "a", members=[ALICE, BOB])
    await alice.machine.room_members_changed(ROOM, left=["@nobody:example.org"])
    b = await alice.encrypt(ROOM, "b", members=[ALICE, BOB])
    assert a["session_id"] == b["session_id"]
    await alice.machine.room_members_changed(ROOM, left=[BOB])
    assert (await alice.machine.share_room_key(ROOM, [ALICE], history_visibility="shared", now_ms=1)) == []
    c = await alice.encrypt(ROOM, "c", members=[ALICE, BOB])
    assert c["session_id"] != b["session_id"]
    alice.machine.invalidate_group_session(ROOM)
    d = await alice.encrypt(ROOM, "d", members=[ALICE, BOB])
    assert d["session_id"] != c["session_id"]


async def test_withheld_notice_recorded_and_shown_as_cause() -> None:
    _server, _alice, bob = await _pair()
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "session_id": "SID"}
    notice = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": ROOM,
        "session_id": "SID",
        "sender_key": "k",
        "code": "m.unverified",
        "reason": "not verified",
    }
    [r] = await bob.machine.receive_sync_changes(
        to_device=[{"type": "m.room_key.withheld", "sender": ALICE, "content": notice}],
        changed=[],
        left=[],
        one_time_key_counts={},
        unused_fallback_key_types=None,
        now_ms=1,
    )
    assert r.status == "withheld"
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=1)
    assert err.value.cause is DecryptionCause.WITHHELD and err.value.code == "m.unverified"
    with pytest.raises(DecryptionError) as err:  # a notice only speaks for its own sender
        await bob.machine.decrypt_room_event(
            room_event(ROOM, "@mallory:example.org", content, "$1"), now_ms=1
        )
    assert err.value.cause is DecryptionCause.NO_SESSION


async def test_to_device_batched_and_claims_chunked() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    n = 260
    for i in range(n):
        RawDevice(server, BOB, f"D{i}").publish()
    claims: list[Any] = []
    for _ in range(5):
        reqs = await alice.machine.share_room_key(ROOM, [ALICE, BOB], history_visibility="shared", now_ms=1)
        if reqs and reqs[0].kind == RequestKind.KEYS_CLAIM:
            claims = reqs
        if reqs and reqs[0].kind == RequestKind.TO_DEVICE:
            break
        for r in reqs:
            await alice.send(r.request_id, r.request)
    assert len(claims) == -(-n // CLAIM_CHUNK)
    sizes = sorted(sum(len(d) for d in r.request.json["messages"].values()) for r in reqs)  # type: ignore[index]
    assert sizes == [10, 250]
