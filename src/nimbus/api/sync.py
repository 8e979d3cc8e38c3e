"""GET /sync: the request, and a parser that survives anything the network sends.

Spec: https://spec.matrix.org/v1.12/client-server-api/#syncing and #get_matrixclientv3sync;
device lists, one-time-key counts and fallback key types: #extensions-to-sync (E2EE module);
to-device: #extensions-to-sync-1 (send-to-device module).

Rules of `parse_sync`: the only exception it raises is MalformedResponse, and only when the body is not
an object or `next_batch` is missing/not a string (without it nothing can be stored). Anything else
of the wrong shape — a section, a room, an event, a list item — is skipped, counted
(`SyncBatch.skipped` for top-level and whole-room problems, `RoomUpdate.skipped` inside a room) and
logged at WARNING naming what was wrong, never its content.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nimbus.api.errors import MalformedResponse
from nimbus.api.request import QueryValue, Request
from nimbus.api.room_events import filter_param
from nimbus.types.errors import MalformedData
from nimbus.types.events import Event, RoomUpdate, StrippedState, SyncBatch, parse_event
from nimbus.types.ids import InvalidIdentifier, RoomId, UserId, parse_room_id

SYNC_PATH = "/_matrix/client/v3/sync"
SYNC_TIMEOUT_MARGIN = 10.0
"""Seconds added to the server-side long-poll timeout for the HTTP read timeout."""

JSONDict = dict[str, Any]
log = logging.getLogger("nimbus.api.sync")


def sync(
    *,
    since: str | None = None,
    timeout_ms: int = 30_000,
    filter: str | Mapping[str, Any] | None = None,
    full_state: bool = False,
    set_presence: str | None = None,
) -> Request:
    """The long-poll waits up to `timeout_ms` on the server; the HTTP timeout adds a margin."""
    # Spec: GET /_matrix/client/v3/sync (since, timeout, filter, full_state, set_presence)
    if set_presence is not None and set_presence not in ("offline", "online", "unavailable"):
        raise ValueError(f"unknown set_presence {set_presence!r}")
    query: dict[str, QueryValue] = {"timeout": str(max(0, timeout_ms))}
    if since is not None:
        query["since"] = since
    if filter is not None:
        query["filter"] = filter_param(filter)
    if full_state:
        query["full_state"] = "true"
    if set_presence is not None:
        query["set_presence"] = set_presence
    return Request("GET", SYNC_PATH, query=query, timeout=max(0, timeout_ms) / 1000 + SYNC_TIMEOUT_MARGIN)


class _Counter:
    """Counts and logs what a parse skipped."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0

    def skip(self, what: str) -> None:
        self.count += 1
        log.warning("sync: skipped %s in %s", what, self.where)


