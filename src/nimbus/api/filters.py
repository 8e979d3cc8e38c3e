"""Filters: POST /user/{userId}/filter (upload) and GET (download).

Spec: https://spec.matrix.org/v1.12/client-server-api/#filtering. Inline filters for /sync and
/messages go through `nimbus.api.room_events.filter_param` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.request import Request, quote


def upload_filter(user_id: str, filter: Mapping[str, Any]) -> Request:
    # Spec: POST /_matrix/client/v3/user/{userId}/filter (same filter → a new id; harmless: retry-safe)
    return Request(
        "POST", f"/_matrix/client/v3/user/{quote(user_id)}/filter", json=dict(filter), retry_safe=True
    )


def parse_upload_filter(body: Any) -> str:
    what = "/_matrix/client/v3/user/filter"
    return p.req_str(p.obj(body, what), "filter_id", what)


def get_filter(user_id: str, filter_id: str) -> Request:
    # Spec: GET /_matrix/client/v3/user/{userId}/filter/{filterId}
    return Request("GET", f"/_matrix/client/v3/user/{quote(user_id)}/filter/{quote(filter_id)}")
