"""Small checks shared by the response parsers. Each raises MalformedResponse naming the endpoint.

Rules: parsers validate only the fields they return; a missing optional field is None/empty, a field
of the wrong type is an error (never silently coerced). Strings given to `what` name an endpoint or a
field path, never a value from the body.
"""

from __future__ import annotations

import logging
from typing import Any

from nimbus.api.errors import MalformedResponse
from nimbus.types.errors import MalformedData
from nimbus.types.events import Event, parse_event

JSONDict = dict[str, Any]

log = logging.getLogger("nimbus.api")


def obj(body: Any, what: str) -> JSONDict:
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}", what)
    return body


def req_str(body: JSONDict, key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise MalformedResponse(f"field {key!r} missing or not a string", what)
    return value


def opt_str(body: JSONDict, key: str, what: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedResponse(f"field {key!r} is not a string", what)
    return value


def opt_int(body: JSONDict, key: str, what: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedResponse(f"field {key!r} is not an integer", what)
    return value


def opt_bool(body: JSONDict, key: str, what: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise MalformedResponse(f"field {key!r} is not a boolean", what)
    return value


def opt_obj(body: JSONDict, key: str, what: str) -> JSONDict:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise MalformedResponse(f"field {key!r} is not an object", what)
    return value


def opt_list(body: JSONDict, key: str, what: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise MalformedResponse(f"field {key!r} is not a list", what)
    return value


def str_list(body: JSONDict, key: str, what: str) -> tuple[str, ...]:
    items = opt_list(body, key, what)
    if not all(isinstance(i, str) for i in items):
        raise MalformedResponse(f"field {key!r} has a non-string item", what)
    return tuple(items)


def events(raw: list[Any], room_id: str, what: str) -> tuple[tuple[Event, ...], int]:
    """Parse a list of room events, skipping (and counting, and logging) malformed ones."""
    parsed: list[Event] = []
    skipped = 0
    for item in raw:
        try:
            parsed.append(parse_event(item, room_id))
        except MalformedData as exc:
            skipped += 1
            log.warning("%s: skipped a malformed event in %s: %s", what, room_id, exc)
    return tuple(parsed), skipped