def _section(parent: Mapping[str, Any], key: str, counter: _Counter) -> JSONDict:
    """An optional object-valued field: {} when absent, {} and counted when of the wrong type."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        counter.skip(f"{key!r} (a {type(value).__name__}, not an object)")
        return {}
    return value


def _list(parent: Mapping[str, Any], key: str, counter: _Counter) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        counter.skip(f"{key!r} (a {type(value).__name__}, not a list)")
        return []
    return value


def _events(section: JSONDict, room_id: str, counter: _Counter, label: str) -> tuple[Event, ...]:
    out: list[Event] = []
    for raw in _list(section, "events", counter):
        try:
            out.append(parse_event(raw, room_id))
        except MalformedData as exc:
            counter.skip(f"a malformed {label} event ({exc})")
    return tuple(out)


def _typed_events(section: JSONDict, counter: _Counter, label: str, *, sender: bool) -> tuple[JSONDict, ...]:
    """Account data / to-device events: objects with a string `type` and object `content`."""
    out: list[JSONDict] = []
    for raw in _list(section, "events", counter):
        if (
            isinstance(raw, dict)
            and isinstance(raw.get("type"), str)
            and isinstance(raw.get("content"), dict)
            and (not sender or isinstance(raw.get("sender"), str))
        ):
            out.append(raw)
        else:
            counter.skip(f"a malformed {label} event")
    return tuple(out)


def _stripped(section: JSONDict, counter: _Counter) -> tuple[StrippedState, ...]:
    out: list[StrippedState] = []
    for raw in _list(section, "events", counter):
        if (
            isinstance(raw, dict)
            and isinstance(raw.get("type"), str)
            and isinstance(raw.get("state_key"), str)
            and isinstance(raw.get("sender"), str)
            and isinstance(raw.get("content"), dict)
        ):
            out.append(StrippedState(raw["type"], raw["state_key"], UserId(raw["sender"]), raw["content"]))
        else:
            counter.skip("a malformed invite_state event")
    return tuple(out)


def _room(room_id: RoomId, membership: str, raw: JSONDict) -> RoomUpdate:
    counter = _Counter(f"room {room_id} ({membership})")
    if membership == "invite":
        invite_state = _stripped(_section(raw, "invite_state", counter), counter)
        return RoomUpdate(room_id, membership, invite_state=invite_state, skipped=counter.count)
    state = _events(_section(raw, "state", counter), room_id, counter, "state")
    timeline_section = _section(raw, "timeline", counter)
    timeline = _events(timeline_section, room_id, counter, "timeline")
    limited_raw = timeline_section.get("limited", False)
    limited = limited_raw if isinstance(limited_raw, bool) else True  # unknown: assume a gap
    if not isinstance(limited_raw, bool):
        counter.skip("'limited' (not a boolean; treated as a gap)")
    prev_batch = timeline_section.get("prev_batch")
    if prev_batch is not None and not isinstance(prev_batch, str):
        counter.skip("'prev_batch' (not a string)")
        prev_batch = None
    account_data = _typed_events(
        _section(raw, "account_data", counter), counter, "room account_data", sender=False
    )
    return RoomUpdate(
        room_id=room_id,
        membership=membership,
        state=state,
        timeline=timeline,
        limited=limited,
        prev_batch=prev_batch,
        account_data=account_data,
        skipped=counter.count,
    )


def _rooms(rooms: JSONDict, counter: _Counter) -> tuple[RoomUpdate, ...]:
    out: list[RoomUpdate] = []
    for membership in ("join", "invite", "leave"):
        for key, raw in _section(rooms, membership, counter).items():
            try:
                room_id = parse_room_id(key)
            except InvalidIdentifier:
                counter.skip(f"a room under {membership!r} with an invalid room id")
                continue
            if not isinstance(raw, dict):
                counter.skip(f"room {room_id} under {membership!r} (not an object)")
                continue
            out.append(_room(room_id, membership, raw))
    return tuple(out)


def _user_ids(section: JSONDict, key: str, counter: _Counter) -> tuple[UserId, ...]:
    out: list[UserId] = []
    for item in _list(section, key, counter):
        if isinstance(item, str):
            out.append(UserId(item))
        else:
            counter.skip(f"a non-string user id in device_lists.{key}")
    return tuple(out)


def _otk_counts(body: JSONDict, counter: _Counter) -> dict[str, int]:
    out: dict[str, int] = {}
    for algorithm, count in _section(body, "device_one_time_keys_count", counter).items():
        if isinstance(count, int) and not isinstance(count, bool):
            out[algorithm] = count
        else:
            counter.skip("a non-integer one-time key count")
    return out


def _fallback_types(body: JSONDict, counter: _Counter) -> tuple[str, ...] | None:
    if "device_unused_fallback_key_types" not in body:
        return None  # the server does not support fallback keys (or said nothing)
    raw = body["device_unused_fallback_key_types"]
    if not isinstance(raw, list):
        counter.skip("'device_unused_fallback_key_types' (not a list)")
        return None
    types = tuple(t for t in raw if isinstance(t, str))
    if len(types) != len(raw):
        counter.skip("a non-string fallback key type")
    return types


def parse_sync(body: Any) -> SyncBatch:
    """Parse a /sync answer into a SyncBatch (see the module docstring for the error rules)."""
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}", SYNC_PATH)
    next_batch = body.get("next_batch")
    if not isinstance(next_batch, str):
        raise MalformedResponse("'next_batch' missing or not a string", SYNC_PATH)
    counter = _Counter("the sync response")
    rooms = _rooms(_section(body, "rooms", counter), counter)
    account_data = _typed_events(
        _section(body, "account_data", counter), counter, "account_data", sender=False
    )
    to_device = _typed_events(_section(body, "to_device", counter), counter, "to_device", sender=True)
    device_lists = _section(body, "device_lists", counter)
    return SyncBatch(
        next_batch=next_batch,
        rooms=rooms,
        account_data=account_data,
        to_device=to_device,
        device_lists_changed=_user_ids(device_lists, "changed", counter),
        device_lists_left=_user_ids(device_lists, "left", counter),
        one_time_keys_count=_otk_counts(body, counter),
        unused_fallback_key_types=_fallback_types(body, counter),
        skipped=counter.count,
    )
