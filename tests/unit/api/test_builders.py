"""Endpoint builders: exact methods, encoded paths, queries and bodies."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from nimbus.api import (
    account_data,
    admin,
    auth,
    devices,
    discovery,
    filters,
    keys,
    media,
    profile,
    room_events,
    room_keys,
    room_state,
    rooms,
    sync,
    to_device,
)

ROOM = "!abc:example.org"
ROOM_ENC = "%21abc%3Aexample.org"
USER = "@alice:example.org"
USER_ENC = "%40alice%3Aexample.org"
V3 = "/_matrix/client/v3"


def test_discovery_needs_no_token() -> None:
    r = discovery.versions()
    assert (r.method, r.path, r.auth) == ("GET", "/_matrix/client/versions", False)
    w = discovery.well_known()
    assert (w.method, w.path, w.auth) == ("GET", "/.well-known/matrix/client", False)


def test_login_password_body() -> None:
    r = auth.login_password("alice", "s3cret", device_id="DEV", initial_device_display_name="laptop")
    assert (r.method, r.path, r.auth) == ("POST", f"{V3}/login", False)
    assert r.json == {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "s3cret",
        "device_id": "DEV",
        "initial_device_display_name": "laptop",
    }
    assert not r.is_retry_safe()
    minimal = auth.login_password(USER, "pw")
    assert minimal.json is not None and set(minimal.json) == {"type", "identifier", "password"}


def test_logout_and_whoami() -> None:
    assert (auth.logout().method, auth.logout().path, auth.logout().json) == ("POST", f"{V3}/logout", {})
    assert auth.logout_all().path == f"{V3}/logout/all"
    assert (auth.whoami().method, auth.whoami().path, auth.whoami().auth) == (
        "GET",
        f"{V3}/account/whoami",
        True,
    )


def test_devices() -> None:
    assert devices.list_devices().path == f"{V3}/devices"
    assert devices.get_device("A/B C").path == f"{V3}/devices/A%2FB%20C"
    upd = devices.update_device("DEV", "phone")
    assert (upd.method, upd.json) == ("PUT", {"display_name": "phone"})
    d0 = devices.delete_device("DEV")
    assert (d0.method, d0.path, d0.json) == ("DELETE", f"{V3}/devices/DEV", {})
    d1 = devices.delete_device("DEV", {"type": "m.login.password", "session": "s"})
    assert d1.json == {"auth": {"type": "m.login.password", "session": "s"}}
    many = devices.delete_devices(["A", "B"], {"session": "s"})
    assert (many.method, many.path) == ("POST", f"{V3}/delete_devices")
    assert many.json == {"devices": ["A", "B"], "auth": {"session": "s"}}


def test_admin_shared_secret_register() -> None:
    nonce = admin.register_nonce()
    assert (nonce.method, nonce.path, nonce.auth) == ("GET", "/_synapse/admin/v1/register", False)
    r = admin.register_with_shared_secret("sekrit", "n0nce", "bob", "pw", admin=True, displayname="Bob")
    assert (r.method, r.path, r.auth, r.is_retry_safe()) == (
        "POST",
        "/_synapse/admin/v1/register",
        False,
        False,
    )
    expected = hmac.new(b"sekrit", b"n0nce\x00bob\x00pw\x00admin", hashlib.sha1).hexdigest()
    assert r.json == {
        "nonce": "n0nce",
        "username": "bob",
        "password": "pw",
        "admin": True,
        "mac": expected,
        "displayname": "Bob",
    }
    plain = admin.register_with_shared_secret("sekrit", "n0nce", "bob", "pw")
    assert plain.json is not None
    assert (
        plain.json["mac"] == hmac.new(b"sekrit", b"n0nce\x00bob\x00pw\x00notadmin", hashlib.sha1).hexdigest()
    )


def test_create_room_full_and_minimal() -> None:
    assert rooms.create_room().json == {}
    pl = {"users": {USER: 100}}
    state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
    r = rooms.create_room(
        name="n",
        topic="t",
        invite=[USER],
        is_direct=True,
        preset="trusted_private_chat",
        initial_state=state,
        power_level_content_override=pl,
    )
    assert (r.method, r.path) == ("POST", f"{V3}/createRoom")
    assert r.json == {
        "name": "n",
        "topic": "t",
        "invite": [USER],
        "is_direct": True,
        "preset": "trusted_private_chat",
        "initial_state": state,
        "power_level_content_override": pl,
    }
    with pytest.raises(ValueError):
        rooms.create_room(preset="everyone")


def test_membership() -> None:
    inv = rooms.invite(ROOM, USER)
    assert (inv.method, inv.path, inv.json) == ("POST", f"{V3}/rooms/{ROOM_ENC}/invite", {"user_id": USER})
    j = rooms.join("#room:example.org", via=["a.org", "b.org"])
    assert (j.method, j.path) == ("POST", f"{V3}/join/%23room%3Aexample.org")
    assert dict(j.query) == {"via": ("a.org", "b.org"), "server_name": ("a.org", "b.org")}
    assert rooms.join(ROOM).query == {}
    assert rooms.leave(ROOM).path == f"{V3}/rooms/{ROOM_ENC}/leave"
    assert rooms.forget(ROOM).path == f"{V3}/rooms/{ROOM_ENC}/forget"


def test_room_state_and_members() -> None:
    assert room_state.room_state(ROOM).path == f"{V3}/rooms/{ROOM_ENC}/state"
    one = room_state.state_event(ROOM, "m.room.member", USER)
    assert one.path == f"{V3}/rooms/{ROOM_ENC}/state/m.room.member/{USER_ENC}"
    assert room_state.state_event(ROOM, "m.room.name").path == f"{V3}/rooms/{ROOM_ENC}/state/m.room.name/"
    put = room_state.put_state_event(ROOM, "m.room.topic", {"topic": "x"})
    assert (put.method, put.json, put.is_retry_safe()) == ("PUT", {"topic": "x"}, True)
    m = room_state.members(ROOM, at="s1", membership="join")
    assert (m.path, dict(m.query)) == (f"{V3}/rooms/{ROOM_ENC}/members", {"at": "s1", "membership": "join"})
    assert room_state.joined_members(ROOM).path == f"{V3}/rooms/{ROOM_ENC}/joined_members"


def test_send_and_redact_are_retry_safe_puts_with_txn() -> None:
    s = room_events.send_event(ROOM, "m.room.message", {"msgtype": "m.text", "body": "hi"}, "t/1")
    assert (s.method, s.path) == ("PUT", f"{V3}/rooms/{ROOM_ENC}/send/m.room.message/t%2F1")
    assert s.json == {"msgtype": "m.text", "body": "hi"} and s.is_retry_safe()
    r = room_events.redact(ROOM, "$ev:x", "t2", reason="spam")
    assert (r.method, r.path) == ("PUT", f"{V3}/rooms/{ROOM_ENC}/redact/%24ev%3Ax/t2")
    assert r.json == {"reason": "spam"} and r.is_retry_safe()


def test_messages_context_event() -> None:
    m = room_events.messages(
        ROOM,
        dir="f",
        from_token="s1",
        to_token="s2",
        limit=20,
        filter={"types": ["m.room.message"], "lazy_load_members": True},
    )
    assert (m.method, m.path) == ("GET", f"{V3}/rooms/{ROOM_ENC}/messages")
    assert dict(m.query) == {
        "dir": "f",
        "from": "s1",
        "to": "s2",
        "limit": "20",
        "filter": '{"lazy_load_members":true,"types":["m.room.message"]}',
    }
    assert dict(room_events.messages(ROOM).query) == {"dir": "b"}
    with pytest.raises(ValueError):
        room_events.messages(ROOM, dir="x")
    c = room_events.context(ROOM, "$e", limit=5)
    assert (c.path, dict(c.query)) == (f"{V3}/rooms/{ROOM_ENC}/context/%24e", {"limit": "5"})
    assert room_events.get_event(ROOM, "$e").path == f"{V3}/rooms/{ROOM_ENC}/event/%24e"


def test_sync_request_timeout_has_margin() -> None:
    r = sync.sync(since="s9", timeout_ms=30_000, filter="7", full_state=True, set_presence="offline")
    assert (r.method, r.path) == ("GET", f"{V3}/sync")
    assert dict(r.query) == {
        "since": "s9",
        "timeout": "30000",
        "filter": "7",
        "full_state": "true",
        "set_presence": "offline",
    }
    assert r.timeout == pytest.approx(30.0 + sync.SYNC_TIMEOUT_MARGIN)
    assert sync.SYNC_TIMEOUT_MARGIN > 0
    first = sync.sync(timeout_ms=0)
    assert dict(first.query) == {"timeout": "0"} and first.timeout == pytest.approx(sync.SYNC_TIMEOUT_MARGIN)
    with pytest.raises(ValueError):
        sync.sync(set_presence="busy")


def test_send_to_device() -> None:
    r = to_device.send_to_device("m.room.encrypted", {USER: {"DEV": {"ciphertext": "x"}}}, "txn1")
    assert (r.method, r.path) == ("PUT", f"{V3}/sendToDevice/m.room.encrypted/txn1")
    assert r.json == {"messages": {USER: {"DEV": {"ciphertext": "x"}}}} and r.is_retry_safe()


def test_keys() -> None:
    up = keys.upload_keys(device_keys={"user_id": USER}, one_time_keys={"signed_curve25519:A": {}})
    assert (up.method, up.path) == ("POST", f"{V3}/keys/upload")
    assert up.json == {"device_keys": {"user_id": USER}, "one_time_keys": {"signed_curve25519:A": {}}}
    q = keys.query_keys([USER], timeout_ms=10_000)
    assert (q.path, q.json, q.is_retry_safe()) == (
        f"{V3}/keys/query",
        {"device_keys": {USER: []}, "timeout": 10_000},
        True,
    )
    assert keys.query_keys({USER: ["D1"]}).json == {"device_keys": {USER: ["D1"]}}
    c = keys.claim_keys({USER: {"D1": "signed_curve25519"}})
    assert (c.path, c.json, c.is_retry_safe()) == (
        f"{V3}/keys/claim",
        {"one_time_keys": {USER: {"D1": "signed_curve25519"}}},
        False,
    )
    ch = keys.key_changes("a", "b")
    assert (ch.method, ch.path, dict(ch.query)) == ("GET", f"{V3}/keys/changes", {"from": "a", "to": "b"})


def test_room_keys() -> None:
    cv = room_keys.create_backup_version("m.megolm_backup.v1.curve25519-aes-sha2", {"public_key": "k"})
    assert (cv.method, cv.path) == ("POST", f"{V3}/room_keys/version")
    assert room_keys.get_backup_version().path == f"{V3}/room_keys/version"
    assert room_keys.get_backup_version("2").path == f"{V3}/room_keys/version/2"
    d = room_keys.delete_backup_version("2")
    assert (d.method, d.path) == ("DELETE", f"{V3}/room_keys/version/2")
    put = room_keys.put_room_keys("2", {ROOM: {"sess": {"first_message_index": 0}}})
    assert (put.method, put.path, dict(put.query)) == ("PUT", f"{V3}/room_keys/keys", {"version": "2"})
    assert put.json == {"rooms": {ROOM: {"sessions": {"sess": {"first_message_index": 0}}}}}
    g = room_keys.get_room_keys("2", ROOM, "s/1")
    assert g.path == f"{V3}/room_keys/keys/{ROOM_ENC}/s%2F1"


def test_media() -> None:
    up = media.upload(b"\x89PNG", "image/png", filename="a b.png")
    assert (up.method, up.path, up.content, up.content_type) == (
        "POST",
        "/_matrix/media/v3/upload",
        b"\x89PNG",
        "image/png",
    )
    assert dict(up.query) == {"filename": "a b.png"} and up.json is None
    dl = media.download("mxc://example.org:8448/AbC_1-2")
    assert (dl.method, dl.path, dl.auth) == (
        "GET",
        "/_matrix/client/v1/media/download/example.org%3A8448/AbC_1-2",
        True,
    )
    assert media.parse_mxc("mxc://example.org/abc") == ("example.org", "abc")
    for bad in [
        "http://example.org/abc",
        "mxc://example.org",
        "mxc://example.org/a/b",
        "mxc:///abc",
        "mxc://e.org/a.b",
    ]:
        with pytest.raises(media.InvalidMxcUri):
            media.parse_mxc(bad)


def test_account_data_profile_filter() -> None:
    g = account_data.get_account_data(USER, "m.direct")
    assert (g.method, g.path) == ("GET", f"{V3}/user/{USER_ENC}/account_data/m.direct")
    p = account_data.put_account_data(USER, "m.tag", {"tags": {}}, room_id=ROOM)
    assert (p.method, p.path, p.json) == (
        "PUT",
        f"{V3}/user/{USER_ENC}/rooms/{ROOM_ENC}/account_data/m.tag",
        {"tags": {}},
    )
    assert profile.get_profile(USER).path == f"{V3}/profile/{USER_ENC}"
    dn = profile.set_displayname(USER, "Alice")
    assert (dn.method, dn.path, dn.json) == (
        "PUT",
        f"{V3}/profile/{USER_ENC}/displayname",
        {"displayname": "Alice"},
    )
    av = profile.set_avatar_url(USER, "mxc://e/x")
    assert (av.path, av.json) == (f"{V3}/profile/{USER_ENC}/avatar_url", {"avatar_url": "mxc://e/x"})
    f = filters.upload_filter(USER, {"room": {"timeline": {"limit": 10}}})
    assert (f.method, f.path, f.json) == (
        "POST",
        f"{V3}/user/{USER_ENC}/filter",
        {"room": {"timeline": {"limit": 10}}},
    )
    assert filters.get_filter(USER, "5").path == f"{V3}/user/{USER_ENC}/filter/5"
