"""Response parsers: typed results from good bodies, MalformedResponse from wrong shapes."""

from __future__ import annotations

from typing import Any

import pytest

from nimbus.api import (
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
)
from nimbus.api.errors import MalformedResponse

ROOM = "!abc:example.org"


def ev(event_id: str = "$1", etype: str = "m.room.message", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": etype,
        "sender": "@a:example.org",
        "origin_server_ts": 1,
        "content": {"body": "x"},
        "room_id": ROOM,
        **extra,
    }


def test_versions() -> None:
    v = discovery.parse_versions({"versions": ["v1.11", "v1.12"], "unstable_features": {"a": True, "b": 1}})
    assert v.versions == ("v1.11", "v1.12") and v.supports("v1.12") and v.unstable_features == {"a": True}
    with pytest.raises(MalformedResponse):
        discovery.parse_versions({"versions": "v1.12"})


def test_well_known() -> None:
    wk = discovery.parse_well_known(
        {
            "m.homeserver": {"base_url": "https://matrix.example.org/"},
            "m.identity_server": {"base_url": "https://id.example.org"},
        }
    )
    assert wk.homeserver_base_url == "https://matrix.example.org"
    assert wk.identity_server_base_url == "https://id.example.org"
    assert (
        discovery.parse_well_known({"m.homeserver": {"base_url": "http://h"}}).identity_server_base_url
        is None
    )
    for bad in [
        {},
        {"m.homeserver": "x"},
        {"m.homeserver": {}},
        {"m.homeserver": {"base_url": "ftp://h"}},
        [],
    ]:
        with pytest.raises(MalformedResponse):
            discovery.parse_well_known(bad)


def test_login_keeps_token_out_of_repr() -> None:
    body = {
        "user_id": "@a:x",
        "access_token": "syt_SECRET",
        "device_id": "D",
        "well_known": {"m.homeserver": {"base_url": "https://x/"}},
    }
    lr = auth.parse_login(body)
    assert (lr.user_id, lr.access_token, lr.device_id, lr.homeserver_base_url) == (
        "@a:x",
        "syt_SECRET",
        "D",
        "https://x",
    )
    assert "syt_SECRET" not in repr(lr)
    with pytest.raises(MalformedResponse, match="access_token"):
        auth.parse_login({"user_id": "@a:x", "device_id": "D"})
    with pytest.raises(MalformedResponse):
        auth.parse_login({"user_id": 5, "access_token": "t", "device_id": "D"})
    assert admin.parse_register({"user_id": "@b:x", "access_token": "t", "device_id": "E"}).device_id == "E"
    assert admin.parse_nonce({"nonce": "abc"}) == "abc"


def test_whoami() -> None:
    w = auth.parse_whoami({"user_id": "@a:x", "device_id": "D", "is_guest": False})
    assert (w.user_id, w.device_id, w.is_guest) == ("@a:x", "D", False)
    with pytest.raises(MalformedResponse):
        auth.parse_whoami({"user_id": "@a:x", "is_guest": "no"})


def test_devices() -> None:
    ds = devices.parse_devices(
        {"devices": [{"device_id": "A", "display_name": "phone", "last_seen_ts": 5}, {"device_id": "B"}]}
    )
    assert [d.device_id for d in ds] == ["A", "B"] and ds[0].last_seen_ts == 5 and ds[1].display_name is None
    with pytest.raises(MalformedResponse):
        devices.parse_devices({"devices": [{"device_id": 1}]})
    with pytest.raises(MalformedResponse):
        devices.parse_devices({"devices": {}})


def test_room_ids_and_event_ids() -> None:
    assert rooms.parse_create_room({"room_id": ROOM}) == ROOM
    assert rooms.parse_join({"room_id": ROOM}) == ROOM
    assert room_events.parse_event_id_response({"event_id": "$e"}) == "$e"
    with pytest.raises(MalformedResponse):
        rooms.parse_create_room({"room": ROOM})
    with pytest.raises(MalformedResponse):
        room_events.parse_event_id_response({"event_id": None})


def test_state_members_joined_members() -> None:
    events, skipped = room_state.parse_room_state([ev("$1", "m.room.create", state_key=""), {"bad": 1}], ROOM)
    assert [e.event_id for e in events] == ["$1"] and skipped == 1
    with pytest.raises(MalformedResponse):
        room_state.parse_room_state({"chunk": []}, ROOM)
    members, skipped = room_state.parse_members(
        {"chunk": [ev("$m", "m.room.member", state_key="@a:x")]}, ROOM
    )
    assert members[0].state_key == "@a:x" and skipped == 0
    jm = room_state.parse_joined_members({"joined": {"@a:x": {"display_name": "A"}, "@b:x": {}}}, ROOM)
    assert jm["@a:x"].display_name == "A" and jm["@b:x"].avatar_url is None  # type: ignore[index]
    with pytest.raises(MalformedResponse):
        room_state.parse_joined_members({"joined": {"@a:x": "A"}}, ROOM)


