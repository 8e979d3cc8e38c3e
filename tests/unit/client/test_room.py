"""The room model: names, members, edits, reactions, replies and redactions over stored events."""

from __future__ import annotations

from itertools import count
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nimbus.client.room import Message, Room, build_room, build_timeline
from nimbus.types.events import Event, parse_event
from nimbus.types.ids import RoomId, UserId

ROOM = RoomId("!r:example.org")
ME = UserId("@me:example.org")
BOB = UserId("@bob:example.org")
CAROL = UserId("@carol:example.org")
_ids = count(1)


def ev(
    type: str = "m.room.message",
    sender: str = BOB,
    content: dict[str, Any] | None = None,
    *,
    state_key: str | None = None,
    ts: int | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> Event:
    n = next(_ids)
    raw: dict[str, Any] = {
        "event_id": event_id or f"$e{n}",
        "type": type,
        "sender": sender,
        "origin_server_ts": ts if ts is not None else n,
        "content": content if content is not None else {"msgtype": "m.text", "body": f"text {n}"},
        **extra,
    }
    if state_key is not None:
        raw["state_key"] = state_key
    return parse_event(raw, ROOM)


def text(body: str, sender: str = BOB, **kw: Any) -> Event:
    return ev(content={"msgtype": "m.text", "body": body}, sender=sender, **kw)


def member(user: str, membership: str = "join", name: str | None = None, ts: int | None = None) -> Event:
    content: dict[str, Any] = {"membership": membership}
    if name is not None:
        content["displayname"] = name
    return ev("m.room.member", user, content, state_key=user, ts=ts)


def edit(target: Event, body: str, sender: str | None = None, **kw: Any) -> Event:
    return ev(
        content={
            "msgtype": "m.text",
            "body": f"* {body}",
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target.event_id},
        },
        sender=sender or target.sender,
        **kw,
    )


def react(target: Event, key: str, sender: str = BOB) -> Event:
    return ev(
        "m.reaction",
        sender,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": target.event_id, "key": key}},
    )


def redact(target: Event, sender: str = BOB) -> Event:
    return ev("m.room.redaction", sender, {"redacts": target.event_id})


def room(
    state: list[Event], timeline: list[Event] | None = None, direct: dict[str, Any] | None = None
) -> Room:
    return build_room(ROOM, "join", state, timeline or [], ME, direct)


def by_id(messages: list[Message]) -> dict[str, Message]:
    return {m.event_id: m for m in messages}


# -- names and members -----------------------------------------------------------------------------


def test_name_from_m_room_name_then_canonical_alias() -> None:
    people = [member(ME), member(BOB)]
    alias = ev("m.room.canonical_alias", content={"alias": "#party:example.org"}, state_key="")
    assert room([*people, alias, ev("m.room.name", content={"name": "Party"}, state_key="")]).name == "Party"
    assert room([*people, alias, ev("m.room.name", content={"name": ""}, state_key="")]).name == (
        "#party:example.org"
    )
    assert room([*people, ev("m.room.name", content={"name": 5}, state_key="")]).name == "@bob:example.org"


def test_name_from_members() -> None:
    me = member(ME, ts=1)
    bob, carol = member(BOB, name="Bob", ts=2), member(CAROL, "invite", name="Carol", ts=3)
    dan = member("@dan:example.org", ts=4)
    assert room([me, bob]).name == "Bob"
    assert room([me, carol, bob]).name == "Bob and Carol"  # in membership order
    assert room([me, bob, carol, dan]).name == "Bob, Carol, and @dan:example.org"
    many = [member(f"@u{i}:example.org", name=f"U{i}", ts=10 + i) for i in range(7)]
    assert room([me, *many]).name == "U0, U1, U2, U3, U4, and 2 others"
    six = [member(f"@u{i}:example.org", name=f"U{i}", ts=10 + i) for i in range(6)]
    assert room([me, *six]).name == "U0, U1, U2, U3, U4, and 1 other"


def test_empty_room_names() -> None:
    assert room([member(ME)]).name == "Empty Room"
    assert room([member(ME), member(BOB, "leave", name="Bob")]).name == "Empty Room (was Bob)"
    assert room([member(ME), member(BOB, "ban"), member(CAROL, "leave", name="Carol")]).name == (
        "Empty Room (was @bob:example.org and Carol)"
    )


