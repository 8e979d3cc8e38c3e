"""Cross-signing identities, trust on first use, trust levels and the key-sharing policy.

Spec: "Cross-signing", "Reporting that decryption keys are withheld", v1.18 "Recommended client
behaviour" (MSC4153). Machines are wired over the in-memory protocol server (tests/scenarios/harness.py);
every key and signature is real (vodozemac + cryptography Ed25519).
"""

from __future__ import annotations

from typing import Any

import pytest

from nimbus.crypto.errors import DecryptionCause, DecryptionError
from nimbus.crypto.identity.cross_signing import (
    CrossSigningError,
    OwnKeys,
    SigningKey,
    check_identity,
    key_object,
)
from nimbus.crypto.identity.manager import VerifiedIdentityChanged
from nimbus.crypto.machine import SharingMode
from nimbus.crypto.records import CROSS_SIGNING_PRIVATE
from tests.scenarios.harness import Device, FakeServer, room_event

ROOM, ROOM2 = "!room:example.org", "!other:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"
CS = SharingMode.CROSS_SIGNED


def withheld_to(server: FakeServer, user: str, device: str) -> list[dict[str, Any]]:
    return [c for u, d, t, c in server.to_device_log if (u, d, t) == (user, device, "m.room_key.withheld")]


def room_keys_to(server: FakeServer, user: str, device: str) -> int:
    return len([1 for u, d, t, _ in server.to_device_log if (u, d, t) == (user, device, "m.room.encrypted")])


async def world(mode: SharingMode = CS) -> tuple[FakeServer, Device, Device]:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1", mode)
    bob = await Device.create(server, BOB, "B1", mode)
    await alice.bootstrap()
    await bob.bootstrap()
    return server, alice, bob


async def trust_of(device: Device, user: str) -> dict[str, str]:
    await device.machine.update_tracked_users([user])
    await device.sync()  # device_lists.changed → query again
    return {d.device_id: d.trust for d in await device.machine.device_infos(user)}


async def test_bootstrap_signs_the_device_and_pins_our_own_identity() -> None:
    server, alice, _bob = await world()
    keys = server.signing_keys[ALICE]
    identity = check_identity(ALICE, keys["master_key"], keys["self_signing_key"], keys["user_signing_key"])
    assert await alice.machine.cross_signing_uploaded()
    own = await alice.machine.user_identity(ALICE)
    assert own.master_key == identity.master_key and own.verified and not own.changed
    # the device keys on the server carry the self-signing key's signature; the master key, ours
    sigs = server.device_keys[ALICE]["A1"]["signatures"][ALICE]
    assert f"ed25519:{identity.self_signing_key}" in sigs
    assert "ed25519:A1" in keys["master_key"]["signatures"][ALICE]
    assert (await trust_of(alice, ALICE))["A1"] == "verified"


async def test_private_keys_are_saved_before_the_upload_and_reused_after_a_crash() -> None:
    server = FakeServer()
    alice = await Device.create(server, ALICE, "A1", CS)
    plan = await alice.machine.bootstrap_cross_signing()
    await alice.commit()  # saved; the process dies before the upload
    await alice.reload()
    again = await alice.machine.bootstrap_cross_signing()
    assert again.keys == plan.keys  # the same keys: nothing made twice, nothing lost
    assert await alice.store.crypto_get(CROSS_SIGNING_PRIVATE, "", "") is not None


async def test_other_users_devices_are_pinned_on_first_use_and_unsigned_devices_say_so() -> None:
    server, alice, _bob = await world()
    await Device.create(server, BOB, "B2", CS)  # a new device of bob: nobody signed it
    assert await trust_of(alice, BOB) == {"B1": "pinned", "B2": "unsigned"}
    ident = await alice.machine.user_identity(BOB)
    assert ident.pinned_master_key == ident.master_key and not ident.verified and not ident.changed


