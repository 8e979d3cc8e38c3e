"""KeyGossip: room key requests to our own devices and forwarded room keys, with real vodozemac.

Machines of one user (A1, A2) and another (Bob) are wired over the in-memory FakeServer; KeyGossip is
built on their internals with a fake cross-signing trust oracle (trust is an injected dependency).
A forwarded key arriving in plaintext cannot reach `handle_forwarded` at all: it takes an OlmDecrypted,
and OlmMachine already ignores a plaintext m.forwarded_room_key (tests/crypto/test_security.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
import vodozemac

from nimbus.crypto import records
from nimbus.crypto.errors import DecryptionCause, DecryptionError, ToDeviceCause
from nimbus.crypto.gossip import KEY_REQUEST, KeyGossip
from nimbus.crypto.olm.sessions import OlmDecrypted, OlmFailure
from nimbus.crypto.records import InboundSessionRecord, OutgoingRecord
from tests.crypto.helpers import RawDevice
from tests.scenarios.harness import PICKLE_KEY, Device, FakeServer, room_event

ROOM = "!room:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"
MEGOLM = "m.megolm.v1.aes-sha2"


class FakeTrust:
    """Which of our own devices "our identity cross-signed"."""

    def __init__(self, *trusted: str) -> None:
        self.trusted = set(trusted)

    async def own_device_trusted(self, device_id: str) -> bool:
        return device_id in self.trusted


def gossip(dev: Device, trust: FakeTrust) -> KeyGossip:
    m = dev.machine
    return KeyGossip(m._state, m._account, m._tracker, m._olm, trust, PICKLE_KEY, m._sender.store_outgoing)


@dataclass
class World:
    server: FakeServer
    a1: Device
    a2: Device
    bob: Device
    message: dict[str, Any]  # Bob's Megolm message (index 0) in ROOM
    session_id: str
    bob_curve: str
    bob_ed: str


async def world(*, a2_gets_key: bool = False) -> World:
    """Bob shares a room key with Alice's A1 and A2; A2's copy is lost unless `a2_gets_key`."""
    server = FakeServer()
    a1 = await Device.create(server, ALICE, "A1")
    a2 = await Device.create(server, ALICE, "A2")
    bob = await Device.create(server, BOB, "B1")
    message = await bob.encrypt(ROOM, "secret", members=[BOB, ALICE])
    if not a2_gets_key:
        server.inbox.pop((ALICE, "A2"))
    await a1.sync()  # the room key, and A2's device keys
    await a2.sync()
    keys = bob.machine.identity_keys
    return World(server, a1, a2, bob, message, message["session_id"], keys["curve25519"], keys["ed25519"])


async def outgoing(dev: Device) -> dict[str, OutgoingRecord]:
    return await dev.machine._state.list(OutgoingRecord, records.OUTGOING, "")


async def give_session(dev: Device, user: str, device_id: str) -> None:
    """An Olm session from `dev` to the device, made the way the machine does: /keys/claim."""
    m = dev.machine
    device = await m._tracker.device(user, device_id)
    assert device is not None
    [req] = m._olm.claim_requests([device])
    made = await m._olm.receive_claim(dev.server.handle(req, dev.user, dev.device), dev.now)
    assert [d.device_id for d in made] == [device_id]
    await dev.commit()


async def over_olm(sender: Device, to: Device, event_type: str, content: dict[str, Any]) -> OlmDecrypted:
    """Olm-encrypt on `sender`, decrypt on `to` (its receive path up to Olm)."""
    device = await sender.machine._tracker.device(to.user, to.device)
    assert device is not None
    encrypted = await sender.machine._olm.encrypt(device, event_type, content, sender.now)
    assert encrypted is not None
    await sender.commit()
    olm = await to.machine._olm.decrypt(sender.user, encrypted, to.now)
    assert olm.payload["type"] == event_type
    return olm


async def forward_content(dev: Device, session_id: str, index: int | None = None) -> dict[str, Any]:
    """An m.forwarded_room_key as `dev` would build it from the session it holds."""
    rec = await dev.machine._state.get(InboundSessionRecord, records.INBOUND, ROOM, session_id)
    assert rec is not None
    session = vodozemac.InboundGroupSession.from_pickle(rec.pickle, PICKLE_KEY)
    exported = session.export_at(session.first_known_index if index is None else index)
    assert exported is not None
    return {
        "algorithm": MEGOLM,
        "room_id": ROOM,
        "sender_key": rec.sender_key,
        "session_id": session_id,
        "session_key": exported.to_base64(),
        "sender_claimed_ed25519_key": rec.signing_key,
        "forwarding_curve25519_key_chain": rec.forwarding_chain,
        "shared_history": rec.shared_history,
    }


def request_content(w: World, request_id: str = "req1", device: str = "A2", **body: Any) -> dict[str, Any]:
    return {
        "action": "request",
        "body": {
            "algorithm": MEGOLM,
            "room_id": ROOM,
            "session_id": w.session_id,
            "sender_key": w.bob_curve,
            **body,
        },
        "request_id": request_id,
        "requesting_device_id": device,
    }


async def read(dev: Device, w: World, event_id: str = "$e1", message: dict[str, Any] | None = None) -> str:
    ev = await dev.machine.decrypt_room_event(
        room_event(ROOM, BOB, message or w.message, event_id), now_ms=dev.now
    )
    body: str = ev.content["body"]
    return body


# -- our requests -------------------------------------------------------------------------------------


async def test_request_is_queued_to_own_devices_once_and_survives_a_restart() -> None:
    w = await world()
    g = gossip(w.a2, FakeTrust("A1"))
    assert await g.request(ROOM, w.session_id, w.bob_curve, BOB, 5) is True
    assert await g.request(ROOM, w.session_id, w.bob_curve, BOB, 6) is False
    [(txn, out)] = (await outgoing(w.a2)).items()
    [req] = await g.outstanding()
    assert out.event_type == "m.room_key_request" and out.txn_id == txn
    assert out.messages == {
        ALICE: {
            "*": {
                "action": "request",
                "body": {
                    "algorithm": MEGOLM,
                    "room_id": ROOM,
                    "session_id": w.session_id,
                    "sender_key": w.bob_curve,
                },
                "request_id": req.request_id,
                "requesting_device_id": "A2",
            }
        }
    }
    assert (req.room_id, req.session_id, req.sender_key, req.sender_user, req.created_ms) == (
        ROOM,
        w.session_id,
        w.bob_curve,
        BOB,
        5,
    )
    # the request goes out through the machine and reaches A1 (and A2 itself: "*")
    await w.a2.flush()
    assert {(u, d) for u, d, t, _ in w.server.to_device_log if t == "m.room_key_request"} == {
        (ALICE, "A1"),
        (ALICE, "A2"),
    }
    # restart: a new machine and State over the same store still knows the request
    await w.a2.reload()
    g = gossip(w.a2, FakeTrust("A1"))
    assert [r.request_id for r in await g.outstanding()] == [req.request_id]
    assert await g.request(ROOM, w.session_id, w.bob_curve, BOB, 7) is False
    assert await outgoing(w.a2) == {}


async def test_key_arrived_cancels_the_request() -> None:
    w = await world()
    g = gossip(w.a2, FakeTrust("A1"))
    await g.request(ROOM, w.session_id, w.bob_curve, BOB, 5)
    [req] = await g.outstanding()
    await w.a2.flush()
    await g.key_arrived(ROOM, "another-session")  # not ours: nothing happens
    assert await outgoing(w.a2) == {}
    await g.key_arrived(ROOM, w.session_id)
    assert await g.outstanding() == []
    [out] = (await outgoing(w.a2)).values()
    assert out.event_type == "m.room_key_request"
    assert out.messages == {
        ALICE: {
            "*": {
                "action": "request_cancellation",
                "request_id": req.request_id,
                "requesting_device_id": "A2",
            }
        }
    }
    await g.key_arrived(ROOM, w.session_id)  # twice: no second cancellation
    assert len(await outgoing(w.a2)) == 1


# -- full round trip ----------------------------------------------------------------------------------


async def test_round_trip_between_own_devices() -> None:
    w = await world()
    ga1, ga2 = gossip(w.a1, FakeTrust("A2")), gossip(w.a2, FakeTrust("A1"))
    with pytest.raises(DecryptionError) as err:
        await read(w.a2, w)
    assert err.value.cause is DecryptionCause.NO_SESSION
    assert await read(w.a1, w) == "secret"

    await ga2.request(ROOM, w.session_id, w.bob_curve, BOB, w.a2.now)  # the machine asked already
    [req] = await ga2.outstanding()
    await w.a2.flush()

    # A1 receives the plaintext request (taken from its inbox here: A1's own machine would refuse
    # it, since no cross-signing exists in this world) and answers; no Olm session with A2 yet
    [r] = [e for e in w.server.sync_for(ALICE, "A1")["to_device"] if e["type"] == "m.room_key_request"]
    assert await ga1.handle_request(r["sender"], r["content"], w.a1.now) is None
    assert await outgoing(w.a1) == {}
    assert [d.device_id for d in await ga1.devices_needing_session()] == ["A2"]
    await give_session(w.a1, ALICE, "A2")
    assert [d.device_id for d in await ga1.devices_needing_session()] == []
    await ga1.answer_pending(w.a1.now)
    [out] = (await outgoing(w.a1)).values()
    assert out.event_type == "m.room.encrypted" and list(out.messages) == [ALICE]
    [(device_id, content)] = out.messages[ALICE].items()
    assert device_id == "A2" and content["algorithm"] == "m.olm.v1.curve25519-aes-sha2"
    exported = (await forward_content(w.a1, w.session_id))["session_key"]
    wire = json.dumps(out.messages)
    assert exported not in wire and "session_key" not in wire and "forwarded" not in wire
    await ga1.answer_pending(w.a1.now)  # answered once only
    assert len(await outgoing(w.a1)) == 1
    await w.a1.flush()

    # A2 decrypts the to-device message up to Olm and imports the forwarded key
    inbox = w.server.sync_for(ALICE, "A2")["to_device"]
    [event] = [e for e in inbox if e["type"] == "m.room.encrypted"]
    olm = await w.a2.machine._olm.decrypt(event["sender"], event["content"], w.a2.now)
    assert olm.payload["type"] == "m.forwarded_room_key" and olm.sender_device == "A1"
    assert await ga2.handle_forwarded(event["sender"], olm, olm.payload["content"]) == (ROOM, w.session_id)
    await w.a2.commit()
    assert await read(w.a2, w) == "secret"

    rec = await w.a2.machine._state.get(InboundSessionRecord, records.INBOUND, ROOM, w.session_id)
    assert rec is not None
    assert rec.authentic is False and rec.sender_device is None
    assert rec.forwarding_chain == [w.a1.machine.identity_keys["curve25519"]]
    assert (rec.sender_user, rec.sender_key, rec.signing_key) == (BOB, w.bob_curve, w.bob_ed)
    # the request is answered and cancelled at our other devices
    assert await ga2.outstanding() == []
    [cancel] = (await outgoing(w.a2)).values()
    assert cancel.messages[ALICE]["*"]["action"] == "request_cancellation"
    assert cancel.messages[ALICE]["*"]["request_id"] == req.request_id


# -- answering: who gets an answer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "trusted", "override", "why"),
    [
        (BOB, ("A2",), {}, "another user"),
        (ALICE, (), {}, "cross-signed"),
        (ALICE, ("A2", "A9"), {"requesting_device_id": "A9"}, "do not know"),
        (ALICE, ("A1",), {"requesting_device_id": "A1"}, "our own"),
        (
            ALICE,
            ("A2",),
            {"body": {"algorithm": MEGOLM, "room_id": ROOM, "session_id": "nope", "sender_key": "k"}},
            "do not hold",
        ),
        (ALICE, ("A2",), {"sender_key": "not-bob"}, "sender_key"),
        (ALICE, ("A2",), {"body": {"algorithm": "m.olm.v1", "room_id": ROOM}}, "algorithm"),
        (ALICE, ("A2",), {"action": "share"}, "action"),
    ],
)
async def test_refused_requests_store_and_send_nothing(
    sender: str, trusted: tuple[str, ...], override: dict[str, Any], why: str
) -> None:
    w = await world()
    await give_session(w.a1, ALICE, "A2")
    g = gossip(w.a1, FakeTrust(*trusted))
    content = request_content(w)
    if "sender_key" in override:
        content["body"]["sender_key"] = override.pop("sender_key")
    content.update(override)
    before = dict(w.a1.machine._state.pending.objects)
    reason = await g.handle_request(sender, content, w.a1.now)
    assert reason is not None and why in reason
    assert w.a1.machine._state.pending.objects == before
    assert await g.devices_needing_session() == []


async def test_trusted_request_is_answered_at_once_with_a_session() -> None:
    w = await world()
    await give_session(w.a1, ALICE, "A2")
    g = gossip(w.a1, FakeTrust("A2"))
    assert await g.handle_request(ALICE, request_content(w), w.a1.now) is None
    [out] = (await outgoing(w.a1)).values()
    assert out.event_type == "m.room.encrypted" and list(out.messages[ALICE]) == ["A2"]
    assert await w.a1.machine._state.list_raw(KEY_REQUEST, "answer") == {}


async def test_cancellation_drops_a_pending_answer() -> None:
    w = await world()
    g = gossip(w.a1, FakeTrust("A2"))
    assert await g.handle_request(ALICE, request_content(w, "r7"), w.a1.now) is None
    assert [d.device_id for d in await g.devices_needing_session()] == ["A2"]
    cancel = {"action": "request_cancellation", "request_id": "r7", "requesting_device_id": "A2"}
    assert await g.handle_request(ALICE, cancel, w.a1.now) is not None
    assert await g.devices_needing_session() == []
    await give_session(w.a1, ALICE, "A2")
    await g.answer_pending(w.a1.now)
    assert await outgoing(w.a1) == {}


async def test_pending_answer_is_checked_again_before_it_is_sent() -> None:
    w = await world()
    trust = FakeTrust("A2")
    g = gossip(w.a1, trust)
    assert await g.handle_request(ALICE, request_content(w), w.a1.now) is None
    await give_session(w.a1, ALICE, "A2")
    trust.trusted.clear()  # A2 lost its cross-signature meanwhile
    await g.answer_pending(w.a1.now)
    assert await outgoing(w.a1) == {}
    assert await w.a1.machine._state.list_raw(KEY_REQUEST, "answer") == {}


# -- accepting forwarded keys ---------------------------------------------------------------------------


async def _requested(w: World, *trusted: str) -> KeyGossip:
    g = gossip(w.a2, FakeTrust(*trusted))
    assert await g.request(ROOM, w.session_id, w.bob_curve, BOB, w.a2.now)
    await give_session(w.a1, ALICE, "A2")
    return g


async def _assert_rejected(
    g: KeyGossip,
    w: World,
    sender: str,
    olm: OlmDecrypted,
    content: dict[str, Any],
    cause: ToDeviceCause,
    why: str,
) -> None:
    before = dict(w.a2.machine._state.pending.objects)
    with pytest.raises(OlmFailure) as err:
        await g.handle_forwarded(sender, olm, content)
    assert err.value.cause is cause and why in err.value.detail
    assert w.a2.machine._state.pending.objects == before


async def test_forwarded_key_from_another_users_device_rejected() -> None:
    w = await world()
    g = await _requested(w, "A1", "B1")
    fwd = await forward_content(w.a1, w.session_id)
    olm = await over_olm(w.bob, w.a2, "m.forwarded_room_key", fwd)  # Bob already has a session to A2
    await _assert_rejected(g, w, BOB, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "another user")
    with pytest.raises(DecryptionError):
        await read(w.a2, w)


async def test_forwarded_key_from_unknown_own_device_rejected() -> None:
    w = await world()
    g = await _requested(w, "A1", "EVIL")
    raw = RawDevice(w.server, ALICE, "EVIL")  # claims to be Alice's, never published
    fwd = await forward_content(w.a1, w.session_id)
    event = raw.olm_to(ALICE, "A2", raw.payload(ALICE, "A2", "m.forwarded_room_key", fwd))
    olm = await w.a2.machine._olm.decrypt(ALICE, event["content"], w.a2.now)
    assert olm.sender_device is None
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "do not know")
    # with self-signed sender_device_keys (MSC4147) it names itself, but is still not in our device list
    payload = raw.payload(ALICE, "A2", "m.forwarded_room_key", fwd, sender_device_keys=raw.device_keys())
    olm = await w.a2.machine._olm.decrypt(ALICE, raw.olm_to(ALICE, "A2", payload)["content"], w.a2.now)
    assert olm.sender_device == "EVIL"
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "do not know")


async def test_unrequested_forwarded_key_rejected() -> None:
    w = await world()
    g = gossip(w.a2, FakeTrust("A1"))
    await give_session(w.a1, ALICE, "A2")
    fwd = await forward_content(w.a1, w.session_id)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "did not request")
    # requested for another sender_key than the key names: rejected too
    assert await g.request(ROOM, w.session_id, "someone-else", BOB, w.a2.now)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "another sender_key")


async def test_forwarded_key_from_untrusted_own_device_rejected_then_trusted_accepted() -> None:
    w = await world()
    g = await _requested(w)  # A1 not cross-signed
    fwd = await forward_content(w.a1, w.session_id)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "cross-signed")
    g.trust = FakeTrust("A1")  # the control: the very same forward from a trusted A1 is accepted
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    assert await g.handle_forwarded(ALICE, olm, fwd) == (ROOM, w.session_id)
    assert await read(w.a2, w) == "secret"


async def test_forwarded_key_whose_session_id_does_not_match_rejected() -> None:
    w = await world()
    g = await _requested(w, "A1")
    fwd = await forward_content(w.a1, w.session_id)
    other = vodozemac.InboundGroupSession(vodozemac.GroupSession().session_key)
    exported = other.export_at(0)
    assert exported is not None
    fwd["session_key"] = exported.to_base64()
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.BAD_ROOM_KEY, "does not match its key")
    fwd["session_key"] = "not a key"
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.BAD_ROOM_KEY, "does not decode")
    assert len(await g.outstanding()) == 1


async def test_worse_forwarded_key_does_not_replace_a_better_one() -> None:
    w = await world(a2_gets_key=True)
    assert await read(w.a2, w) == "secret"
    g = await _requested(w, "A1")  # e.g. asked again after an unknown-index failure
    held = await w.a2.machine._state.get(InboundSessionRecord, records.INBOUND, ROOM, w.session_id)
    fwd = await forward_content(w.a1, w.session_id, index=1)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(g, w, ALICE, olm, fwd, ToDeviceCause.FORWARDED_KEY_IGNORED, "not better")
    after = await w.a2.machine._state.get(InboundSessionRecord, records.INBOUND, ROOM, w.session_id)
    assert after == held and after is not None and after.authentic
    assert await read(w.a2, w, "$e1") == "secret"


def _forge_ratchet(session_key: str) -> str:
    raw = bytearray(base64.b64decode(session_key + "=" * (-len(session_key) % 4)))
    raw[10] ^= 0xFF  # inside the 128-byte ratchet; the session id (public key) stays the same
    return base64.b64encode(bytes(raw)).decode().rstrip("=")


async def test_better_forwarded_key_upgrades_only_the_same_ratchet() -> None:
    w = await world()
    later = await w.bob.encrypt(ROOM, "second", members=[BOB, ALICE])  # index 1, same session
    assert later["session_id"] == w.session_id
    g = await _requested(w, "A1")
    fwd1 = await forward_content(w.a1, w.session_id, index=1)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd1)
    await g.handle_forwarded(ALICE, olm, fwd1)
    assert await read(w.a2, w, "$e2", later) == "second"
    with pytest.raises(DecryptionError) as err:
        await read(w.a2, w)
    assert err.value.cause is DecryptionCause.UNKNOWN_INDEX

    await g.request(ROOM, w.session_id, w.bob_curve, BOB, w.a2.now)  # the machine may have asked
    assert [(r.room_id, r.session_id) for r in await g.outstanding()] == [(ROOM, w.session_id)]
    fwd0 = await forward_content(w.a1, w.session_id, index=0)
    forged = {**fwd0, "session_key": _forge_ratchet(fwd0["session_key"])}
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", forged)
    await _assert_rejected(g, w, ALICE, olm, forged, ToDeviceCause.BAD_ROOM_KEY, "not the ratchet")
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd0)
    await g.handle_forwarded(ALICE, olm, fwd0)
    assert await read(w.a2, w) == "secret"
    rec = await w.a2.machine._state.get(InboundSessionRecord, records.INBOUND, ROOM, w.session_id)
    assert rec is not None and rec.authentic is False
    assert rec.forwarding_chain == [w.a1.machine.identity_keys["curve25519"]]


async def test_forwarded_key_clears_a_withheld_notice() -> None:
    w = await world()
    w.a2.machine._receiver.record_withheld(
        BOB, {"room_id": ROOM, "session_id": w.session_id, "code": "m.unverified"}
    )
    g = await _requested(w, "A1")
    fwd = await forward_content(w.a1, w.session_id)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await g.handle_forwarded(ALICE, olm, fwd)
    assert await w.a2.machine._state.get_raw(records.WITHHELD, ROOM, w.session_id) is None
    assert await read(w.a2, w) == "secret"


async def test_sender_key_is_optional_since_v1_3() -> None:
    """Spec v1.3: the request's sender_key is deprecated; sessions are found by (room, session) only."""
    w = await world()
    ga2 = gossip(w.a2, FakeTrust("A1"))
    assert await ga2.request(ROOM, w.session_id, None, BOB, w.a2.now)  # the event named no sender_key
    [out] = (await outgoing(w.a2)).values()
    body = out.messages[ALICE]["*"]["body"]
    assert "sender_key" not in body
    ga1 = gossip(w.a1, FakeTrust("A2"))
    await give_session(w.a1, ALICE, "A2")
    request = out.messages[ALICE]["*"]
    assert await ga1.handle_request(ALICE, request, w.a1.now) is None  # answered without a sender_key
    fwd = await forward_content(w.a1, w.session_id)
    del fwd["sender_key"]
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    await _assert_rejected(ga2, w, ALICE, olm, fwd, ToDeviceCause.BAD_ROOM_KEY, "lacks sender_key")
    fwd = await forward_content(w.a1, w.session_id)
    olm = await over_olm(w.a1, w.a2, "m.forwarded_room_key", fwd)
    assert await ga2.handle_forwarded(ALICE, olm, fwd) == (ROOM, w.session_id)
    rec = await w.a2.machine._state.get(InboundSessionRecord, records.INBOUND, ROOM, w.session_id)
    assert rec is not None and rec.sender_key == w.bob_curve
    assert await read(w.a2, w) == "secret"