def test_duplicate_display_names_are_disambiguated() -> None:
    r = room([member(ME), member(BOB, name="Sam", ts=1), member(CAROL, name="Sam", ts=2)])
    assert r.name == "Sam (@bob:example.org) and Sam (@carol:example.org)"
    # someone who left does not make a name ambiguous
    r = room([member(ME), member(BOB, name="Sam", ts=1), member(CAROL, "leave", name="Sam", ts=2)])
    assert r.name == "Sam"


def test_members_counts_topic_direct_and_encryption() -> None:
    state = [
        member(ME, name="Me"),
        member(BOB),
        member(CAROL, "invite"),
        member("@gone:example.org", "leave"),
        ev("m.room.member", BOB, {"membership": 3}, state_key="@bad:example.org"),  # malformed: skipped
        ev("m.room.topic", content={"topic": "Plans"}, state_key=""),
        ev("m.room.encryption", content={"algorithm": "m.megolm.v1.aes-sha2"}, state_key=""),
    ]
    r = room(state, direct={BOB: [ROOM], CAROL: "not a list"})
    assert (r.joined_count, r.invited_count) == (2, 1)
    assert set(r.members) == {ME, BOB, CAROL, "@gone:example.org"}
    assert r.members[ME].displayname == "Me" and r.members[BOB].displayname is None
    assert r.topic == "Plans"
    assert r.is_direct and r.encrypted
    assert r.encryption == {"algorithm": "m.megolm.v1.aes-sha2"}
    plain = room([member(ME)], direct={BOB: ["!other:example.org"]})
    assert not plain.is_direct and not plain.encrypted and plain.encryption is None and plain.topic is None


def test_state_events_are_timeline_items() -> None:
    join = member(CAROL)
    msg = text("hi")
    items = room([member(ME)], [join, msg]).timeline
    assert [(m.type, m.state_key) for m in items] == [("m.room.member", CAROL), ("m.room.message", None)]
    assert items[0].content == {"membership": "join"} and items[0].body is None


# -- edits -----------------------------------------------------------------------------------------


def test_valid_edit_applies_and_is_not_an_item() -> None:
    original = text("helo")
    e1 = edit(original, "hello", ts=100)
    e2 = edit(original, "hello!", ts=100)  # same ts: the later one in order wins
    items = build_timeline([original, e1, e2])
    assert [m.event_id for m in items] == [original.event_id]
    m = items[0]
    assert (m.body, m.edited, m.edit_event_id) == ("hello!", True, e2.event_id)
    assert m.content == {"msgtype": "m.text", "body": "hello!"}


def test_latest_edit_by_timestamp_wins() -> None:
    original = text("a")
    newer, older = edit(original, "newer", ts=200), edit(original, "older", ts=150)
    m = build_timeline([original, newer, older])[0]
    assert (m.body, m.edit_event_id) == ("newer", newer.event_id)


def test_edit_from_another_sender_or_type_is_ignored() -> None:
    original = text("mine", sender=BOB)
    forged = edit(original, "forged", sender=CAROL)
    other_type = ev(
        "m.sticker",
        BOB,
        {
            "body": "x",
            "m.new_content": {"body": "y"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original.event_id},
        },
    )
    no_new_content = ev(
        content={"body": "*", "m.relates_to": {"rel_type": "m.replace", "event_id": original.event_id}}
    )
    items = build_timeline([original, forged, other_type, no_new_content])
    assert [m.event_id for m in items] == [original.event_id]
    assert (items[0].body, items[0].edited) == ("mine", False)


def test_redacted_edit_no_longer_applies() -> None:
    original = text("v1")
    e1, e2 = edit(original, "v2"), edit(original, "v3")
    m = by_id(build_timeline([original, e1, e2, redact(e2)]))[original.event_id]
    assert (m.body, m.edit_event_id) == ("v2", e1.event_id)
    m = by_id(build_timeline([original, e1, redact(e1)]))[original.event_id]
    assert (m.body, m.edited) == ("v1", False)


def test_edit_of_an_edit_is_ignored() -> None:
    original = text("v1")
    e1 = edit(original, "v2")
    e_of_e = edit(e1, "v3")
    items = build_timeline([original, e1, e_of_e])
    assert [(m.event_id, m.body) for m in items] == [(original.event_id, "v2")]


# -- reactions -------------------------------------------------------------------------------------


def test_reactions_count_each_sender_once_per_key() -> None:
    msg = text("party")
    events = [
        msg,
        react(msg, "👍", BOB),
        react(msg, "👍", BOB),
        react(msg, "👍", CAROL),
        react(msg, "🎉", BOB),
    ]
    items = build_timeline(events)
    assert [m.event_id for m in items] == [msg.event_id]
    assert items[0].reactions == {"👍": [BOB, CAROL], "🎉": [BOB]}