def test_messages_and_context() -> None:
    page = room_events.parse_messages({"start": "s1", "end": "s0", "chunk": [ev("$2"), ev("$1"), 7]}, ROOM)
    assert (page.start, page.end, [e.event_id for e in page.chunk], page.skipped) == (
        "s1",
        "s0",
        ["$2", "$1"],
        1,
    )
    assert room_events.parse_messages({"start": "s1", "chunk": []}, ROOM).end is None
    with pytest.raises(MalformedResponse):
        room_events.parse_messages({"chunk": []}, ROOM)
    with pytest.raises(MalformedResponse):
        room_events.parse_messages({"start": "s", "chunk": "nope"}, ROOM)
    ctx = room_events.parse_context(
        {
            "event": ev("$e"),
            "events_before": [ev("$b")],
            "events_after": [],
            "state": [],
            "start": "a",
            "end": "b",
        },
        ROOM,
    )
    assert ctx.event.event_id == "$e" and ctx.events_before[0].event_id == "$b"
    with pytest.raises(MalformedResponse):
        room_events.parse_context({"event": {"type": "x"}}, ROOM)
    assert room_events.parse_get_event(ev("$x"), ROOM).event_id == "$x"
    with pytest.raises(MalformedResponse):
        room_events.parse_get_event(ev("$x", room_id="!other:x"), ROOM)


def test_keys_parsers() -> None:
    assert keys.parse_upload_keys({"one_time_key_counts": {"signed_curve25519": 50}}) == {
        "signed_curve25519": 50
    }
    with pytest.raises(MalformedResponse):
        keys.parse_upload_keys({"one_time_key_counts": {"signed_curve25519": "50"}})
    q = keys.parse_query_keys(
        {
            "device_keys": {"@a:x": {"D": {"keys": {}}}},
            "failures": {},
            "master_keys": {"@a:x": {"usage": ["master"]}},
        }
    )
    assert q.device_keys["@a:x"]["D"] == {"keys": {}} and q.master_keys["@a:x"]["usage"] == ["master"]  # type: ignore[index]
    with pytest.raises(MalformedResponse):
        keys.parse_query_keys({"device_keys": {"@a:x": ["D"]}})
    c = keys.parse_claim_keys({"one_time_keys": {"@a:x": {"D": {"signed_curve25519:A": {"key": "k"}}}}})
    assert c.one_time_keys["@a:x"]["D"]["signed_curve25519:A"] == {"key": "k"}  # type: ignore[index]
    ch = keys.parse_key_changes({"changed": ["@a:x"], "left": []})
    assert ch.changed == ("@a:x",) and ch.left == ()
    with pytest.raises(MalformedResponse):
        keys.parse_key_changes({"changed": [1]})


def test_room_keys_parsers() -> None:
    assert room_keys.parse_create_backup_version({"version": "1"}) == "1"
    bv = room_keys.parse_backup_version(
        {"version": "1", "algorithm": "a", "auth_data": {"public_key": "k"}, "count": 3, "etag": "e"}
    )
    assert (bv.version, bv.count, bv.etag, bv.auth_data) == ("1", 3, "e", {"public_key": "k"})
    with pytest.raises(MalformedResponse):
        room_keys.parse_backup_version({"version": "1", "algorithm": "a", "count": 3, "etag": "e"})
    assert room_keys.parse_put_room_keys({"etag": "e2", "count": 4}) == ("e2", 4)
    got = room_keys.parse_room_keys({"rooms": {ROOM: {"sessions": {"s": {"first_message_index": 0}}}}})
    assert got == {ROOM: {"s": {"first_message_index": 0}}}
    with pytest.raises(MalformedResponse):
        room_keys.parse_room_keys({"rooms": {ROOM: {"sessions": {"s": 1}}}})


def test_media_profile_filter_parsers() -> None:
    assert media.parse_upload({"content_uri": "mxc://x/abc"}) == "mxc://x/abc"
    with pytest.raises(MalformedResponse):
        media.parse_upload({"content_uri": "https://x/abc"})
    pr = profile.parse_profile({"displayname": "A"})
    assert (pr.displayname, pr.avatar_url) == ("A", None)
    with pytest.raises(MalformedResponse):
        profile.parse_profile({"displayname": 1})
    assert filters.parse_upload_filter({"filter_id": "12"}) == "12"
    with pytest.raises(MalformedResponse):
        filters.parse_upload_filter({"filter_id": 12})
