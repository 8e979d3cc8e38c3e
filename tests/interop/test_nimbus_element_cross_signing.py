"""nimbus cross-signing and its MSC4153 key-sharing policy opposite Element's crypto (matrix-js-sdk 43).

Spec: "Cross-signing" (https://spec.matrix.org/v1.12/client-server-api/#cross-signing) and
m.room_key.withheld (https://spec.matrix.org/v1.12/client-server-api/#mroom_keywithheld); policy after
MSC4153 (exclude devices not cross-signed by their owner).
1. Both sides have an identity (nimbus bootstraps it at first login, js via bootstrap_cross_signing):
   js sees nimbus's device signed by its owner (and shows its messages without a shield); nimbus sees
   js's device signed by its owner with trust "pinned".
2. Unsigned devices, both ways: js in "only_signed" isolation decrypts a cross-signed nimbus device but
   refuses (UNSIGNED_SENDER_DEVICE) a nimbus device logged in with cross_signing=False and a second,
   unsigned device of a user who has an identity; nimbus (default "cross_signed" mode) refuses an
   unsigned js device's event (cause "unverified_sender") and withholds its room key from it
   (m.unverified: js reports MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE).
3. js resets its identity: nimbus flags the pinned identity as changed, keeps sharing (a pinned, not
   verified, user's change is a notice, not a block) and pins the new key on acknowledge_identity;
   once nimbus verified js's key, the next reset holds nimbus's sending (VerifiedIdentityChanged, a
   notice in the room) until acknowledged.
Every wait is on a condition with a deadline. Needs the nimbus cross-signing API (Client.identity,
user_devices, user_identity, acknowledge_identity, set_sharing_mode, login(cross_signing=False)).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from nimbus.client.client import Client
from nimbus.crypto.identity.manager import VerifiedIdentityChanged
from nimbus.homeserver import Homeserver
from tests.fixtures_synapse import NewUser
from tests.interop.conftest import JsPeerFactory
from tests.interop.jspeer import JsPeer
from tests.interop.nimbus_side import (
    NimbusUser,
    join_when_invited,
    send_and_flush,
    wait_devices,
    wait_event,
    wait_identity,
    wait_membership,
    wait_undecryptable,
    wait_user_device,
)

pytestmark = [pytest.mark.integration, pytest.mark.interop]

WITHHELD_UNVERIFIED = "MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE"  # js 43 DecryptionFailureCode
UNSIGNED_SENDER = "UNSIGNED_SENDER_DEVICE"  # js 43, OnlySignedDevicesIsolationMode


async def js_peer(
    factory: JsPeerFactory, server: Homeserver, new_user: NewUser, name: str, cross_signed: bool
) -> tuple[JsPeer, str]:
    """A logged-in js peer (with a cross-signing identity if `cross_signed`) and its password."""
    user_id, password = await asyncio.to_thread(new_user, server, name)
    peer = await factory(name)
    await peer.login(server.client_url, user_id, password)
    if cross_signed:
        keys = await peer.bootstrap_cross_signing(password)
        assert keys["masterKey"] and keys["deviceSigned"], keys
    return peer, password


async def room_with(creator: Client, nimbus: list[Client], js: list[JsPeer]) -> str:
    """An encrypted room `creator` made holding every client and peer; every member sees every other
    joined and knows every other device, so nothing is encrypted before the devices are known."""
    invited = sorted(
        {c.user_id for c in nimbus if c.user_id != creator.user_id} | {str(p.user_id) for p in js}
    )
    room_id = str(await creator.create_room(name="cross-signing", invite=invited))
    joiners: dict[str, Client] = {}
    for client in nimbus:
        if client.user_id != creator.user_id:
            joiners.setdefault(client.user_id, client)
    await asyncio.gather(
        *(join_when_invited(c, room_id) for c in joiners.values()), *(p.join(room_id) for p in js)
    )
    users = sorted({creator.user_id, *invited})
    devices: dict[str, list[str]] = {}
    for client in (creator, *nimbus):
        devices.setdefault(client.user_id, [])
        if client.device_id not in devices[client.user_id]:
            devices[client.user_id].append(client.device_id)
    for peer in js:
        devices.setdefault(str(peer.user_id), []).append(str(peer.device_id))
    for client in {c.device_id: c for c in (creator, *nimbus)}.values():
        for user in users:
            await wait_membership(client, room_id, user)
            await wait_devices(client, user, devices[user])
    for peer in js:
        for user in users:
            await peer.wait_for_member(room_id, user)
            await peer.wait_for_devices(user, device_ids=devices[user])
    return room_id


async def test_each_side_sees_the_other_device_signed_by_its_owner(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice_user = await NimbusUser.register(homeserver, tmp_path, "alice")
    alice = await alice_user.device("one")  # first login of a user without identity: bootstraps
    try:
        mine = await alice.identity()
        assert mine.user_id == alice.user_id
        assert mine.master_key and mine.self_signing_key and mine.user_signing_key
        assert len({mine.master_key, mine.self_signing_key, mine.user_signing_key}) == 3
        assert mine.has_private_keys and mine.device_signed
        bob, _ = await js_peer(jspeer_factory, homeserver, new_user, "bob", cross_signed=True)
        bob_keys = await bob.cross_signing_status()
        room_id = await room_with(alice, [alice], [bob])

        # js: nimbus's device carries a valid self-signing signature from a master key it trusts (pinned).
        device = await bob.device_verification(alice.user_id, alice.device_id)
        assert device["known"] and device["signedByOwner"] is True, device
        assert device["crossSigningVerified"] is False  # bob never verified alice
        user = await bob.user_verification(alice.user_id)
        assert user["known"] and user["masterKey"] == mine.master_key, user
        assert not user["needsUserApproval"] and not user["isCrossSigningVerified"]

        # nimbus: js's device is signed by its owner; the owner's identity is pinned on first use.
        theirs = await wait_user_device(
            alice, str(bob.user_id), str(bob.device_id), lambda d: d.signed_by_owner
        )
        assert theirs.trust == "pinned" and not theirs.blocked
        js_keys = {d["deviceId"]: d for d in await bob.device_keys(str(bob.user_id))}
        assert theirs.curve25519 == js_keys[str(bob.device_id)]["curve25519"]
        assert theirs.ed25519 == js_keys[str(bob.device_id)]["ed25519"]
        identity = await alice.user_identity(str(bob.user_id))
        assert identity.master_key == bob_keys["masterKey"] == identity.pinned_master_key
        assert not identity.verified and not identity.changed

        # Both cross-signed: messages flow both ways under the default policy, and Element shows
        # nimbus's message with no shield (a red UNSIGNED_DEVICE shield would mean a bad signature).
        body = f"nimbus->js {secrets.token_hex(4)}"
        await send_and_flush(alice, room_id, body)
        got = await bob.wait_for_message(room_id, body=body, sender=alice.user_id)
        assert got["decrypted"], got["decryption_failure"]
        assert got["shield"] == {"colour": "NONE", "reason": None}
        body = f"js->nimbus {secrets.token_hex(4)}"
        event_id = await bob.send_text(room_id, body)
        message = await wait_event(alice, room_id, event_id)
        assert message.body == body and message.e2ee is not None and message.e2ee["decrypted"]
    finally:
        await alice.close()


async def test_unsigned_devices_are_refused_and_withheld_both_ways(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice_user = await NimbusUser.register(homeserver, tmp_path, "alice")
    dave_user = await NimbusUser.register(homeserver, tmp_path, "dave")
    clients: list[Client] = []
    try:
        alice = await alice_user.device("one")  # cross-signed (bootstrapped at first login)
        clients.append(alice)
        # Sync first so device two's arrival comes as device_lists.changed in an incremental sync
        # (an initial sync reports no device-list changes).
        await alice.sync_once(0)
        alice2 = await alice_user.device("two")  # the user has an identity: this device stays unsigned
        clients.append(alice2)
        dave = await dave_user.unsigned_device("one")  # a user with no identity at all
        clients.append(dave)
        assert alice.sharing_mode == "cross_signed"  # the default
        second = await alice2.identity()
        assert second.master_key == (await alice.identity()).master_key
        assert not second.has_private_keys and not second.device_signed
        no_identity = await dave.identity()
        assert no_identity.master_key is None and not no_identity.device_signed

        bob, _ = await js_peer(jspeer_factory, homeserver, new_user, "bob", cross_signed=True)
        carol, _ = await js_peer(jspeer_factory, homeserver, new_user, "carol", cross_signed=False)
        room_id = await room_with(alice, [alice, alice2, dave], [bob, carol])
        await bob.set_isolation("only_signed")
        for device in (alice2, dave):
            status = await bob.device_verification(device.user_id, device.device_id)
            assert status["known"] and status["signedByOwner"] is False, (device.device_id, status)
        assert (await bob.device_verification(alice.user_id, alice.device_id))["signedByOwner"] is True

        # nimbus -> js (only_signed): the cross-signed device gets through, the unsigned ones do not.
        body = f"signed nimbus {secrets.token_hex(4)}"
        await send_and_flush(alice, room_id, body)
        got = await bob.wait_for_message(room_id, body=body, sender=alice.user_id)
        assert got["decrypted"], got["decryption_failure"]
        for sender in (dave, alice2):
            event_id = await send_and_flush(sender, room_id, f"unsigned nimbus {secrets.token_hex(4)}")
            got = await bob.wait_for_undecryptable(room_id, event_id=event_id, codes=[UNSIGNED_SENDER])
            assert got["sender_device"] == sender.device_id and got["content"] is None

        # js (only_signed) -> nimbus: the cross-signed nimbus device gets the key and reads; the
        # unsigned nimbus devices are told the key was withheld (m.unverified) and show that cause.
        body = f"from only_signed js {secrets.token_hex(4)}"
        event_id = await bob.send_text(room_id, body)
        message = await wait_event(alice, room_id, event_id)
        assert message.body == body and message.e2ee is not None and message.e2ee["decrypted"]
        for device in (alice2, dave):
            message = await wait_undecryptable(device, room_id, event_id, {"withheld"})
            assert message.e2ee is not None and message.e2ee["code"] == "m.unverified", message.e2ee

        # js (no cross-signing) -> nimbus (cross_signed): the event is shown undecryptable.
        event_id = await carol.send_text(room_id, f"unsigned js {secrets.token_hex(4)}")
        message = await wait_undecryptable(alice, room_id, event_id, {"unverified_sender"})
        assert message.e2ee is not None and message.e2ee["decrypted"] is False
        assert message.sender == carol.user_id

        # nimbus (cross_signed) -> room with an unsigned js device and an unsigned nimbus device:
        # both are told the key was withheld (m.unverified); the signed js device decrypts.
        body = f"only to signed {secrets.token_hex(4)}"
        event_id = await send_and_flush(alice, room_id, body)
        got = await bob.wait_for_message(room_id, body=body, sender=alice.user_id)
        assert got["decrypted"], got["decryption_failure"]
        got = await carol.wait_for_undecryptable(room_id, event_id=event_id, codes=[WITHHELD_UNVERIFIED])
        withheld = await carol.wait_event(
            lambda e: (
                e["event"] == "to_device"
                and e["type"] == "m.room_key.withheld"
                and e["content"].get("session_id") == got["session_id"]
            )
        )
        assert withheld["sender"] == alice.user_id and withheld["content"]["code"] == "m.unverified"
        assert withheld["content"]["room_id"] == room_id
        message = await wait_undecryptable(dave, room_id, event_id, {"withheld"})
        assert message.e2ee is not None and message.e2ee["code"] == "m.unverified"

        # The legacy mode shares with every device again: the unsigned js device decrypts.
        await alice.set_sharing_mode("legacy")
        assert alice.sharing_mode == "legacy"
        body = f"legacy {secrets.token_hex(4)}"
        await send_and_flush(alice, room_id, body)
        got = await carol.wait_for_message(room_id, body=body, sender=alice.user_id)
        assert got["decrypted"], got["decryption_failure"]
    finally:
        for client in clients:
            await client.close()


async def test_js_identity_reset_is_flagged_until_acknowledged(
    jspeer_factory: JsPeerFactory, homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    alice = await (await NimbusUser.register(homeserver, tmp_path, "alice")).device("one")
    try:
        bob, bob_password = await js_peer(jspeer_factory, homeserver, new_user, "bob", cross_signed=True)
        first_key = (await bob.cross_signing_status())["masterKey"]
        bob_id = str(bob.user_id)
        room_id = await room_with(alice, [alice], [bob])
        before = await wait_identity(alice, bob_id, lambda i: i.master_key == first_key, "the first key")
        assert before.pinned_master_key == first_key and not before.changed and not before.verified

        reset = await bob.reset_identity(bob_password)
        new_key = reset["masterKey"]
        assert new_key != first_key and reset["deviceSigned"]
        # device_lists.changed in nimbus's sync makes it re-query bob's keys and see the new master key.
        changed = await wait_identity(alice, bob_id, lambda i: i.changed, "changed after the reset")
        assert changed.master_key == new_key and changed.pinned_master_key == first_key
        assert not changed.verified
        device = await wait_user_device(alice, bob_id, str(bob.device_id), lambda d: d.trust == "unpinned")
        assert device.signed_by_owner  # signed by the new self-signing key

        # bob was only pinned, never verified: the change is a notice, nimbus keeps sharing with him.
        body = f"after reset {secrets.token_hex(4)}"
        await send_and_flush(alice, room_id, body)
        got = await bob.wait_for_message(room_id, body=body, sender=alice.user_id)
        assert got["decrypted"], got["decryption_failure"]

        await alice.acknowledge_identity(bob_id)
        pinned = await alice.user_identity(bob_id)
        assert not pinned.changed and pinned.pinned_master_key == new_key == pinned.master_key
        device = await wait_user_device(alice, bob_id, str(bob.device_id), lambda d: d.trust == "pinned")
        assert device.signed_by_owner and not device.blocked
        # bob's device, signed by the new identity, still gets through to nimbus.
        event_id = await bob.send_text(room_id, f"js after reset {secrets.token_hex(4)}")
        message = await wait_event(alice, room_id, event_id)
        assert message.e2ee is not None and message.e2ee["decrypted"]

        # Now alice verifies bob's key (compared out of band); bob resets again: a verified user's new
        # identity holds alice's messages to the room until she acknowledges it.
        assert (await alice.verify_identity(bob_id, new_key)).verified
        third = (await bob.reset_identity(bob_password))["masterKey"]
        await wait_identity(alice, bob_id, lambda i: i.changed and i.master_key == third, "the second reset")
        [notice] = (await alice.room(room_id)).notices
        assert "since you verified it" in notice
        with pytest.raises(VerifiedIdentityChanged):
            await alice.send_text(room_id, "held back until acknowledged")
        await alice.acknowledge_identity(bob_id)
        body = f"acknowledged {secrets.token_hex(4)}"
        await send_and_flush(alice, room_id, body)
        got = await bob.wait_for_message(room_id, body=body, sender=alice.user_id)
        assert got["decrypted"], got["decryption_failure"]
    finally:
        await alice.close()
