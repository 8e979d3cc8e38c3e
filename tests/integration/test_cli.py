"""The `nimbus` CLI against a real Synapse: every command, --json output, exit codes, the profile lock."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from nimbus.homeserver import Homeserver
from tests.integration.cli import PASSPHRASE, NewUser, command, env_with, login, nimbus

pytestmark = pytest.mark.integration


@pytest.fixture
def alice(homeserver: Homeserver, new_user: NewUser, tmp_path: Path) -> tuple[Path, str, str]:
    user_id, password = new_user(homeserver, "alice")
    profile = tmp_path / "alice"
    login(profile, homeserver.client_url, user_id, password)
    return profile, user_id, password


@pytest.fixture
def bob(homeserver: Homeserver, new_user: NewUser, tmp_path: Path) -> tuple[Path, str, str]:
    user_id, password = new_user(homeserver, "bob")
    profile = tmp_path / "bob"
    login(profile, homeserver.client_url, user_id, password)
    return profile, user_id, password


def room_with(alice: tuple[Path, str, str], bob: tuple[Path, str, str]) -> str:
    created = nimbus(alice[0], "create-room", "--name", "ops", "--invite", bob[1], "--json")
    assert created.code == 0, created.stderr
    room_id = created.objects[0]["room_id"]
    joined = nimbus(bob[0], "join", room_id, "--json")
    assert joined.code == 0, joined.stderr
    return str(room_id)


def test_login_whoami_rooms_and_logout(alice: tuple[Path, str, str], bob: tuple[Path, str, str]) -> None:
    profile, user_id, _ = alice
    me = nimbus(profile, "whoami", "--json")
    assert me.code == 0 and me.objects[0]["user_id"] == user_id
    readable = nimbus(profile, "whoami")
    assert user_id in readable.stdout

    room_id = room_with(alice, bob)
    rooms = nimbus(profile, "rooms", "--json")
    assert rooms.code == 0
    (room,) = [r for r in rooms.objects if r["room_id"] == room_id]
    assert room["name"] == "ops" and room["membership"] == "join" and room["joined"] == 2

    out = nimbus(profile, "logout", "--json")
    assert out.code == 0
    again = nimbus(profile, "whoami")
    assert again.code == 1 and "not logged in" in again.stderr


def test_send_history_and_stdin_for_scripts(alice: tuple[Path, str, str], bob: tuple[Path, str, str]) -> None:
    room_id = room_with(alice, bob)
    sent = nimbus(alice[0], "send", room_id, "first message", "--json")
    assert sent.code == 0, sent.stderr
    assert sent.objects[0]["event_id"].startswith("$")
    piped = nimbus(alice[0], "send", room_id, "--notice", "--json", input="disk /var at 93%\n")
    assert piped.code == 0, piped.stderr
    lines = nimbus(alice[0], "send", room_id, "--lines", "--json", input="alert one\n\nalert two\n")
    assert lines.code == 0 and len(lines.objects) == 2

    history = nimbus(bob[0], "history", room_id, "--json")
    assert history.code == 0, history.stderr
    bodies = [m["body"] for m in history.objects if m["event_type"] == "m.room.message"]
    assert bodies == ["first message", "disk /var at 93%", "alert one", "alert two"]
    notices = [m for m in history.objects if m["body"] == "disk /var at 93%"]
    assert notices[0]["msgtype"] == "m.notice"
    readable = nimbus(bob[0], "history", room_id)
    assert f"{alice[1]}: first message" in readable.stdout


def test_tail_follows_new_messages_and_times_out_with_code_2(
    alice: tuple[Path, str, str], bob: tuple[Path, str, str]
) -> None:
    room_id = room_with(alice, bob)
    nimbus(alice[0], "send", room_id, "old news")
    tail = subprocess.Popen(
        command(bob[0], "tail", room_id, "--count", "2", "--timeout", "60", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env_with(),
    )
    try:
        assert tail.stderr is not None
        line = tail.stderr.readline()  # "following ROOM": it has caught up and is waiting
        assert "following" in line
        assert nimbus(alice[0], "send", room_id, "news 1").code == 0
        assert nimbus(alice[0], "send", room_id, "news 2").code == 0
        out, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0
    import json

    got = [json.loads(x)["body"] for x in out.splitlines()]
    assert got == ["news 1", "news 2"]  # not the old message, each new one once

    started = time.monotonic()
    quiet = nimbus(bob[0], "tail", room_id, "--count", "1", "--timeout", "2", "--json")
    assert quiet.code == 2, quiet.stderr
    assert "timeout" in quiet.stderr and time.monotonic() - started < 30


def test_profile_lock_refuses_a_second_writer(
    alice: tuple[Path, str, str], bob: tuple[Path, str, str]
) -> None:
    room_id = room_with(alice, bob)
    tail = subprocess.Popen(
        command(bob[0], "tail", room_id, "--timeout", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env_with(),
    )
    try:
        assert tail.stderr is not None and "following" in tail.stderr.readline()
        second = nimbus(bob[0], "history", room_id)
        assert second.code == 1
        assert "in use by another nimbus process" in second.stderr and str(tail.pid) in second.stderr
    finally:
        tail.kill()
        tail.wait()
    assert nimbus(bob[0], "history", room_id).code == 0  # the kernel dropped the lock with the process


def test_devices_list_and_revoke_an_old_device(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    user_id, password = new_user(homeserver, "carol")
    old, new = tmp_path / "old", tmp_path / "new"
    old_device = login(old, homeserver.client_url, user_id, password).objects[0]["device_id"]
    login(new, homeserver.client_url, user_id, password)
    listed = nimbus(new, "devices", "--json")
    assert listed.code == 0
    assert old_device in {d["device_id"] for d in listed.objects}
    assert [d["current"] for d in listed.objects].count(True) == 1

    wrong = nimbus(
        new, "devices", "delete", old_device, "--password-env", "PW", env=env_with(PW="wrong-password")
    )
    assert wrong.code == 1 and wrong.stderr
    deleted = nimbus(
        new, "devices", "delete", old_device, "--password-env", "PW", "--json", env=env_with(PW=password)
    )
    assert deleted.code == 0, deleted.stderr
    assert old_device not in {d["device_id"] for d in nimbus(new, "devices", "--json").objects}
    revoked = nimbus(old, "whoami")
    assert (revoked.code == 1 and "UnknownToken" in revoked.stderr) or "token" in revoked.stderr.lower()


def access_token_of(profile: Path) -> str:
    from nimbus.store import SqliteStore

    async def read() -> str:
        store = await SqliteStore.open(profile / "store.db", passphrase=PASSPHRASE)
        session = await store.load_session()
        await store.close()
        assert session is not None
        return session.access_token

    return asyncio.run(read())


def test_rooms_are_encrypted_and_the_server_sees_only_ciphertext(
    alice: tuple[Path, str, str], bob: tuple[Path, str, str], homeserver: Homeserver
) -> None:
    room_id = room_with(alice, bob)
    rooms = nimbus(alice[0], "rooms", "--json")
    assert [r["encrypted"] for r in rooms.objects if r["room_id"] == room_id] == [True]
    sent = nimbus(alice[0], "send", room_id, "secret plans", "--json")
    assert sent.code == 0, sent.stderr
    event_id = sent.objects[0]["event_id"]

    raw = httpx.get(
        f"{homeserver.client_url}/_matrix/client/v3/rooms/{room_id}/event/{event_id}",
        headers={"Authorization": f"Bearer {access_token_of(alice[0])}"},
    )
    assert raw.status_code == 200
    assert raw.json()["type"] == "m.room.encrypted" and "secret plans" not in raw.text

    history = nimbus(bob[0], "history", room_id, "--json")
    (mine,) = [m for m in history.objects if m["event_id"] == event_id]
    assert mine["body"] == "secret plans" and mine["encrypted"] and mine["decrypted"]
    assert mine["sender_device"]


def test_an_unencrypted_room_on_request(alice: tuple[Path, str, str], homeserver: Homeserver) -> None:
    created = nimbus(alice[0], "create-room", "--unencrypted", "--name", "announcements", "--json")
    room_id = created.objects[0]["room_id"]
    sent = nimbus(alice[0], "send", room_id, "public notice", "--json")
    assert sent.code == 0, sent.stderr
    raw = httpx.get(
        f"{homeserver.client_url}/_matrix/client/v3/rooms/{room_id}/event/{sent.objects[0]['event_id']}",
        headers={"Authorization": f"Bearer {access_token_of(alice[0])}"},
    )
    assert raw.json()["type"] == "m.room.message" and raw.json()["content"]["body"] == "public notice"


def test_wrong_passphrase_is_a_clear_error_and_changes_nothing(alice: tuple[Path, str, str]) -> None:
    before = (alice[0] / "store.db").read_bytes()
    wrong = nimbus(alice[0], "whoami", env=env_with(NIMBUS_PASSPHRASE="not the passphrase"))
    assert wrong.code == 1 and "passphrase" in wrong.stderr.lower()
    assert (alice[0] / "store.db").read_bytes() == before
    assert nimbus(alice[0], "whoami").code == 0


def test_bad_input_gets_a_clear_error(alice: tuple[Path, str, str], tmp_path: Path) -> None:
    not_a_room = nimbus(alice[0], "send", "not-a-room", "hi")
    assert not_a_room.code == 1 and "not a room id" in not_a_room.stderr
    unknown = nimbus(alice[0], "history", "!nosuchroom:localhost")
    assert unknown.code == 1 and unknown.stderr
    no_profile = nimbus(tmp_path / "nobody", "rooms")
    assert no_profile.code == 1 and "nimbus login" in no_profile.stderr
    no_password = nimbus(tmp_path / "p", "login", "http://127.0.0.1:9", "@x:localhost")
    assert no_password.code == 1 and "password" in no_password.stderr
    unreachable = nimbus(
        tmp_path / "q",
        "login",
        "http://127.0.0.1:9",
        "@x:localhost",
        "--password-env",
        "PW",
        env=env_with(PW="x"),
    )
    assert unreachable.code == 1 and "homeserver" in unreachable.stderr


def test_a_device_with_a_forged_signature_is_refused_and_listed(
    alice: tuple[Path, str, str], homeserver: Homeserver, new_user: NewUser
) -> None:
    """mallory uploads device keys whose self-signature does not verify (the server does not check
    signatures; nimbus must): nimbus refuses the device and says so."""
    import base64
    import os

    mallory, password = new_user(homeserver, "mallory")
    login = httpx.post(
        f"{homeserver.client_url}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": mallory},
            "password": password,
        },
    ).json()
    device, token = login["device_id"], login["access_token"]

    def b64(n: int) -> str:
        return base64.b64encode(os.urandom(n)).decode().rstrip("=")

    keys = {
        "user_id": mallory,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device}": b64(32), f"ed25519:{device}": b64(32)},
        "signatures": {mallory: {f"ed25519:{device}": b64(64)}},
    }
    upload = httpx.post(
        f"{homeserver.client_url}/_matrix/client/v3/keys/upload",
        headers={"Authorization": f"Bearer {token}"},
        json={"device_keys": keys},
    )
    assert upload.status_code == 200
    listed = nimbus(alice[0], "devices", "--user", mallory, "--json")
    assert listed.code == 0, listed.stderr
    assert [d["type"] for d in listed.objects] == ["refused_device"]
    assert listed.objects[0]["device_id"] == device and "signature" in listed.objects[0]["reason"]
