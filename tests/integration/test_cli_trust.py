"""The `nimbus` CLI's cross-signing and trust commands against a real Synapse: identity, devices
--user / sign, trust verify / block, config sharing-mode, login --no-cross-signing, and how withheld
messages read. Logins are shared across assertions (one story per test) to keep the file fast."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nimbus.homeserver import Homeserver
from tests.integration.cli import NewUser, Result, login, nimbus

pytestmark = pytest.mark.integration


def ok(result: Result) -> Result:
    assert result.code == 0, result.stderr
    return result


def until(what: str, probe: Callable[[], Any], timeout: float = 30) -> Any:
    """Run `probe` (a CLI call) until it returns something truthy; each call takes about a second."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")


def devices_of(viewer: Path, user: str) -> dict[str, dict[str, Any]]:
    listed = ok(nimbus(viewer, "devices", "--user", user, "--json"))
    return {d["device_id"]: d for d in listed.objects if d["type"] == "device"}


def test_identity_devices_sign_verify_block_and_withheld_messages(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    url = homeserver.client_url
    alice, alice_pw = new_user(homeserver, "alice")
    bob, bob_pw = new_user(homeserver, "bob")
    a1, a2, b = tmp_path / "alice1", tmp_path / "alice2", tmp_path / "bob"

    # The first login makes alice's identity and signs its device.
    first = login(a1, url, alice, alice_pw).objects[0]
    dev1 = first["device_id"]
    assert first["cross_signed"] is True and first["master_key"]
    me = ok(nimbus(a1, "identity", "--json")).objects[0]
    assert me["type"] == "identity" and me["user_id"] == alice and me["device_id"] == dev1
    master = me["master_key"]
    assert master and me["self_signing_key"] and me["user_signing_key"]
    assert me["has_private_keys"] is True and me["device_signed"] is True
    readable = ok(nimbus(a1, "identity")).stdout
    assert " ".join(master[i : i + 4] for i in range(0, len(master), 4)) in readable
    assert "not cross-signed" not in readable

    # A later device of hers is unsigned, and says so.
    later = login(a2, url, alice, alice_pw).objects[0]
    dev2 = later["device_id"]
    assert later["cross_signed"] is False and later["master_key"] == first["master_key"]
    second = ok(nimbus(a2, "identity", "--json")).objects[0]
    assert second["master_key"] == master
    assert second["device_signed"] is False and second["has_private_keys"] is False
    assert "this device is not cross-signed" in ok(nimbus(a2, "identity")).stdout

    # bob shares a room with alice (so her device-list changes reach him) and sees her devices' trust.
    login(b, url, bob, bob_pw)
    room = ok(nimbus(a1, "create-room", "--name", "trust", "--invite", bob, "--json")).objects[0]["room_id"]
    ok(nimbus(b, "join", room))
    seen = devices_of(b, alice)
    assert seen[dev1]["trust"] == "pinned" and seen[dev1]["signed_by_owner"] is True
    assert seen[dev2]["trust"] == "unsigned" and seen[dev2]["signed_by_owner"] is False
    assert seen[dev1]["blocked"] is False and seen[dev1]["curve25519"] and seen[dev1]["ed25519"]
    assert seen[dev1]["master_key"] == master and seen[dev1]["pinned_master_key"] == master
    assert seen[dev1]["identity_verified"] is False and seen[dev1]["identity_changed"] is False
    header = ok(nimbus(b, "devices", "--user", alice)).stdout
    assert f"{alice}: identity pinned" in header and "[unsigned]" in header

    # bob (cross_signed mode, the default) withholds his room key from alice's unsigned device.
    ok(nimbus(b, "send", room, "for signed devices only"))
    withheld = until(
        "alice2 to learn the key was withheld",
        lambda: "[withheld: m.unverified" in nimbus(a2, "history", room).stdout,
    )
    assert withheld
    as_json = ok(nimbus(a2, "history", room, "--json")).objects
    (msg,) = [m for m in as_json if m["sender"] == bob and m["encrypted"]]
    assert msg["decrypted"] is False and msg["cause"] == "withheld" and msg["code"] == "m.unverified"

    # Only a device holding the keys can sign; alice's first device signs her second.
    refused = nimbus(a2, "devices", "sign", dev2)
    assert refused.code == 1 and "private keys" in refused.stderr and "Traceback" not in refused.stderr
    unknown = nimbus(a1, "devices", "sign", "NOSUCHDEVICE")
    assert unknown.code == 1 and "NOSUCHDEVICE" in unknown.stderr
    signed = ok(nimbus(a1, "devices", "sign", dev2, "--json")).objects[0]
    assert signed == {"type": "device_signed", "user_id": alice, "device_id": dev2}
    until("bob to see alice's second device signed", lambda: devices_of(b, alice)[dev2]["trust"] == "pinned")
    until(
        "alice's second device to know it is signed",
        lambda: ok(nimbus(a2, "identity", "--json")).objects[0]["device_signed"],
    )
    assert "not cross-signed" not in ok(nimbus(a2, "identity")).stdout

    # Verifying needs the current master key (whole or grouped); a wrong one changes nothing.
    wrong = nimbus(b, "trust", "verify", alice, "A" * len(master), "--json")
    assert wrong.code == 1 and "not the current master key" in wrong.stderr
    assert devices_of(b, alice)[dev1]["trust"] == "pinned"
    groups = [master[i : i + 4] for i in range(0, len(master), 4)]
    verified = ok(nimbus(b, "trust", "verify", alice, *groups, "--json")).objects[0]
    assert verified["type"] == "identity_verified" and verified["verified"] is True
    after = devices_of(b, alice)
    assert after[dev1]["trust"] == "verified" and after[dev2]["trust"] == "verified"
    assert after[dev1]["identity_verified"] is True

    # Blocking a device shows in the listing; unblocking undoes it; an unknown device is refused.
    assert ok(nimbus(b, "trust", "block", alice, dev2, "--json")).objects[0]["blocked"] is True
    assert devices_of(b, alice)[dev2]["blocked"] is True
    assert "BLOCKED" in ok(nimbus(b, "devices", "--user", alice)).stdout
    ok(nimbus(b, "trust", "unblock", alice, dev2))
    assert devices_of(b, alice)[dev2]["blocked"] is False
    assert nimbus(b, "trust", "block", alice, "NOSUCHDEVICE").code == 1

    # `trust show` gives the identity first, then the devices; acknowledging an unchanged one is fine.
    shown = ok(nimbus(b, "trust", "show", alice, "--json")).objects
    assert shown[0]["type"] == "user_identity" and shown[0]["master_key"] == master
    assert shown[0]["verified"] is True and shown[0]["changed"] is False and shown[0]["pinned"] is True
    assert {d["device_id"] for d in shown[1:] if d["type"] == "device"} == {dev1, dev2}
    acked = ok(nimbus(a1, "trust", "acknowledge", bob, "--json")).objects[0]
    assert acked["type"] == "identity_acknowledged" and acked["pinned"] is True


def test_sharing_mode_setting_and_login_without_cross_signing(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    carol, password = new_user(homeserver, "carol")
    profile = tmp_path / "carol"
    login(profile, homeserver.client_url, carol, password, "--no-cross-signing")
    me = ok(nimbus(profile, "identity", "--json")).objects[0]
    assert me["master_key"] is None and me["device_signed"] is False and me["has_private_keys"] is False
    assert "no master key" in ok(nimbus(profile, "identity")).stdout

    def mode() -> str:
        return str(ok(nimbus(profile, "config", "sharing-mode", "--json")).objects[0]["value"])

    assert mode() == "cross_signed"  # the default
    set_legacy = ok(nimbus(profile, "config", "sharing-mode", "legacy", "--json")).objects[0]
    assert set_legacy == {"type": "config", "key": "sharing_mode", "value": "legacy", "changed": True}
    assert mode() == "legacy"
    assert "sharing-mode cross_signed" in ok(nimbus(profile, "config", "sharing-mode", "cross_signed")).stdout
    assert mode() == "cross_signed"
    bad = nimbus(profile, "config", "sharing-mode", "everyone")
    assert bad.code == 2 and "invalid choice" in bad.stderr  # argparse's usage error