async def test_a_forged_self_signing_key_is_refused_and_the_known_identity_kept() -> None:
    server, alice, _bob = await world()
    assert (await trust_of(alice, BOB))["B1"] == "pinned"
    before = await alice.machine.user_identity(BOB)
    forged_ssk = SigningKey.generate()
    bogus = SigningKey.generate()  # signs the self-signing key instead of the master key
    server.signing_keys[BOB]["self_signing_key"] = bogus.sign_json(
        key_object(BOB, "self_signing", forged_ssk.public), BOB
    )
    server._changed(BOB)
    await alice.sync()
    problems = alice.machine.take_device_problems()
    assert any("not signed by the master key" in p.reason for p in problems)
    assert await alice.machine.user_identity(BOB) == before
    with pytest.raises(CrossSigningError):
        keys = server.signing_keys[BOB]
        check_identity(BOB, keys["master_key"], keys["self_signing_key"])


async def test_a_device_signature_by_the_wrong_key_does_not_make_it_cross_signed() -> None:
    server, alice, _bob = await world()
    b2 = await Device.create(server, BOB, "B2", CS)
    wrong = SigningKey.generate()  # not bob's self-signing key, but named as if it were
    real_ssk = server.signing_keys[BOB]["self_signing_key"]["keys"]
    [ssk_public] = real_ssk.values()
    keys = server.device_keys[BOB]["B2"]
    keys.setdefault("signatures", {}).setdefault(BOB, {})[f"ed25519:{ssk_public}"] = wrong.sign(
        b'{"not":"the device keys"}'
    )
    server._changed(BOB)
    assert (await trust_of(alice, BOB))["B2"] == "unsigned"
    infos = {d.device_id: d for d in await alice.machine.device_infos(BOB)}
    assert not infos["B2"].signed_by_owner and infos["B1"].signed_by_owner
    assert b2.machine.device_id == "B2"


async def test_cross_signed_mode_withholds_from_unsigned_devices_once_per_session() -> None:
    server, alice, _bob = await world()
    await Device.create(server, BOB, "B2", CS)
    await alice.encrypt(ROOM, "one", members=[ALICE, BOB])
    await alice.encrypt(ROOM, "two", members=[ALICE, BOB])
    assert room_keys_to(server, BOB, "B1") == 1 and room_keys_to(server, BOB, "B2") == 0
    [notice] = withheld_to(server, BOB, "B2")
    assert notice["code"] == "m.unverified" and notice["room_id"] == ROOM
    assert notice["session_id"] and notice["sender_key"] == alice.machine.identity_keys["curve25519"]


async def test_legacy_mode_shares_with_every_device() -> None:
    server, alice, _bob = await world(SharingMode.LEGACY)
    await Device.create(server, BOB, "B2", SharingMode.LEGACY)
    await alice.encrypt(ROOM, "hi", members=[ALICE, BOB])
    assert room_keys_to(server, BOB, "B2") == 1 and withheld_to(server, BOB, "B2") == []


async def test_unsigned_device_sees_the_withheld_cause() -> None:
    server, alice, _bob = await world()
    b2 = await Device.create(server, BOB, "B2", CS)
    content = await alice.encrypt(ROOM, "secret", members=[ALICE, BOB])
    await b2.sync()
    with pytest.raises(DecryptionError) as err:
        await b2.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=b2.now)
    assert err.value.cause is DecryptionCause.WITHHELD and err.value.code == "m.unverified"


async def test_events_from_an_unsigned_device_are_not_shown_in_cross_signed_mode() -> None:
    server, alice, _bob = await world()
    b2 = await Device.create(server, BOB, "B2", SharingMode.LEGACY)  # it shares; nobody signed it
    content = await b2.encrypt(ROOM, "from an unsigned device", members=[ALICE, BOB])
    await alice.sync()
    event = room_event(ROOM, BOB, content, "$u")
    with pytest.raises(DecryptionError) as err:
        await alice.machine.decrypt_room_event(event, now_ms=alice.now)
    assert err.value.cause is DecryptionCause.UNVERIFIED_SENDER
    await alice.machine.set_sharing_mode(SharingMode.LEGACY)
    shown = await alice.machine.decrypt_room_event(event, now_ms=alice.now)
    assert shown.content["body"] == "from an unsigned device" and shown.trust == "unsigned"


