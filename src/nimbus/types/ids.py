"""Matrix identifiers as distinct types.

Spec: https://spec.matrix.org/v1.12/appendices/#identifier-grammar
These are NewTypes over str: free at run time, checked by mypy. Validation lives in `parse_*`.
"""

from __future__ import annotations

import re
from typing import NewType

UserId = NewType("UserId", str)
"""A user id, `@localpart:server_name`."""
RoomId = NewType("RoomId", str)
"""A room id: `!opaque:server_name`, or `!opaque` with no server name from room version 12 on
(the room id is the hash of the create event; spec v1.16 "Room IDs")."""
EventId = NewType("EventId", str)
"""An event id, `$opaque` (room versions 4+) or `$opaque:server_name`."""
DeviceId = NewType("DeviceId", str)
"""A device id, opaque and chosen by the homeserver or the client at login."""
RoomAlias = NewType("RoomAlias", str)
"""A room alias, `#alias:server_name`."""
ServerName = NewType("ServerName", str)
"""A server name, `host[:port]`."""
TxnId = NewType("TxnId", str)
"""A client transaction id, unique per access token (spec: 'Transaction identifiers')."""


class InvalidIdentifier(ValueError):
    """An identifier does not match the spec's grammar."""


# Loose on purpose: historical user ids allow more characters than the current grammar.
_SERVER = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?"
_USER_RE = re.compile(r"^@[^:\s]+:" + _SERVER + r"$")
_ROOM_RE = re.compile(r"^![^:\s]+(?::" + _SERVER + r")?$")
_ALIAS_RE = re.compile(r"^#[^:\s]+:" + _SERVER + r"$")
_EVENT_RE = re.compile(r"^\$[^\s]+$")
_SERVER_RE = re.compile(r"^" + _SERVER + r"$")


def parse_user_id(value: str) -> UserId:
    if not isinstance(value, str) or len(value) > 255 or not _USER_RE.match(value):
        raise InvalidIdentifier(f"not a user id: {value!r}")
    return UserId(value)


def parse_room_id(value: str) -> RoomId:
    if not isinstance(value, str) or len(value) > 255 or not _ROOM_RE.match(value):
        raise InvalidIdentifier(f"not a room id: {value!r}")
    return RoomId(value)


def parse_room_alias(value: str) -> RoomAlias:
    if not isinstance(value, str) or len(value) > 255 or not _ALIAS_RE.match(value):
        raise InvalidIdentifier(f"not a room alias: {value!r}")
    return RoomAlias(value)


def parse_event_id(value: str) -> EventId:
    if not isinstance(value, str) or len(value) > 255 or not _EVENT_RE.match(value):
        raise InvalidIdentifier(f"not an event id: {value!r}")
    return EventId(value)


def parse_server_name(value: str) -> ServerName:
    if not isinstance(value, str) or not _SERVER_RE.match(value):
        raise InvalidIdentifier(f"not a server name: {value!r}")
    return ServerName(value)


def server_of(identifier: str) -> ServerName:
    """The server name part of a user id, room id or alias."""
    _, sep, server = identifier.partition(":")
    if not sep:
        raise InvalidIdentifier(f"no server name in {identifier!r}")
    return parse_server_name(server)
