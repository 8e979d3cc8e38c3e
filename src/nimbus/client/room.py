"""The room model: what a UI shows for a room, computed from stored events. Pure functions, no I/O.

Owns: `build_room` and the `Room`, `Member` and `Message` values. Rules:
- Input is the room's current state (authoritative, e.g. `Store.state_events`) and a chronological
  slice of its timeline (e.g. `Store.timeline`). Relations only act within that slice: an edit,
  reaction or redaction whose target is not in it is ignored.
- Edits (m.replace) and reactions (m.annotation) fold into their target and are not items of their
  own; redaction events are not items either. Every other event, state events included, is an item.
- Malformed content never raises: a relation that does not have the spec's shape is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nimbus.types.events import Event
from nimbus.types.ids import EventId, RoomId, UserId

JSONDict = dict[str, Any]
_State = dict[tuple[str, str], Event]

_HERO_LIMIT = 5
# Spec: https://spec.matrix.org/v1.12/rooms/v11/#redactions — content keys a redaction keeps (subset).
_KEPT_ON_REDACTION: dict[str, tuple[str, ...]] = {
    "m.room.member": ("membership", "join_authorised_via_users_server"),
    "m.room.join_rules": ("join_rule", "allow"),
    "m.room.history_visibility": ("history_visibility",),
    "m.room.power_levels": (
        "ban",
        "events",
        "events_default",
        "invite",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    ),
}
_INFINITE = float("inf")


@dataclass(frozen=True)
class Member:
    user_id: UserId
    membership: str
    displayname: str | None


@dataclass(frozen=True)
class Message:
    """One timeline item. `content`/`body`/`msgtype` are the latest valid edit's, if edited."""

    event_id: EventId
    sender: UserId
    ts: int
    type: str
    msgtype: str | None
    body: str | None
    content: JSONDict
    edited: bool = False
    edit_event_id: EventId | None = None
    reply_to: EventId | None = None
    reactions: dict[str, list[UserId]] = field(default_factory=dict)
    redacted: bool = False
    redacted_by: EventId | None = None
    transaction_id: str | None = None
    state_key: str | None = None
    e2ee: JSONDict | None = None
    """None for a plaintext event; else {"decrypted": bool, "sender_device", "verified"} or the
    failure {"decrypted": False, "cause", "code", "reason"} (set by the client from its decrypted cache)."""


@dataclass(frozen=True)
class Room:
    room_id: RoomId
    name: str
    topic: str | None
    members: dict[UserId, Member]
    joined_count: int
    invited_count: int
    is_direct: bool
    encrypted: bool
    encryption: JSONDict | None
    membership: str | None
    timeline: list[Message]
    # Local notices about the room's members, newest state (e.g. "the identity of @bob:hs changed").
    notices: list[str] = field(default_factory=list)


def build_room(
    room_id: RoomId,
    membership: str | None,
    state: list[Event],
    timeline: list[Event],
    own_user_id: UserId,
    direct: JSONDict | None,
) -> Room:
    """The room as a UI shows it. `direct` is the content of the m.direct account data, if any."""
    current: _State = {(e.type, e.state_key): e for e in state if e.state_key is not None}
    members = _members(current.values())
    encryption_ev = current.get(("m.room.encryption", ""))
    topic = _str(current.get(("m.room.topic", "")), "topic")
    return Room(
        room_id=room_id,
        name=room_name(current, members, own_user_id),
        topic=topic,
        members=members,
        joined_count=sum(1 for m in members.values() if m.membership == "join"),
        invited_count=sum(1 for m in members.values() if m.membership == "invite"),
        is_direct=_is_direct(room_id, direct),
        encrypted=encryption_ev is not None,
        encryption=dict(encryption_ev.content) if encryption_ev is not None else None,
        membership=membership,
        timeline=build_timeline(timeline, _power(current)),
    )


# -- members and names ----------------------------------------------------------------------------


def _members(state: Iterable[Event]) -> dict[UserId, Member]:
    out: dict[UserId, Member] = {}
    for event in state:
        if event.type != "m.room.member" or not event.state_key:
            continue
        membership = event.content.get("membership")
        if not isinstance(membership, str):
            continue
        name = event.content.get("displayname")
        user = UserId(event.state_key)
        out[user] = Member(user, membership, name if isinstance(name, str) and name else None)
    return out


def _str(event: Event | None, key: str) -> str | None:
    value = event.content.get(key) if event is not None else None
    return value if isinstance(value, str) and value else None


