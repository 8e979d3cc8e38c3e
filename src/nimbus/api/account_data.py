"""Client config (account data), global and per room: GET/PUT.

Spec: https://spec.matrix.org/v1.12/client-server-api/#client-config. PUT replaces the whole
content, so it is idempotent (retry-safe). GET answers the content object (M_NOT_FOUND if unset).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nimbus.api.request import Request, quote


def _user(user_id: str) -> str:
    return f"/_matrix/client/v3/user/{quote(user_id)}"


def get_account_data(user_id: str, event_type: str, room_id: str | None = None) -> Request:
    # Spec: GET /_matrix/client/v3/user/{userId}[/rooms/{roomId}]/account_data/{type}
    room = "" if room_id is None else f"/rooms/{quote(room_id)}"
    return Request("GET", f"{_user(user_id)}{room}/account_data/{quote(event_type)}")


def put_account_data(
    user_id: str, event_type: str, content: Mapping[str, Any], room_id: str | None = None
) -> Request:
    # Spec: PUT /_matrix/client/v3/user/{userId}[/rooms/{roomId}]/account_data/{type}
    room = "" if room_id is None else f"/rooms/{quote(room_id)}"
    path = f"{_user(user_id)}{room}/account_data/{quote(event_type)}"
    return Request("PUT", path, json=dict(content), retry_safe=True)