async def test_events_from_a_cross_signed_device_carry_its_trust() -> None:
    _server, alice, bob = await world()
    content = await bob.encrypt(ROOM, "hello", members=[ALICE, BOB])
    await alice.sync()
    shown = await alice.machine.decrypt_room_event(room_event(ROOM, BOB, content, "$s"), now_ms=alice.now)
    assert shown.trust == "pinned" and shown.verified and shown.authentic


async def test_identity_change_is_reported_once_and_devices_are_unpinned_until_acknowledged() -> None:
    server, alice, _bob = await world()
    assert (await trust_of(alice, BOB))["B1"] == "pinned"
    b2 = await Device.create(server, BOB, "B2", CS)
    await b2.bootstrap()  # bob resets his identity from B2
    levels = await trust_of(alice, BOB)
    assert levels == {"B1": "unsigned", "B2": "unpinned"}
    [change] = alice.machine.take_identity_changes()
    assert change.user_id == BOB and not change.was_verified
    ident = await alice.machine.user_identity(BOB)
    assert ident.changed and ident.pinned_master_key == change.pinned_master != ident.master_key
    server._changed(BOB)
    await alice.sync()
    assert alice.machine.take_identity_changes() == []  # reported once
    # a merely pinned user: sending goes on (to the devices the new identity signed)
    await alice.encrypt(ROOM, "still talking", members=[ALICE, BOB])
    assert room_keys_to(server, BOB, "B2") == 1
    assert await alice.machine.acknowledge_identity(BOB)
    ident = await alice.machine.user_identity(BOB)
    assert not ident.changed and ident.pinned_master_key == ident.master_key
    assert (await trust_of(alice, BOB))["B2"] == "pinned"


async def test_a_verified_users_new_identity_blocks_sending_until_acknowledged() -> None:
    server, alice, _bob = await world()
    await trust_of(alice, BOB)
    master = (await alice.machine.user_identity(BOB)).master_key
    assert master is not None
    body = await alice.machine.verify_identity(BOB, master)
    assert body is not None and master in body[BOB]  # our user-signing key signed bob's master key
    usk = server.signing_keys[ALICE]["user_signing_key"]
    [usk_public] = usk["keys"].values()
    assert f"ed25519:{usk_public}" in body[BOB][master]["signatures"][ALICE]
    assert (await trust_of(alice, BOB))["B1"] == "verified"
    b2 = await Device.create(server, BOB, "B2", CS)
    await b2.bootstrap()
    await trust_of(alice, BOB)
    [change] = alice.machine.take_identity_changes()
    assert change.was_verified
    with pytest.raises(VerifiedIdentityChanged) as err:
        await alice.encrypt(ROOM, "must not go out", members=[ALICE, BOB])
    assert err.value.users == [BOB]
    assert room_keys_to(server, BOB, "B2") == 0
    alice.machine.block_verified_changes = False  # the policy option
    await alice.encrypt(ROOM, "policy off", members=[ALICE, BOB])
    alice.machine.block_verified_changes = True
    await alice.machine.acknowledge_identity(BOB)
    await alice.encrypt(ROOM, "acknowledged", members=[ALICE, BOB])
    assert room_keys_to(server, BOB, "B2") >= 1


async def test_verifying_a_key_that_is_not_current_is_refused() -> None:
    _server, alice, _bob = await world()
    await trust_of(alice, BOB)
    with pytest.raises(Exception, match="not the user's current master key"):
        await alice.machine.verify_identity(BOB, OwnKeys.generate().master.public)


async def test_a_blocked_device_gets_blacklisted_and_the_session_rotates() -> None:
    server, alice, _bob = await world()
    first = await alice.encrypt(ROOM, "before", members=[ALICE, BOB])
    alice.machine.set_device_blocked(BOB, "B1", True)
    second = await alice.encrypt(ROOM, "after", members=[ALICE, BOB])
    assert first["session_id"] != second["session_id"]
    [notice] = withheld_to(server, BOB, "B1")
    assert notice["code"] == "m.blacklisted" and notice["session_id"] == second["session_id"]