def display_name(user: UserId, members: dict[UserId, Member]) -> str:
    """Spec: https://spec.matrix.org/v1.12/client-server-api/#calculating-the-display-name-for-a-user"""
    member = members.get(user)
    if member is None or member.displayname is None:
        return user
    same = sum(
        1
        for m in members.values()
        if m.displayname == member.displayname and m.membership in ("join", "invite")
    )
    return member.displayname if same <= 1 else f"{member.displayname} ({user})"


def _join_names(names: list[str], others: int = 0) -> str:
    if others > 0:
        names = [*names, f"{others} other" if others == 1 else f"{others} others"]
    if len(names) <= 1:
        return "".join(names)
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return ", ".join(names[:-1]) + f", and {names[-1]}"


def room_name(current: _State, members: dict[UserId, Member], own: UserId) -> str:
    """Spec: https://spec.matrix.org/v1.12/client-server-api/#calculating-the-display-name-for-a-room

    Heroes are computed locally (no room summary is stored): up to 5 other joined/invited members in
    the order of their membership events, or, if there are none, the ones who left or were banned.
    """
    name = _str(current.get(("m.room.name", "")), "name")
    if name is not None:
        return name
    alias = _str(current.get(("m.room.canonical_alias", "")), "alias")
    if alias is not None:
        return alias

    def order(user: UserId) -> tuple[int, str]:
        event = current.get(("m.room.member", user))
        return (event.origin_server_ts if event is not None else 0, user)

    others = sorted((u for u in members if u != own), key=order)
    active = [u for u in others if members[u].membership in ("join", "invite")]
    gone = [u for u in others if members[u].membership in ("leave", "ban")]
    total = sum(1 for m in members.values() if m.membership in ("join", "invite"))
    if total <= 1:
        heroes = gone[:_HERO_LIMIT]
        if not heroes:
            return "Empty Room"
        names = [display_name(u, members) for u in heroes]
        return f"Empty Room (was {_join_names(names, len(gone) - len(heroes))})"
    heroes = active[:_HERO_LIMIT]
    names = [display_name(u, members) for u in heroes]
    return _join_names(names, max(0, total - 1 - len(heroes)))


def _is_direct(room_id: RoomId, direct: JSONDict | None) -> bool:
    """Spec: https://spec.matrix.org/v1.12/client-server-api/#direct-messaging (m.direct: user → rooms)."""
    if not isinstance(direct, dict):
        return False
    return any(isinstance(rooms, list) and room_id in rooms for rooms in direct.values())


# -- power, for redactions ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Power:
    users: dict[str, float]
    default: float
    redact: float

    def of(self, user: str) -> float:
        return self.users.get(user, self.default)


def _num(value: Any, fallback: float) -> float:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else fallback


def _power(current: _State) -> _Power:
    """Spec: https://spec.matrix.org/v1.12/client-server-api/#mroompower_levels

    Without a power levels event the room creator has 100; room v12 creators rank above everyone.
    """
    create = current.get(("m.room.create", ""))
    creators: dict[str, float] = {}
    if create is not None:
        creators[create.sender] = _INFINITE if create.content.get("room_version") == "12" else 100.0
        extra = create.content.get("additional_creators")
        for user in extra if isinstance(extra, list) else []:
            if isinstance(user, str):
                creators[user] = _INFINITE
    levels = current.get(("m.room.power_levels", ""))
    if levels is None:
        return _Power(creators, 0.0, 50.0)
    users_raw = levels.content.get("users")
    users = {
        u: _num(v, 0.0)
        for u, v in (users_raw.items() if isinstance(users_raw, dict) else [])
        if isinstance(u, str)
    }
    users.update({u: p for u, p in creators.items() if p == _INFINITE})
    return _Power(
        users, _num(levels.content.get("users_default"), 0.0), _num(levels.content.get("redact"), 50.0)
    )


# -- the timeline ---------------------------------------------------------------------------------


def _relation(event: Event) -> tuple[str, EventId, JSONDict] | None:
    """(rel_type, target, m.relates_to) if the event has a well-formed relation, else None."""
    rel = event.content.get("m.relates_to")
    if not isinstance(rel, dict):
        return None
    rel_type, target = rel.get("rel_type"), rel.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(target, str):
        return None
    return rel_type, EventId(target), rel


def _reply_to(content: JSONDict) -> EventId | None:
    """Spec: https://spec.matrix.org/v1.12/client-server-api/#rich-replies"""
    rel = content.get("m.relates_to")
    reply = rel.get("m.in_reply_to") if isinstance(rel, dict) else None
    target = reply.get("event_id") if isinstance(reply, dict) else None
    return EventId(target) if isinstance(target, str) else None


