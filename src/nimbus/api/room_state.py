"""Room state and members: GET /state, /state/{type}/{key}, PUT state, /members, /joined_members.

Spec: https://spec.matrix.org/v1.12/client-server-api/#getting-events-for-a-room.
GET /rooms/{roomId}/state answers a JSON *array*: send it with `Transport.send_json`. Malformed events
in lists are skipped and logged (count returned), as in /sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.errors import MalformedResponse
from nimbus.api.request import QueryValue, Request, quote
from nimbus.types.events import Event
from nimbus.types.ids import UserId

CLIENT_V3 = "/_matrix/client/v3"


def _room(room_id: str) -> str:
    return f"{CLIENT_V3}/rooms/{quote(room_id)}"


@dataclass(frozen=True)
class JoinedMember:
    display_name: str | None = None
    avatar_url: str | None = None


def room_state(room_id: str) -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/state (answer: array of events)
    return Request("GET", f"{_room(room_id)}/state")


def parse_room_state(body: Any, room_id: str) -> tuple[tuple[Event, ...], int]:
    """Events and the number skipped as malformed."""
    what = f"{_room(room_id)}/state"
    if not isinstance(body, list):
        raise MalformedResponse(f"expected a JSON array, got {type(body).__name__}", what)
    return p.events(body, room_id, what)


def state_event(room_id: str, event_type: str, state_key: str = "") -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey} (answer: content)
    return Request("GET", f"{_room(room_id)}/state/{quote(event_type)}/{quote(state_key)}")


def put_state_event(
    room_id: str, event_type: str, content: Mapping[str, Any], state_key: str = ""
) -> Request:
    # Spec: PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey} (idempotent)
    path = f"{_room(room_id)}/state/{quote(event_type)}/{quote(state_key)}"
    return Request("PUT", path, json=dict(content), retry_safe=True)


def members(
    room_id: str,
    *,
    at: str | None = None,
    membership: str | None = None,
    not_membership: str | None = None,
) -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/members
    query: dict[str, QueryValue] = {}
    if at is not None:
        query["at"] = at
    if membership is not None:
        query["membership"] = membership
    if not_membership is not None:
        query["not_membership"] = not_membership
    return Request("GET", f"{_room(room_id)}/members", query=query)


def parse_members(body: Any, room_id: str) -> tuple[tuple[Event, ...], int]:
    what = f"{_room(room_id)}/members"
    data = p.obj(body, what)
    return p.events(p.opt_list(data, "chunk", what), room_id, what)


def joined_members(room_id: str) -> Request:
    # Spec: GET /_matrix/client/v3/rooms/{roomId}/joined_members
    return Request("GET", f"{_room(room_id)}/joined_members")


def parse_joined_members(body: Any, room_id: str) -> dict[UserId, JoinedMember]:
    what = f"{_room(room_id)}/joined_members"
    joined = p.opt_obj(p.obj(body, what), "joined", what)
    out: dict[UserId, JoinedMember] = {}
    for user_id, info in joined.items():
        info = p.obj(info, what)
        out[UserId(user_id)] = JoinedMember(
            display_name=p.opt_str(info, "display_name", what),
            avatar_url=p.opt_str(info, "avatar_url", what),
        )
    return out
