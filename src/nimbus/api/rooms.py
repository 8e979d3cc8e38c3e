"""Room creation and membership: createRoom, invite, join, leave, forget.

Spec: https://spec.matrix.org/v1.12/client-server-api/#creation (POST /createRoom) and
#room-membership (invite, join by id or alias with `via`/`server_name`, leave, forget).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.request import QueryValue, Request, quote
from nimbus.types.ids import RoomId

CLIENT_V3 = "/_matrix/client/v3"
CREATE_ROOM_PATH = f"{CLIENT_V3}/createRoom"

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")


def _room(room_id: str) -> str:
    return f"{CLIENT_V3}/rooms/{quote(room_id)}"


def create_room(
    *,
    name: str | None = None,
    topic: str | None = None,
    invite: Iterable[str] = (),
    is_direct: bool = False,
    preset: str | None = None,
    initial_state: Sequence[Mapping[str, Any]] = (),
    power_level_content_override: Mapping[str, Any] | None = None,
    room_alias_name: str | None = None,
    visibility: str | None = None,
    room_version: str | None = None,
    creation_content: Mapping[str, Any] | None = None,
) -> Request:
    # Spec: POST /_matrix/client/v3/createRoom (#post_matrixclientv3createroom)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown createRoom preset {preset!r}")
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if topic is not None:
        body["topic"] = topic
    invitees = list(invite)
    if invitees:
        body["invite"] = invitees
    if is_direct:
        body["is_direct"] = True
    if preset is not None:
        body["preset"] = preset
    if initial_state:
        body["initial_state"] = [dict(e) for e in initial_state]
    if power_level_content_override is not None:
        body["power_level_content_override"] = dict(power_level_content_override)
    if room_alias_name is not None:
        body["room_alias_name"] = room_alias_name
    if visibility is not None:
        body["visibility"] = visibility
    if room_version is not None:
        body["room_version"] = room_version
    if creation_content is not None:
        body["creation_content"] = dict(creation_content)
    return Request("POST", CREATE_ROOM_PATH, json=body)


def parse_room_id_response(body: Any, what: str) -> RoomId:
    """`{"room_id": ...}` from createRoom and join."""
    return RoomId(p.req_str(p.obj(body, what), "room_id", what))


def parse_create_room(body: Any) -> RoomId:
    return parse_room_id_response(body, CREATE_ROOM_PATH)


def invite(room_id: str, user_id: str, reason: str | None = None) -> Request:
    # Spec: POST /_matrix/client/v3/rooms/{roomId}/invite
    body: dict[str, Any] = {"user_id": user_id}
    if reason is not None:
        body["reason"] = reason
    return Request("POST", f"{_room(room_id)}/invite", json=body)


def join(room_id_or_alias: str, via: Sequence[str] = (), reason: str | None = None) -> Request:
    """Join by room id or alias. `via` servers go out both as `via` (v1.12) and `server_name`
    (the older name servers still read)."""
    # Spec: POST /_matrix/client/v3/join/{roomIdOrAlias}
    query: dict[str, QueryValue] = {}
    if via:
        query["via"] = tuple(via)
        query["server_name"] = tuple(via)
    body: dict[str, Any] = {} if reason is None else {"reason": reason}
    return Request("POST", f"{CLIENT_V3}/join/{quote(room_id_or_alias)}", query=query, json=body)


def parse_join(body: Any) -> RoomId:
    return parse_room_id_response(body, f"{CLIENT_V3}/join")


def leave(room_id: str, reason: str | None = None) -> Request:
    # Spec: POST /_matrix/client/v3/rooms/{roomId}/leave (also rejects an invite)
    body: dict[str, Any] = {} if reason is None else {"reason": reason}
    return Request("POST", f"{_room(room_id)}/leave", json=body)


def forget(room_id: str) -> Request:
    # Spec: POST /_matrix/client/v3/rooms/{roomId}/forget
    return Request("POST", f"{_room(room_id)}/forget", json={})
