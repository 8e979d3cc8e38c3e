"""User creation through Synapse's shared-secret admin registration API.

Owns: `register_user`, which does GET /_synapse/admin/v1/register (a nonce) then POST with
HMAC-SHA1(key=shared secret, msg=nonce NUL user NUL password NUL admin|notadmin), and returns the new
user's id, access token and device id. (A Synapse admin API, not part of the Matrix spec; the
returned login fields follow https://spec.matrix.org/v1.12/client-server-api/#post_matrixclientv3login.)

Rules: the shared secret, password and access token never appear in an exception message or repr.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import httpx

from nimbus.homeserver.errors import RegistrationFailed

REGISTER_PATH = "/_synapse/admin/v1/register"


@dataclass(frozen=True)
class RegisteredUser:
    user_id: str
    access_token: str = field(repr=False)
    device_id: str
    password: str = field(repr=False, default="")


def registration_mac(shared_secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    mac = hmac.new(shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    for part in (nonce, user, password):
        mac.update(part.encode("utf-8"))
        mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    return mac.hexdigest()


def _error(what: str, response: httpx.Response) -> RegistrationFailed:
    errcode: str | None = None
    message = ""
    try:
        body: Any = response.json()
        if isinstance(body, dict):
            errcode = body.get("errcode")
            message = str(body.get("error", ""))
    except ValueError:
        message = response.text[:200]
    return RegistrationFailed(
        f"{what}: HTTP {response.status_code} {errcode or ''} {message}".strip(),
        status=response.status_code,
        errcode=errcode,
    )


def register_user(
    client_url: str,
    shared_secret: str,
    localpart: str,
    password: str,
    *,
    admin: bool = False,
    displayname: str | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> RegisteredUser:
    """Create `localpart` on the server at `client_url`; raises RegistrationFailed if refused."""
    url = client_url.rstrip("/") + REGISTER_PATH
    with httpx.Client(trust_env=False, timeout=timeout, transport=transport) as http:
        try:
            r = http.get(url)
            if r.status_code != 200:
                raise _error("getting a registration nonce failed", r)
            nonce = str(r.json()["nonce"])
            body: dict[str, Any] = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": registration_mac(shared_secret, nonce, localpart, password, admin),
            }
            if displayname is not None:
                body["displayname"] = displayname
            r = http.post(url, json=body)
        except httpx.TransportError as e:
            raise RegistrationFailed(f"cannot reach {url}: {type(e).__name__}") from None
        if r.status_code != 200:
            raise _error(f"registering {localpart!r} failed", r)
        data = r.json()
        return RegisteredUser(
            user_id=str(data["user_id"]),
            access_token=str(data["access_token"]),
            device_id=str(data.get("device_id", "")),
            password=password,
        )
