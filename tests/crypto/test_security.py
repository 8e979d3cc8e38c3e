"""Security rules: what the machine must refuse, and that it keeps working afterwards."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import vodozemac

from nimbus.crypto.errors import DecryptionCause, DecryptionError, ToDeviceCause
from tests.crypto.helpers import RawDevice, megolm_content
from tests.scenarios.harness import Device, FakeServer, room_event

ROOM = "!room:example.org"
ALICE, BOB, EVE = "@alice:example.org", "@bob:example.org", "@eve:example.org"


async def _setup() -> tuple[FakeServer, RawDevice, Device]:
    server = FakeServer()
    bob = await Device.create(server, BOB, "B1")
    raw = RawDevice(server, ALICE, "A1")
    raw.publish()
    await bob.machine.update_tracked_users([ALICE])
    await bob.flush()
    return server, raw, bob


async def _receive(bob: Device, *events: dict[str, Any]) -> list[Any]:
    results = await bob.machine.receive_sync_changes(
        to_device=list(events),
        changed=[],
        left=[],
        one_time_key_counts={"signed_curve25519": 50},
        unused_fallback_key_types=["signed_curve25519"],
        now_ms=bob.now,
    )
    await bob.commit()
    return results


async def test_valid_room_key_over_olm_decrypts() -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    [r] = await _receive(bob, raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key)))
    assert r.status == "room_key" and r.sender_device == "A1"
    content = megolm_content(g, {"type": "m.room.message", "content": {"body": "hi"}, "room_id": ROOM})
    ev = await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=1)
    assert ev.content == {"body": "hi"} and ev.verified


async def test_unencrypted_room_key_ignored() -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    [r] = await _receive(bob, {"type": "m.room_key", "sender": ALICE, "content": key})
    assert r.status == "ignored" and r.cause is ToDeviceCause.UNENCRYPTED_ROOM_KEY
    content = megolm_content(g, {"type": "m.room.message", "content": {}, "room_id": ROOM})
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=1)
    assert err.value.cause is DecryptionCause.NO_SESSION


async def test_forwarded_room_key_ignored_even_over_olm() -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    fwd = {
        **key,
        "sender_key": raw.curve,
        "sender_claimed_ed25519_key": raw.ed,
        "forwarding_curve25519_key_chain": [],
    }
    results = await _receive(
        bob,
        {"type": "m.forwarded_room_key", "sender": ALICE, "content": fwd},
        raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.forwarded_room_key", fwd)),
    )
    assert [(r.status, r.cause) for r in results] == [("ignored", ToDeviceCause.FORWARDED_KEY_IGNORED)] * 2
    content = megolm_content(g, {"type": "m.room.message", "content": {}, "room_id": ROOM})
    with pytest.raises(DecryptionError):
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=1)


@pytest.mark.parametrize(
    "override",
    [
        {"recipient": EVE},
        {"recipient_keys": {"ed25519": "AAAA"}},
        {"keys": {"ed25519": "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI"}},
        {"sender": EVE},
        {"keys": None},
    ],
)
async def test_olm_payload_with_wrong_recipient_or_keys_rejected(override: dict[str, Any]) -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    [r] = await _receive(bob, raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key, **override)))
    assert r.status == "failed" and r.cause is ToDeviceCause.BAD_PAYLOAD
    content = megolm_content(g, {"type": "m.room.message", "content": {}, "room_id": ROOM})
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=1)
    assert err.value.cause is DecryptionCause.NO_SESSION


async def test_sender_device_keys_must_match() -> None:
    server, raw, bob = await _setup()
    other = RawDevice(server, ALICE, "A2")
    _, key = raw.room_key(ROOM)
    bad = raw.payload(BOB, "B1", "m.room_key", key, sender_device_keys=other.device_keys())
    [r] = await _receive(bob, raw.olm_to(BOB, "B1", bad))
    assert r.cause is ToDeviceCause.BAD_PAYLOAD


async def test_megolm_room_mismatch_rejected() -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    await _receive(bob, raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key)))
    content = megolm_content(g, {"type": "m.room.message", "content": {}, "room_id": "!other:example.org"})
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$1"), now_ms=1)
    assert err.value.cause is DecryptionCause.ROOM_MISMATCH
    # the session is not looked up in another room either
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event("!other:example.org", ALICE, content, "$2"), now_ms=1)
    assert err.value.cause is DecryptionCause.NO_SESSION


async def test_event_from_another_user_with_that_session_rejected() -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    await _receive(bob, raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key)))
    content = megolm_content(g, {"type": "m.room.message", "content": {}, "room_id": ROOM})
    with pytest.raises(DecryptionError) as err:
        await bob.machine.decrypt_room_event(room_event(ROOM, EVE, content, "$1"), now_ms=1)
    assert err.value.cause is DecryptionCause.SENDER_MISMATCH


async def test_tampered_megolm_ciphertext_is_a_clear_error_and_machine_goes_on() -> None:
    _, raw, bob = await _setup()
    g, key = raw.room_key(ROOM)
    await _receive(bob, raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key)))
    content = megolm_content(g, {"type": "m.room.message", "content": {"body": "a"}, "room_id": ROOM})
    ct = content["ciphertext"]
    flipped = ct[:20] + ("A" if ct[20] != "A" else "B") + ct[21:]
    for bad in (flipped, "!!notbase64", ct[:-10]):
        with pytest.raises(DecryptionError) as err:
            await bob.machine.decrypt_room_event(
                room_event(ROOM, ALICE, {**content, "ciphertext": bad}, "$x"), now_ms=1
            )
        assert err.value.cause is DecryptionCause.BAD_CIPHERTEXT
    ev = await bob.machine.decrypt_room_event(room_event(ROOM, ALICE, content, "$ok"), now_ms=1)
    assert ev.content == {"body": "a"}


async def test_tampered_olm_ciphertext_reported_and_next_message_works() -> None:
    _, raw, bob = await _setup()
    _, key = raw.room_key(ROOM)
    ev = raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key))
    [(curve, c)] = ev["content"]["ciphertext"].items()
    body = c["body"]
    bad = {**ev, "content": {**ev["content"], "ciphertext": {curve: {**c, "body": body[:-8] + "AAAAAAAA"}}}}
    [r] = await _receive(bob, bad)
    assert r.status == "failed"
    [r] = await _receive(bob, ev)
    assert r.status == "room_key"


async def test_duplicate_olm_message_is_a_duplicate_not_a_wedge() -> None:
    _server, raw, bob = await _setup()
    _, key = raw.room_key(ROOM)
    ev = raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key))
    assert [r.status for r in await _receive(bob, ev)] == ["room_key"]
    [r] = await _receive(bob, ev)
    assert r.cause is ToDeviceCause.DUPLICATE
    assert [x for x in await bob.machine.outgoing_requests() if x.kind == "keys_claim"] == []


async def test_wedged_session_replaced_with_dummy_rate_limited() -> None:
    server, raw, bob = await _setup()
    _, key = raw.room_key(ROOM)
    await _receive(bob, raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.room_key", key)))
    # bob loses the session (e.g. restored an old backup): raw's next normal message cannot be decrypted
    [sid] = [i for (k, g, i) in bob.store.snapshot() if k == "olm_session"]
    await bob.store.crypto_save(
        type(bob.machine.take_changes())(objects={("olm_session", raw.curve, sid): None})
    )
    await bob.reload()
    # raw's next message (still a pre-key message on the lost session) makes no session: wedged
    ev = raw.olm_to(BOB, "B1", raw.payload(BOB, "B1", "m.dummy", {}))
    [r] = await _receive(bob, ev)
    assert r.cause is ToDeviceCause.WEDGED
    await bob.flush()
    [dummy] = [c for u, d, t, c in server.to_device_log if u == ALICE and d == "A1"]  # new session + m.dummy
    [body] = dummy["ciphertext"].values()
    _session, plaintext = raw.account.create_inbound_session(
        vodozemac.Curve25519PublicKey.from_base64(dummy["sender_key"]),
        vodozemac.AnyOlmMessage.from_parts(body["type"], base64.b64decode(body["body"] + "==")).to_pre_key(),
    )
    assert json.loads(plaintext)["type"] == "m.dummy"
    await _receive(bob, ev)
    await bob.flush()
    assert len([1 for u, d, *_ in server.to_device_log if (u, d) == (ALICE, "A1")]) == 1  # rate-limited
    bob.now += 3_600_001
    await _receive(bob, ev)
    await bob.flush()
    assert len([1 for u, d, *_ in server.to_device_log if (u, d) == (ALICE, "A1")]) == 2
