"""Kill simulations: changes taken but never committed are lost with the machine; what left the process
was always committed first, so after a reload no Megolm index is reused and no one-time key id collides."""

from __future__ import annotations

import pytest

from nimbus.crypto.errors import DecryptionCause, DecryptionError
from nimbus.crypto.machine import RequestKind
from nimbus.store.crypto_memory import MemoryCryptoStore
from tests.scenarios.harness import Device, FakeServer, room_event

ROOM = "!room:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"


async def test_uncommitted_encrypt_then_reload_reuses_no_index_that_left() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    bob = await Device.create(server, BOB, "B1")
    sent: list[dict] = []  # type: ignore[type-arg]
    sent.append(await alice.encrypt(ROOM, "m0", members=[ALICE, BOB]))
    # encrypt, take the changes, crash before committing: this ciphertext never leaves
    await alice.machine.encrypt_room_event(ROOM, "m.room.message", {"body": "lost"}, now_ms=alice.now)
    alice.machine.take_changes()
    await alice.reload()
    for i in range(1, 4):
        sent.append(await alice.encrypt(ROOM, f"m{i}", members=[ALICE, BOB]))
        if i == 2:  # another crash: the share and encrypt of a second machine never committed
            await alice.machine.encrypt_room_event(ROOM, "m.room.message", {"body": "lost"}, now_ms=1)
            alice.machine.take_changes()
            await alice.reload()
    await bob.sync()
    seen = set()
    for n, content in enumerate(sent):
        ev = await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, f"$e{n}"), now_ms=1)
        assert ev.content["body"] == f"m{n}"
        key = (ev.session_id, ev.message_index)
        assert key not in seen
        seen.add(key)


async def test_to_device_retry_after_crash_resends_the_same_bytes() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    bob = await Device.create(server, BOB, "B1")
    reqs = []
    for _ in range(5):
        reqs = await alice.machine.share_room_key(ROOM, [ALICE, BOB], history_visibility="joined", now_ms=1)
        if reqs and reqs[0].kind == RequestKind.TO_DEVICE:
            break
        for r in reqs:
            await alice.send(r.request_id, r.request)
    [req] = reqs
    await alice.commit()  # committed, then the process dies before the PUT
    await alice.reload()
    [again] = [r for r in await alice.machine.outgoing_requests() if r.kind == RequestKind.TO_DEVICE]
    assert again.request_id == req.request_id and again.request == req.request
    await alice.send(again.request_id, again.request)
    await alice.send(req.request_id, req.request)  # a duplicate PUT is deduplicated by txn id
    assert [r.status for r in await bob.sync()] == ["room_key"]
    assert await alice.machine.outgoing_requests() == []


async def test_otk_upload_crash_and_topups_never_collide() -> None:
    server = FakeServer()
    store = MemoryCryptoStore()
    bob = Device(server, BOB, "B1", store)
    await bob.reload()
    [up] = [r for r in await bob.machine.outgoing_requests() if r.kind == RequestKind.KEYS_UPLOAD]
    await bob.commit()
    server.handle(up.request, BOB, "B1")  # the server stored them; the answer is lost with the process
    await bob.reload()
    await bob.flush()  # retry: the same key ids with the same keys (the server would refuse otherwise)
    for round_ in range(4):
        alice = await Device.create(server, ALICE, f"A{round_}")  # each new device claims one of bob's keys
        await alice.encrypt(f"!r{round_}:example.org", "hi", members=[ALICE, BOB])
        # bob generates a top-up but crashes before committing it, then does it again for real
        s = server.sync_for(BOB, "B1")
        await bob.machine.receive_sync_changes(now_ms=1, **s)
        bob.machine.take_changes()
        await bob.reload()
        server.inbox[(BOB, "B1")] = s["to_device"]
        await bob.sync()
    assert len(server.claim_log) == 4
    ids = [k for (u, _, k) in server.all_otks if u == BOB]
    assert len(ids) == len(set(ids)) == 25 + 4  # every claimed key replaced once, none id-reused


async def test_replay_under_a_new_event_id_rejected_also_after_restart() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1")
    bob = await Device.create(server, BOB, "B1")
    content = await alice.encrypt(ROOM, "once", members=[ALICE, BOB])
    await bob.sync()
    ev = room_event(ROOM, ALICE, content, "$orig", ts=5)
    assert (await bob.machine.decrypt_room_event(ev, now_ms=1)).content["body"] == "once"
    assert (await bob.machine.decrypt_room_event(ev, now_ms=1)).content["body"] == "once"  # same event: ok
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$replay", ts=5), now_ms=1)
    assert err.value.cause is DecryptionCause.REPLAY
    await bob.commit()
    await bob.reload()
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$replay2", ts=6), now_ms=1)
    assert err.value.cause is DecryptionCause.REPLAY
