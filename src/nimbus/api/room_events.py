"""Sending, redacting and fetching room events: send, redact, /messages, /context, /event.

Spec: https://spec.matrix.org/v1.12/client-server-api/#sending-events-to-a-room (PUT with a client
transaction id: repeating it returns the same event id, so these requests are retry-safe),
#redactions, #get_matrixclientv3roomsroomidmessages (pagination),
#get_matrixclientv3roomsroomidcontexteventid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.errors import MalformedResponse
from nimbus.api.request import QueryValue, Request, quote
from nimbus.types.errors import MalformedData
from nimbus.types.events import Event, parse_event
from nimbus.types.ids import EventId

CLIENT_V3 = "/_matrix/client/v3"


def _room(room_id: str) -> str:
    return f"{CLIENT_V3}/rooms/{quote(room_id)}"


def filter_param(filter: str | Mapping[str, Any]) -> str:
    """A filter id, or an inline filter serialised as compact JSON (spec: "Filtering")."""
    if isinstance(filter, str):
        return filter
    return json.dumps(filter, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class MessagesPage:
    """One page of /messages. `end` is None when there is nothing more in that direction."""

    start: str
    end: str | None
    chunk: tuple[Event, ...]
    state: tuple[Event, ...] = ()
    skipped: int = 0


@dataclass(frozen=True)
class EventContext:
    event: Event
    events_before: tuple[Event, ...]
    events_after: tuple[Event, ...]
    state: tuple[Event, ...]
    start: str | None = None
    end: str | None = None
    skipped: int = 0


def send_event(room_id: str, event_type: str, content: Mapping[str, Any], txn_id: str) -> Request:
    # Spec: PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
    path = f"{_room(room_id)}/send/{quote(event_type)}/{quote(txn_id)}"
    return Request("PUT", path, json=dict(content), retry_safe=True)


def redact(room_id: str, event_id: str, txn_id: str, reason: str | None = None) -> Request:
    # Spec: PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
    path = f"{_room(room_id)}/redact/{quote(event_id)}/{quote(txn_id)}"
    body: dict[str, Any] = {} if reason is None else {"reason": reason}
    return Request("PUT", path, json=body, retry_safe=True)


def parse_event_id_response(body: Any, what: str = "send") -> EventId:
    """`{"event_id": ...}` from send, redact and PUT state."""
    return EventId(p.req_str(p.obj(body, what), "event_id", what))


def messages(
    room_id: str,
    *,
    dir: str = "b",
    from_token: str | None = None,
    to_token: str | None = None,
    limit: int | None = None,
    filter: str | Mapping[str, Any] | None = None,
) -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/messages
    if dir not in ("b", "f"):
        raise ValueError("dir must be 'b' or 'f'")
    query: dict[str, QueryValue] = {"dir": dir}
    if from_token is not None:
        query["from"] = from_token
    if to_token is not None:
        query["to"] = to_token
    if limit is not None:
        query["limit"] = str(limit)
    if filter is not None:
        query["filter"] = filter_param(filter)
    return Request("GET", f"{_room(room_id)}/messages", query=query)


def parse_messages(body: Any, room_id: str) -> MessagesPage:
    what = f"{_room(room_id)}/messages"
    data = p.obj(body, what)
    chunk, skipped_c = p.events(p.opt_list(data, "chunk", what), room_id, what)
    state, skipped_s = p.events(p.opt_list(data, "state", what), room_id, what)
    return MessagesPage(
        start=p.req_str(data, "start", what),
        end=p.opt_str(data, "end", what),
        chunk=chunk,
        state=state,
        skipped=skipped_c + skipped_s,
    )


def context(
    room_id: str,
    event_id: str,
    *,
    limit: int | None = None,
    filter: str | Mapping[str, Any] | None = None,
) -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
    query: dict[str, QueryValue] = {}
    if limit is not None:
        query["limit"] = str(limit)
    if filter is not None:
        query["filter"] = filter_param(filter)
    return Request("GET", f"{_room(room_id)}/context/{quote(event_id)}", query=query)


def _one_event(raw: Any, room_id: str, what: str) -> Event:
    try:
        return parse_event(raw, room_id)
    except MalformedData as exc:
        raise MalformedResponse(f"the event is malformed: {exc}", what) from None


def parse_context(body: Any, room_id: str) -> EventContext:
    what = f"{_room(room_id)}/context"
    data = p.obj(body, what)
    before, s1 = p.events(p.opt_list(data, "events_before", what), room_id, what)
    after, s2 = p.events(p.opt_list(data, "events_after", what), room_id, what)
    state, s3 = p.events(p.opt_list(data, "state", what), room_id, what)
    return EventContext(
        event=_one_event(data.get("event"), room_id, what),
        events_before=before,
        events_after=after,
        state=state,
        start=p.opt_str(data, "start", what),
        end=p.opt_str(data, "end", what),
        skipped=s1 + s2 + s3,
    )


def get_event(room_id: str, event_id: str) -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
    return Request("GET", f"{_room(room_id)}/event/{quote(event_id)}")


def parse_get_event(body: Any, room_id: str) -> Event:
    return _one_event(body, room_id, f"{_room(room_id)}/event")
