"""Room events and sync shapes as plain, immutable data.

Spec: https://spec.matrix.org/v1.12/client-server-api/#events and "Syncing" (GET /sync).
`parse_event` validates only what every event must have; content is checked by whoever reads it.
An event that fails here is skipped and logged by the sync loop, never stored half-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nimbus.types.errors import MalformedData
from nimbus.types.ids import EventId, RoomId, UserId

JSONDict = dict[str, Any]


class MalformedEvent(MalformedData):
    """An event lacks a required field or has one of the wrong type."""


@dataclass(frozen=True)
class Event:
    """A room event (timeline or state). `raw` keeps the event as received, for storage."""

    event_id: EventId
    type: str
    sender: UserId
    origin_server_ts: int
    content: JSONDict
    room_id: RoomId
    state_key: str | None = None
    unsigned: JSONDict = field(default_factory=dict)
    raw: JSONDict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def transaction_id(self) -> str | None:
        """`unsigned.transaction_id`: present only on our own device's events (spec: /sync)."""
        value = self.unsigned.get("transaction_id")
        return value if isinstance(value, str) else None


def _require(raw: JSONDict, key: str, kind: type) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"event field {key!r} missing or not {kind.__name__}")
    return value


def parse_event(raw: Any, room_id: str) -> Event:
    """Validate one room event from /sync, /messages or /event. Raises MalformedEvent."""
    if not isinstance(raw, dict):
        raise MalformedEvent(f"event is {type(raw).__name__}, not an object")
    event_id = _require(raw, "event_id", str)
    etype = _require(raw, "type", str)
    sender = _require(raw, "sender", str)
    ts = _require(raw, "origin_server_ts", int)
    content = _require(raw, "content", dict)
    state_key = raw.get("state_key")
    if state_key is not None and not isinstance(state_key, str):
        raise MalformedEvent("event field 'state_key' is not a string")
    unsigned = raw.get("unsigned", {})
    if not isinstance(unsigned, dict):
        raise MalformedEvent("event field 'unsigned' is not an object")
    rid = raw.get("room_id", room_id)
    if not isinstance(rid, str) or rid != room_id:
        raise MalformedEvent("event room_id does not match the room it came in")
    return Event(
        event_id=EventId(event_id),
        type=etype,
        sender=UserId(sender),
        origin_server_ts=ts,
        content=content,
        room_id=RoomId(room_id),
        state_key=state_key,
        unsigned=unsigned,
        raw=raw,
    )


@dataclass(frozen=True)
class StrippedState:
    """A stripped state event from an invite (spec: "Stripped state")."""

    type: str
    state_key: str
    sender: UserId
    content: JSONDict


@dataclass(frozen=True)
class RoomUpdate:
    """What one /sync said about one room.

    `membership` is our own membership section: "join", "invite", "leave" (knock is not handled yet).
    `skipped` counts events that failed `parse_event` (logged, not stored).
    """

    room_id: RoomId
    membership: str
    state: tuple[Event, ...] = ()
    timeline: tuple[Event, ...] = ()
    limited: bool = False
    prev_batch: str | None = None
    account_data: tuple[JSONDict, ...] = ()
    invite_state: tuple[StrippedState, ...] = ()
    skipped: int = 0


@dataclass(frozen=True)
class SyncBatch:
    """One parsed /sync response. The store saves it, with `next_batch`, in one transaction."""

    next_batch: str
    rooms: tuple[RoomUpdate, ...] = ()
    account_data: tuple[JSONDict, ...] = ()
    to_device: tuple[JSONDict, ...] = ()
    device_lists_changed: tuple[UserId, ...] = ()
    device_lists_left: tuple[UserId, ...] = ()
    one_time_keys_count: dict[str, int] = field(default_factory=dict)
    unused_fallback_key_types: tuple[str, ...] | None = None
    skipped: int = 0