async def test_no_olm_is_sent_once_per_device_without_room_or_session() -> None:
    server, alice, _bob = await world()
    b2 = await Device.create(server, BOB, "B2", CS)
    await b2.bootstrap()  # signed, so it is eligible; but it has no one-time or fallback key left
    await alice.machine.acknowledge_identity(BOB)
    server.otks[(BOB, "B2")] = {}
    server.fallback[(BOB, "B2")] = {}
    await alice.encrypt(ROOM, "one", members=[ALICE, BOB])
    await alice.encrypt(ROOM2, "two", members=[ALICE, BOB])
    notices = [n for n in withheld_to(server, BOB, "B2") if n["code"] == "m.no_olm"]
    assert len(notices) == 1
    assert "room_id" not in notices[0] and "session_id" not in notices[0]


async def test_switching_to_cross_signed_mode_replaces_the_session() -> None:
    server, alice, _bob = await world(SharingMode.LEGACY)
    await Device.create(server, BOB, "B2", SharingMode.LEGACY)
    first = await alice.encrypt(ROOM, "legacy", members=[ALICE, BOB])
    await alice.machine.set_sharing_mode(CS)
    await alice.commit()
    await alice.reload()  # the choice is saved in the (encrypted) store
    assert alice.machine.sharing_mode is CS
    second = await alice.encrypt(ROOM, "strict", members=[ALICE, BOB])
    assert first["session_id"] != second["session_id"]
    assert [n["code"] for n in withheld_to(server, BOB, "B2")] == ["m.unverified"]


async def test_private_cross_signing_keys_are_encrypted_at_rest(tmp_path: Any) -> None:
    import base64

    from nimbus.crypto.machine import OlmMachine
    from nimbus.store import SqliteStore
    from nimbus.store.encryption import KdfParams

    path = tmp_path / "store.db"
    store = await SqliteStore.open(path, passphrase="a passphrase", kdf=KdfParams(64, 1, 1))
    machine = await OlmMachine.load(store, ALICE, "A1", store.derive_key("vodozemac-pickle"))
    await machine.bootstrap_cross_signing()
    await store.crypto_save(machine.take_changes())
    keys = await machine.own_cross_signing_keys()
    await store.close()
    assert keys is not None
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for key in (keys.master, keys.self_signing, keys.user_signing):
        seed = key.seed()
        assert seed.encode() not in raw
        assert base64.b64decode(seed + "=") not in raw
    reopened = await SqliteStore.open(path, passphrase="a passphrase", kdf=KdfParams(64, 1, 1))
    again = await OlmMachine.load(reopened, ALICE, "A1", reopened.derive_key("vodozemac-pickle"))
    back = await again.own_cross_signing_keys()
    await reopened.close()
    assert back is not None and back.master.public == keys.master.public


# -- key requests between own devices, through the machines (gossip wired in machine.py) --------------


async def _signed_second_device(server: FakeServer, alice: Device) -> Device:
    """A2: a later device of alice that A1 (holding the keys) signed and that verified alice's key."""
    a2 = await Device.create(server, ALICE, "A2", CS)
    await alice.sync()
    body = await alice.machine.sign_own_device("A2")
    from nimbus.api.request import Request

    server.handle(Request("POST", "/_matrix/client/v3/keys/signatures/upload", json=body), ALICE, "A1")
    await a2.sync()
    master = (await a2.machine.user_identity(ALICE)).master_key
    assert master is not None
    await a2.machine.verify_identity(ALICE, master)  # compared out of band by the user
    await a2.commit()
    await alice.sync()
    return a2


