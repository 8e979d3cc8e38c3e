"""parse_sync: a realistic body parses fully; anything else yields a SyncBatch or MalformedResponse."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nimbus.api.errors import MalformedResponse
from nimbus.api.sync import parse_sync
from nimbus.types.events import SyncBatch

JOINED = "!joined:example.org"
INVITED = "!invited:example.org"
LEFT = "!left:example.org"
SECRET_BODY = "secret plaintext that must not be logged"


def ev(
    event_id: str, etype: str, room_id: str, state_key: str | None = None, **content: Any
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "event_id": event_id,
        "type": etype,
        "sender": "@bob:example.org",
        "origin_server_ts": 1_700_000_000_000,
        "content": content,
        "room_id": room_id,
    }
    if state_key is not None:
        raw["state_key"] = state_key
    return raw


def realistic() -> dict[str, Any]:
    return {
        "next_batch": "s72595_4483_1934",
        "account_data": {"events": [{"type": "m.direct", "content": {"@bob:example.org": [JOINED]}}]},
        "presence": {"events": []},
        "to_device": {
            "events": [
                {
                    "type": "m.room.encrypted",
                    "sender": "@bob:example.org",
                    "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {}},
                }
            ]
        },
        "device_lists": {"changed": ["@bob:example.org"], "left": ["@carol:example.org"]},
        "device_one_time_keys_count": {"signed_curve25519": 20},
        "device_unused_fallback_key_types": ["signed_curve25519"],
        "rooms": {
            "join": {
                JOINED: {
                    "summary": {"m.joined_member_count": 2},
                    "state": {
                        "events": [ev("$create", "m.room.create", JOINED, "", creator="@bob:example.org")]
                    },
                    "timeline": {
                        "events": [
                            ev("$m1", "m.room.member", JOINED, "@alice:example.org", membership="join"),
                            ev("$t1", "m.room.message", JOINED, msgtype="m.text", body="hello"),
                        ],
                        "limited": True,
                        "prev_batch": "t34-23535_0_0",
                    },
                    "account_data": {"events": [{"type": "m.tag", "content": {"tags": {"u.work": {}}}}]},
                    "ephemeral": {"events": [{"type": "m.typing", "content": {"user_ids": []}}]},
                    "unread_notifications": {"highlight_count": 0, "notification_count": 1},
                }
            },
            "invite": {
                INVITED: {
                    "invite_state": {
                        "events": [
                            {
                                "type": "m.room.name",
                                "state_key": "",
                                "sender": "@bob:example.org",
                                "content": {"name": "Secret club"},
                            },
                            {
                                "type": "m.room.member",
                                "state_key": "@alice:example.org",
                                "sender": "@bob:example.org",
                                "content": {"membership": "invite"},
                            },
                        ]
                    }
                }
            },
            "leave": {
                LEFT: {
                    "state": {"events": []},
                    "timeline": {
                        "events": [
                            ev("$l1", "m.room.member", LEFT, "@alice:example.org", membership="leave")
                        ],
                        "limited": False,
                    },
                }
            },
        },
    }


def test_realistic_body_parses_fully() -> None:
    batch = parse_sync(realistic())
    assert batch.next_batch == "s72595_4483_1934" and batch.skipped == 0
    by_id = {r.room_id: r for r in batch.rooms}
    assert set(by_id) == {JOINED, INVITED, LEFT}
    joined = by_id[JOINED]  # type: ignore[index]
    assert joined.membership == "join" and joined.skipped == 0
    assert [e.event_id for e in joined.state] == ["$create"]
    assert [e.event_id for e in joined.timeline] == ["$m1", "$t1"]
    assert joined.timeline[1].content == {"msgtype": "m.text", "body": "hello"}
    assert joined.limited is True and joined.prev_batch == "t34-23535_0_0"
    assert joined.account_data == ({"type": "m.tag", "content": {"tags": {"u.work": {}}}},)
    invited = by_id[INVITED]  # type: ignore[index]
    assert invited.membership == "invite" and len(invited.invite_state) == 2
    assert (
        invited.invite_state[0].content == {"name": "Secret club"}
        and invited.invite_state[1].state_key == "@alice:example.org"
    )
    left = by_id[LEFT]  # type: ignore[index]
    assert left.membership == "leave" and left.timeline[0].event_id == "$l1" and left.limited is False
    assert batch.account_data[0]["type"] == "m.direct"
    assert batch.to_device[0]["type"] == "m.room.encrypted"
    assert batch.device_lists_changed == ("@bob:example.org",)
    assert batch.device_lists_left == ("@carol:example.org",)
    assert batch.one_time_keys_count == {"signed_curve25519": 20}
    assert batch.unused_fallback_key_types == ("signed_curve25519",)


def test_minimal_body() -> None:
    batch = parse_sync({"next_batch": "x"})
    assert batch == SyncBatch(next_batch="x")
    assert batch.unused_fallback_key_types is None  # absent: server has no fallback key support


@pytest.mark.parametrize("body", [None, [], "x", {"rooms": {}}, {"next_batch": 5}, {"next_batch": None}])
def test_missing_next_batch_is_malformed(body: Any) -> None:
    with pytest.raises(MalformedResponse, match="sync"):
        parse_sync(body)


def test_malformed_event_is_skipped_counted_and_logged_without_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = realistic()
    timeline = body["rooms"]["join"][JOINED]["timeline"]["events"]
    timeline.append(
        {"type": "m.room.message", "content": {"body": SECRET_BODY}, "sender": "@bob:example.org"}
    )
    timeline.append("not an event")
    with caplog.at_level(logging.WARNING):
        batch = parse_sync(body)
    joined = next(r for r in batch.rooms if r.room_id == JOINED)
    assert [e.event_id for e in joined.timeline] == ["$m1", "$t1"]
    assert joined.skipped == 2 and batch.skipped == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(SECRET_BODY not in r.getMessage() for r in caplog.records)


def test_wrong_typed_sections_are_skipped() -> None:
    body = realistic()
    body["account_data"] = []
    body["to_device"] = {"events": "nope"}
    body["device_lists"] = {"changed": ["@ok:x", 5], "left": "x"}
    body["device_one_time_keys_count"] = {"signed_curve25519": "20", "curve25519": 3}
    body["device_unused_fallback_key_types"] = {}
    body["rooms"]["leave"] = ["x"]
    body["rooms"]["join"]["not-a-room-id"] = {}
    body["rooms"]["join"]["!bad:example.org"] = "x"
    body["rooms"]["join"][JOINED]["timeline"]["limited"] = "yes"
    body["rooms"]["join"][JOINED]["timeline"]["prev_batch"] = 7
    body["rooms"]["join"][JOINED]["state"] = []
    batch = parse_sync(body)
    assert batch.account_data == () and batch.to_device == ()
    assert batch.device_lists_changed == ("@ok:x",) and batch.device_lists_left == ()
    assert batch.one_time_keys_count == {"curve25519": 3}
    assert batch.unused_fallback_key_types is None
    assert {r.room_id for r in batch.rooms} == {JOINED, INVITED}
    # account_data, to_device.events, changed[1], left, one OTK count, fallback types, leave,
    # one bad room id, one non-object room
    assert batch.skipped == 9
    joined = next(r for r in batch.rooms if r.room_id == JOINED)
    assert joined.limited is True and joined.prev_batch is None and joined.state == ()
    assert joined.skipped == 3


# --- property tests ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _check(body: Any) -> None:
    try:
        result = parse_sync(body)
    except MalformedResponse:
        return
    assert isinstance(result, SyncBatch)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_never_crashes(body: Any) -> None:
    _check(body)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_values.map(lambda v: {"next_batch": "n", "rooms": v}))
def test_random_rooms_section_never_crashes(body: Any) -> None:
    result = parse_sync(body)
    assert result.next_batch == "n"


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


ALL_PATHS = [p for p in _paths(realistic()) if p]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), json_values, st.booleans()), min_size=1, max_size=4))
def test_mutated_realistic_body_never_crashes(mutations: list[tuple[tuple[Any, ...], Any, bool]]) -> None:
    body = copy.deepcopy(realistic())
    for path, value, delete in mutations:
        parent: Any = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            if delete:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape
    _check(body)
    if isinstance(body.get("next_batch"), str):
        assert isinstance(parse_sync(body), SyncBatch)
