"""Login, logout and whoami.

Spec: https://spec.matrix.org/v1.12/client-server-api/#login (POST /login with m.login.password and
an m.id.user identifier), #post_matrixclientv3logout, #get_matrixclientv3accountwhoami.
Request values carry the password; never log them (the transport logs only method and path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.request import Request
from nimbus.types.ids import DeviceId, UserId

LOGIN_PATH = "/_matrix/client/v3/login"
LOGOUT_PATH = "/_matrix/client/v3/logout"
LOGOUT_ALL_PATH = "/_matrix/client/v3/logout/all"
WHOAMI_PATH = "/_matrix/client/v3/account/whoami"


@dataclass(frozen=True)
class LoginResponse:
    """A new session. The token is kept out of repr."""

    user_id: UserId
    access_token: str = field(repr=False)
    device_id: DeviceId
    homeserver_base_url: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    expires_in_ms: int | None = None


@dataclass(frozen=True)
class WhoAmI:
    user_id: UserId
    device_id: DeviceId | None = None
    is_guest: bool = False


def password_identifier(user: str) -> dict[str, str]:
    """Spec "Identifier types": m.id.user takes a full user id or a localpart."""
    return {"type": "m.id.user", "user": user}


def login_password(
    user: str,
    password: str,
    *,
    device_id: str | None = None,
    initial_device_display_name: str | None = None,
    refresh_token: bool = False,
) -> Request:
    # Spec: POST /_matrix/client/v3/login, type m.login.password (#password-based)
    body: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": password_identifier(user),
        "password": password,
    }
    if device_id is not None:
        body["device_id"] = device_id
    if initial_device_display_name is not None:
        body["initial_device_display_name"] = initial_device_display_name
    if refresh_token:
        body["refresh_token"] = True
    return Request("POST", LOGIN_PATH, json=body, auth=False)


def parse_login(body: Any, what: str = LOGIN_PATH) -> LoginResponse:
    data = p.obj(body, what)
    base_url = None
    well_known = data.get("well_known")
    if isinstance(well_known, dict):
        hs = well_known.get("m.homeserver")
        if isinstance(hs, dict) and isinstance(hs.get("base_url"), str):
            base_url = hs["base_url"].rstrip("/")
    return LoginResponse(
        user_id=UserId(p.req_str(data, "user_id", what)),
        access_token=p.req_str(data, "access_token", what),
        device_id=DeviceId(p.req_str(data, "device_id", what)),
        homeserver_base_url=base_url,
        refresh_token=p.opt_str(data, "refresh_token", what),
        expires_in_ms=p.opt_int(data, "expires_in_ms", what),
    )


def logout() -> Request:
    # Spec: POST /_matrix/client/v3/logout — invalidates this token and deletes its device keys.
    return Request("POST", LOGOUT_PATH, json={})


def logout_all() -> Request:
    # Spec: POST /_matrix/client/v3/logout/all
    return Request("POST", LOGOUT_ALL_PATH, json={})


def whoami() -> Request:
    # Spec: GET /_matrix/client/v3/account/whoami
    return Request("GET", WHOAMI_PATH)


def parse_whoami(body: Any) -> WhoAmI:
    what = WHOAMI_PATH
    data = p.obj(body, what)
    device = p.opt_str(data, "device_id", what)
    return WhoAmI(
        user_id=UserId(p.req_str(data, "user_id", what)),
        device_id=DeviceId(device) if device is not None else None,
        is_guest=p.opt_bool(data, "is_guest", what),
    )