def _redacts(event: Event) -> EventId | None:
    """Spec: https://spec.matrix.org/v1.12/client-server-api/#redactions

    Room v11 moved `redacts` into content; older versions have it at the top level (kept in `raw`).
    """
    target = event.content.get("redacts", event.raw.get("redacts"))
    return EventId(target) if isinstance(target, str) else None


def _is_edit(event: Event) -> bool:
    rel = _relation(event)
    return rel is not None and rel[0] == "m.replace" and event.state_key is None


def build_timeline(events: list[Event], power: _Power | None = None) -> list[Message]:
    """Timeline items, in order, with edits, reactions and redactions applied."""
    power = power or _Power({}, 0.0, 50.0)
    by_id = {e.event_id: e for e in events}
    order = {e.event_id: i for i, e in enumerate(events)}

    redacted_by: dict[EventId, EventId] = {}
    for event in events:
        prior = event.unsigned.get("redacted_because")
        if isinstance(prior, dict) and isinstance(prior.get("event_id"), str):
            redacted_by.setdefault(event.event_id, EventId(prior["event_id"]))
    for event in events:
        if event.type != "m.room.redaction":
            continue
        target_id = _redacts(event)
        target = by_id.get(target_id) if target_id is not None else None
        if target is None or target_id is None or target.type == "m.room.redaction":
            continue  # unknown events are ignored; redacting a redaction undoes nothing
        if event.sender == target.sender or power.of(event.sender) >= power.redact:
            redacted_by.setdefault(target_id, event.event_id)

    # Spec: "Event replacements" — same sender, same type, not itself an edit, not redacted.
    edits: dict[EventId, Event] = {}
    for event in events:
        rel = _relation(event)
        if rel is None or not _is_edit(event) or event.event_id in redacted_by:
            continue
        original = by_id.get(rel[1])
        new_content = event.content.get("m.new_content")
        if (
            original is None
            or not isinstance(new_content, dict)
            or original.sender != event.sender
            or original.type != event.type
            or original.state_key is not None
            or _is_edit(original)
        ):
            continue
        best = edits.get(original.event_id)
        if best is None or (event.origin_server_ts, order[event.event_id]) > (
            best.origin_server_ts,
            order[best.event_id],
        ):
            edits[original.event_id] = event

    # Spec: "Reactions" — one per (sender, key); redacted reactions do not count.
    reactions: dict[EventId, dict[str, list[UserId]]] = {}
    for event in events:
        rel = _relation(event)
        if event.type != "m.reaction" or rel is None or rel[0] != "m.annotation":
            continue
        key = rel[2].get("key")
        if event.event_id in redacted_by or not isinstance(key, str) or rel[1] not in by_id:
            continue
        senders = reactions.setdefault(rel[1], {}).setdefault(key, [])
        if event.sender not in senders:
            senders.append(event.sender)

    items = []
    for event in events:
        if event.type in ("m.reaction", "m.room.redaction") or _is_edit(event):
            continue
        items.append(_message(event, edits.get(event.event_id), reactions, redacted_by))
    return items


def _message(
    event: Event,
    edit: Event | None,
    reactions: dict[EventId, dict[str, list[UserId]]],
    redacted_by: dict[EventId, EventId],
) -> Message:
    redaction = redacted_by.get(event.event_id)
    if redaction is not None:
        keep = _KEPT_ON_REDACTION.get(event.type, ())
        content: JSONDict = {k: v for k, v in event.content.items() if k in keep}
        edit = None
    elif edit is not None:
        content = dict(edit.content["m.new_content"])
    else:
        content = dict(event.content)
    msgtype, body = content.get("msgtype"), content.get("body")
    return Message(
        event_id=event.event_id,
        sender=event.sender,
        ts=event.origin_server_ts,
        type=event.type,
        msgtype=msgtype if isinstance(msgtype, str) else None,
        body=body if isinstance(body, str) else None,
        content=content,
        edited=edit is not None,
        edit_event_id=edit.event_id if edit is not None else None,
        reply_to=_reply_to(event.content) if redaction is None else None,
        reactions={k: list(v) for k, v in reactions.get(event.event_id, {}).items()},
        redacted=redaction is not None,
        redacted_by=redaction,
        transaction_id=event.transaction_id,
        state_key=event.state_key,
    )
