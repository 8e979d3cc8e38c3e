"""Synapse admin API: shared-secret registration (used by the homeserver kit and tests).

Not part of the Matrix spec: https://element-hq.github.io/synapse/latest/admin_api/register_api.html
GET /_synapse/admin/v1/register gives a single-use nonce; the POST body carries an HMAC-SHA1 (key:
the server's `registration_shared_secret`) of nonce NUL username NUL password NUL admin|notadmin.
The secret and password are never logged; the POST is not retried (the nonce is single-use).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.auth import LoginResponse, parse_login
from nimbus.api.request import Request

REGISTER_PATH = "/_synapse/admin/v1/register"


def register_nonce() -> Request:
    return Request("GET", REGISTER_PATH, auth=False)


def parse_nonce(body: Any) -> str:
    return p.req_str(p.obj(body, REGISTER_PATH), "nonce", REGISTER_PATH)


def registration_mac(
    shared_secret: str,
    nonce: str,
    username: str,
    password: str,
    admin: bool = False,
    user_type: str | None = None,
) -> str:
    """Hex HMAC-SHA1 over the NUL-separated fields, as Synapse checks it."""
    mac = hmac.new(shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8") + b"\x00" + username.encode("utf-8") + b"\x00")
    mac.update(password.encode("utf-8") + b"\x00" + (b"admin" if admin else b"notadmin"))
    if user_type is not None:
        mac.update(b"\x00" + user_type.encode("utf-8"))
    return mac.hexdigest()


def register_with_shared_secret(
    shared_secret: str,
    nonce: str,
    username: str,
    password: str,
    *,
    admin: bool = False,
    displayname: str | None = None,
    user_type: str | None = None,
) -> Request:
    body: dict[str, Any] = {
        "nonce": nonce,
        "username": username,
        "password": password,
        "admin": admin,
        "mac": registration_mac(shared_secret, nonce, username, password, admin, user_type),
    }
    if displayname is not None:
        body["displayname"] = displayname
    if user_type is not None:
        body["user_type"] = user_type
    return Request("POST", REGISTER_PATH, json=body, auth=False, retry_safe=False)


def parse_register(body: Any) -> LoginResponse:
    """The answer has user_id, access_token, device_id (and home_server), like a login."""
    return parse_login(body, REGISTER_PATH)