def test_redacted_reaction_is_removed() -> None:
    msg = text("party")
    r1, r2 = react(msg, "👍", BOB), react(msg, "👍", CAROL)
    assert build_timeline([msg, r1, r2, redact(r1)])[0].reactions == {"👍": [CAROL]}
    assert build_timeline([msg, r1, redact(r1)])[0].reactions == {}


def test_malformed_reactions_and_unknown_targets_are_ignored() -> None:
    msg = text("x")
    bad_key = ev(
        "m.reaction", BOB, {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg.event_id, "key": 1}}
    )
    unknown = ev(
        "m.reaction", BOB, {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$nope", "key": "a"}}
    )
    items = build_timeline([msg, bad_key, unknown])
    assert [m.event_id for m in items] == [msg.event_id] and items[0].reactions == {}


# -- replies ---------------------------------------------------------------------------------------


def test_replies_expose_reply_to_even_after_an_edit() -> None:
    question = text("where?")
    answer = ev(content={"body": "here", "m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}})
    fixed = edit(answer, "over here")
    broken = ev(content={"body": "b", "m.relates_to": {"m.in_reply_to": "not an object"}})
    items = by_id(build_timeline([question, answer, fixed, broken]))
    assert items[answer.event_id].reply_to == question.event_id
    assert items[answer.event_id].body == "over here"
    assert items[broken.event_id].reply_to is None
    assert items[question.event_id].reply_to is None


# -- redactions ------------------------------------------------------------------------------------


def test_redaction_removes_content() -> None:
    msg = text("oops")
    r = redact(msg)
    items = build_timeline([msg, r])
    assert [m.event_id for m in items] == [msg.event_id]
    m = items[0]
    assert (m.redacted, m.redacted_by, m.body, m.content, m.msgtype) == (True, r.event_id, None, {}, None)


def test_redaction_of_an_edited_message_and_old_style_redacts() -> None:
    msg = text("v1")
    e = edit(msg, "v2")
    old_style = ev("m.room.redaction", BOB, {}, redacts=msg.event_id)  # room versions < 11
    m = build_timeline([msg, e, old_style])[0]
    assert m.redacted and not m.edited and m.body is None


def test_redactions_of_unknown_events_are_ignored() -> None:
    msg = text("stay")
    items = build_timeline(
        [msg, ev("m.room.redaction", BOB, {"redacts": "$unknown"}), ev("m.room.redaction", BOB, {})]
    )
    assert [(m.event_id, m.redacted, m.body) for m in items] == [(msg.event_id, False, "stay")]


def test_redaction_needs_sender_or_power() -> None:
    msg = text("bob's")
    by_carol = redact(msg, CAROL)
    levels = ev("m.room.power_levels", ME, {"users": {CAROL: 50}, "redact": 50}, state_key="")
    assert not room([member(ME)], [msg, by_carol]).timeline[0].redacted
    assert room([member(ME), levels], [msg, by_carol]).timeline[0].redacted


def test_server_side_redaction_is_shown() -> None:
    msg = ev(content={}, unsigned={"redacted_because": {"event_id": "$r", "type": "m.room.redaction"}})
    m = build_timeline([msg])[0]
    assert (m.redacted, m.redacted_by) == (True, "$r")


def test_redacted_member_event_keeps_membership() -> None:
    join = member(CAROL, name="Carol")
    m = build_timeline([join, redact(join, CAROL)])[0]
    assert m.redacted and m.content == {"membership": "join"}


# -- robustness ------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_relates = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "rel_type": st.sampled_from(["m.replace", "m.annotation", "m.thread"]) | _json,
            "event_id": st.just("$target") | _json,
            "key": _json,
            "m.in_reply_to": _json | st.fixed_dictionaries({"event_id": _json}),
        },
    ),
)


@given(
    etype=st.sampled_from(["m.room.message", "m.reaction", "m.room.redaction"]),
    relates=_relates,
    new_content=_json,
    redacts=_json,
)
def test_malformed_relations_never_raise(etype: str, relates: Any, new_content: Any, redacts: Any) -> None:
    target = ev(event_id="$target")
    odd = ev(
        etype,
        content={"body": "?", "m.relates_to": relates, "m.new_content": new_content, "redacts": redacts},
    )
    items = build_timeline([target, odd])
    assert items[0].event_id == "$target"
