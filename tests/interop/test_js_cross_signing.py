"""Element's cross-signing and MSC4153 key-sharing policy, between js peers only (matrix-js-sdk 43).

Proves the driver's cross-signing commands (interop/driver.mjs) on real Synapse before nimbus is put
opposite them: after `bootstrap_cross_signing` each peer sees the other's device signed by its owner;
in "only_signed" isolation a device that is not cross-signed neither gets room keys (withheld,
m.unverified) nor has its events decrypted (UNSIGNED_SENDER_DEVICE); after `reset_identity` the other
peer reports the identity change as needing approval until it pins the new identity.
Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from nimbus.homeserver import Homeserver
from tests.fixtures_synapse import NewUser
from tests.interop.conftest import JsPeerFactory
from tests.interop.jspeer import Json, JsPeer

pytestmark = [pytest.mark.integration, pytest.mark.interop]

WITHHELD_UNVERIFIED = "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE"
UNSIGNED_SENDER = "UNSIGNED_SENDER_DEVICE"


async def peer_with_password(
    factory: JsPeerFactory, server: Homeserver, new_user: NewUser, name: str
) -> tuple[JsPeer, str]:
    user_id, password = await asyncio.to_thread(new_user, server, name)
    peer = await factory(name)
    await peer.login(server.client_url, user_id, password)
    return peer, password


async def cross_signed_peer(
    factory: JsPeerFactory, server: Homeserver, new_user: NewUser, name: str
) -> JsPeer:
    peer, password = await peer_with_password(factory, server, new_user, name)
    keys = await peer.bootstrap_cross_signing(password)
    assert keys["masterKey"] and keys["selfSigningKey"] and keys["userSigningKey"], keys
    assert len({keys["masterKey"], keys["selfSigningKey"], keys["userSigningKey"]}) == 3
    assert keys["deviceSigned"] is True
    # Synapse 1.163 takes a user's first cross-signing upload without user-interactive auth (MSC3967).
    assert keys["uia"] == "none"
    return peer


async def room_of(creator: JsPeer, *others: JsPeer) -> str:
    """An encrypted room of all the peers; every peer sees every member joined and knows every device."""
    members = [str(p.user_id) for p in others]
    room_id = await creator.create_room(invite=members, name="cross-signing")
    await asyncio.gather(*(p.join(room_id) for p in others))
    everyone = (creator, *others)
    for peer in everyone:
        for other in everyone:
            await peer.wait_for_member(room_id, str(other.user_id))
            await peer.wait_for_devices(str(other.user_id), device_ids=[str(other.device_id)])
    return room_id


async def test_bootstrap_cross_signing_signs_each_device_for_the_other(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser
) -> None:
    alice = await cross_signed_peer(jspeer_factory, homeserver, new_user, "alice")
    bob = await cross_signed_peer(jspeer_factory, homeserver, new_user, "bob")
    status = await alice.cross_signing_status()
    assert status["publicKeysOnDevice"] and status["isCrossSigningReady"], status
    assert status["privateKeysCachedLocally"] == {
        "masterKey": True,
        "selfSigningKey": True,
        "userSigningKey": True,
    }
    room_id = await room_of(alice, bob)
    for viewer, owner in ((alice, bob), (bob, alice)):
        device = await viewer.device_verification(str(owner.user_id), str(owner.device_id))
        # Signed by its owner, but the owner's identity is not verified by the viewer.
        assert device == {
            "known": True,
            "signedByOwner": True,
            "crossSigningVerified": False,
            "localVerified": False,
            "isVerified": False,
        }
        user = await viewer.user_verification(str(owner.user_id))
        owner_keys = await owner.cross_signing_status()
        assert user["masterKey"] == owner_keys["masterKey"]
        assert user["known"] and not user["needsUserApproval"] and not user["isCrossSigningVerified"], user
    body = f"signed {secrets.token_hex(4)}"
    await alice.send_text(room_id, body)
    got = await bob.wait_for_message(room_id, body=body, sender=alice.user_id)
    # A device signed by its owner whose identity is only pinned (not verified) gets no shield.
    assert got["decrypted"] and got["shield"] == {"colour": "NONE", "reason": None}


async def test_only_signed_isolation_refuses_and_withholds_for_an_unsigned_device(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser
) -> None:
    alice = await cross_signed_peer(jspeer_factory, homeserver, new_user, "alice")
    bob = await cross_signed_peer(jspeer_factory, homeserver, new_user, "bob")
    carol, _ = await peer_with_password(jspeer_factory, homeserver, new_user, "carol")  # no identity
    room_id = await room_of(alice, bob, carol)
    assert (await alice.device_verification(str(carol.user_id), str(carol.device_id)))[
        "signedByOwner"
    ] is False
    await alice.set_isolation("only_signed")

    # An unsigned sender: alice refuses to decrypt its event.
    body = f"from unsigned {secrets.token_hex(4)}"
    event_id = await carol.send_text(room_id, body)
    got = await alice.wait_for_undecryptable(room_id, event_id=event_id)
    assert got["decryption_failure"] == UNSIGNED_SENDER and got["content"] is None
    # bob (default isolation) decrypts the same event, so the key did reach the receivers; Element
    # shows it under a red shield: a device not verified by its owner.
    seen_by_bob = await bob.wait_for_message(room_id, body=body, sender=carol.user_id)
    assert seen_by_bob["decrypted"] and seen_by_bob["shield"] == {
        "colour": "RED",
        "reason": "UNSIGNED_DEVICE",
    }

    # A signed sender still gets through to alice.
    body = f"from signed {secrets.token_hex(4)}"
    await bob.send_text(room_id, body)
    assert (await alice.wait_for_message(room_id, body=body, sender=bob.user_id))["decrypted"]

    # alice sends: bob gets the key, carol's device is told it was withheld (m.unverified).
    body = f"only to signed {secrets.token_hex(4)}"
    event_id = await alice.send_text(room_id, body)
    assert (await bob.wait_for_message(room_id, body=body, sender=alice.user_id))["decrypted"]
    got = await carol.wait_for_undecryptable(room_id, event_id=event_id, codes=[WITHHELD_UNVERIFIED])
    withheld = await carol.wait_event(
        lambda e: (
            e["event"] == "to_device"
            and e["type"] == "m.room_key.withheld"
            and e["content"].get("session_id") == got["session_id"]
        )
    )
    assert withheld["content"]["code"] == "m.unverified" and withheld["sender"] == alice.user_id


async def test_reset_identity_needs_approval_from_the_other_peer(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser
) -> None:
    alice, password = await peer_with_password(jspeer_factory, homeserver, new_user, "alice")
    first = await alice.bootstrap_cross_signing(password)
    bob = await cross_signed_peer(jspeer_factory, homeserver, new_user, "bob")
    room_id = await room_of(alice, bob)
    before = await bob.user_verification(str(alice.user_id))
    assert before["masterKey"] == first["masterKey"] and before["known"] and not before["needsUserApproval"]

    reset = await alice.reset_identity(password)
    assert reset["previousMasterKey"] == first["masterKey"] != reset["masterKey"]
    assert reset["deviceSigned"] is True
    after: Json = await bob.user_verification(str(alice.user_id), until={"needsUserApproval": True})
    assert after["masterKey"] == reset["masterKey"]
    # A pinned (never verified) identity that changed: needs approval, was never cross-signing verified.
    assert after["known"] and not after["wasCrossSigningVerified"] and not after["isCrossSigningVerified"]
    device = await bob.device_verification(str(alice.user_id), str(alice.device_id))
    assert device["signedByOwner"] is True  # signed by the new self-signing key

    # A change of a merely pinned identity is a notice, not a block: bob's keys still reach alice.
    body = f"after reset {secrets.token_hex(4)}"
    await bob.send_text(room_id, body)
    assert (await alice.wait_for_message(room_id, body=body, sender=bob.user_id))["decrypted"]

    await bob.pin_identity(str(alice.user_id))
    pinned = await bob.user_verification(str(alice.user_id))
    assert pinned["known"] and not pinned["needsUserApproval"] and pinned["masterKey"] == reset["masterKey"]