async def test_a_missing_key_is_requested_from_and_forwarded_by_our_own_signed_device() -> None:
    server, alice, bob = await world()
    content = await bob.encrypt(ROOM, "before A2 existed", members=[ALICE, BOB])
    await alice.sync()
    event = room_event(ROOM, BOB, content, "$old")
    assert (await alice.machine.decrypt_room_event(event, now_ms=alice.now)).content["body"]
    a2 = await _signed_second_device(server, alice)
    assert (await trust_of(alice, ALICE))["A2"] == "verified"
    with pytest.raises(DecryptionError) as err:
        await a2.machine.decrypt_room_event(event, now_ms=a2.now)
    assert err.value.cause is DecryptionCause.NO_SESSION
    await a2.commit()
    assert await a2.machine.outstanding_key_requests() == [(ROOM, content["session_id"])]
    await a2.flush()  # the plaintext m.room_key_request to our own devices
    results = await alice.sync()  # A1 answers over Olm (claiming a one-time key of A2 first)
    assert "key_request" in [r.status for r in results]
    forwarded = [
        c for u, d, t, c in server.to_device_log if (u, d) == (ALICE, "A2") and t == "m.room.encrypted"
    ]
    assert forwarded and all(c["algorithm"] == "m.olm.v1.curve25519-aes-sha2" for c in forwarded)
    results = await a2.sync()
    assert [r.status for r in results if r.event_type == "m.forwarded_room_key"] == ["room_key"]
    await trust_of(a2, BOB)  # A2 learns bob's devices (the client tracks room members)
    shown = await a2.machine.decrypt_room_event(event, now_ms=a2.now)
    assert shown.content["body"] == "before A2 existed"
    assert not shown.authentic and not shown.verified  # forwarded: authenticity not guaranteed
    assert await a2.machine.outstanding_key_requests() == []


async def test_key_requests_from_unsigned_own_devices_and_other_users_get_nothing() -> None:
    server, alice, bob = await world()
    content = await bob.encrypt(ROOM, "keep it", members=[ALICE, BOB])
    await alice.sync()
    a2 = await Device.create(server, ALICE, "A2", CS)  # unsigned own device
    with pytest.raises(DecryptionError):
        await a2.machine.decrypt_room_event(room_event(ROOM, BOB, content, "$k"), now_ms=a2.now)
    await a2.commit()
    await a2.flush()
    before = len(server.to_device_log)
    results = await alice.sync()
    [refused] = [r for r in results if r.event_type == "m.room_key_request"]
    assert refused.status == "ignored" and refused.cause == "key_request_refused"
    # bob (another user) asks alice for a session of hers
    own = await alice.encrypt(ROOM, "alice's own", members=[ALICE, BOB])
    request = {
        "action": "request",
        "body": {"algorithm": "m.megolm.v1.aes-sha2", "room_id": ROOM, "session_id": own["session_id"]},
        "request_id": "r1",
        "requesting_device_id": "B1",
    }
    server.inbox.setdefault((ALICE, "A1"), []).append(
        {"type": "m.room_key_request", "sender": BOB, "content": request}
    )
    after_share = len(server.to_device_log)  # bob's devices got the room key itself just now
    results = await alice.sync()
    [refused] = [r for r in results if r.event_type == "m.room_key_request"]
    assert refused.status == "ignored" and refused.cause == "key_request_refused"
    sent_after = server.to_device_log[before:]
    assert not [1 for u, d, t, _ in sent_after if (u, t) == (ALICE, "m.room.encrypted") and d == "A2"]
    assert not [1 for u, _d, t, _ in server.to_device_log[after_share:] if u == BOB]  # nothing to bob
    assert await alice.machine._gossip.devices_needing_session() == []  # no answer queued for later


async def test_our_identity_replaced_elsewhere_is_a_verified_change_of_our_own() -> None:
    """A1 made alice's identity; it is replaced from A2 (or faked by the server): A1 no longer
    counts itself as signed, and sending holds until alice acknowledges the new identity; A1 keeps its
    old private keys (a server could fake the replacement)."""
    server, alice, _bob = await world()
    assert (await trust_of(alice, ALICE))["A1"] == "verified"
    a2 = await Device.create(server, ALICE, "A2", CS)
    await a2.bootstrap()
    levels = await trust_of(alice, ALICE)
    assert levels["A1"] == "unsigned" and levels["A2"] == "unpinned"
    [change] = alice.machine.take_identity_changes()
    assert change.user_id == ALICE and change.was_verified
    with pytest.raises(VerifiedIdentityChanged):
        await alice.encrypt(ROOM, "held", members=[ALICE, BOB])
    assert await alice.machine.own_cross_signing_keys() is not None
    await alice.machine.acknowledge_identity(ALICE)
    ident = await alice.machine.user_identity(ALICE)
    assert not ident.changed and not ident.verified  # the new identity is pinned, not verified
