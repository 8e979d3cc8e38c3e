"""User profiles: GET /profile/{userId}, PUT displayname and avatar_url.

Spec: https://spec.matrix.org/v1.12/client-server-api/#profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.request import Request, quote


@dataclass(frozen=True)
class Profile:
    displayname: str | None = None
    avatar_url: str | None = None


def _profile(user_id: str) -> str:
    return f"/_matrix/client/v3/profile/{quote(user_id)}"


def get_profile(user_id: str) -> Request:
    # Spec: GET /_matrix/client/v3/profile/{userId}
    return Request("GET", _profile(user_id))


def parse_profile(body: Any) -> Profile:
    what = "/_matrix/client/v3/profile"
    data = p.obj(body, what)
    return Profile(p.opt_str(data, "displayname", what), p.opt_str(data, "avatar_url", what))


def set_displayname(user_id: str, displayname: str) -> Request:
    # Spec: PUT /_matrix/client/v3/profile/{userId}/displayname
    return Request("PUT", f"{_profile(user_id)}/displayname", json={"displayname": displayname})


def set_avatar_url(user_id: str, avatar_url: str) -> Request:
    # Spec: PUT /_matrix/client/v3/profile/{userId}/avatar_url
    return Request("PUT", f"{_profile(user_id)}/avatar_url", json={"avatar_url": avatar_url})
