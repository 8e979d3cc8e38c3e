"""Device management: list, get, rename, delete (user-interactive auth).

Spec: https://spec.matrix.org/v1.12/client-server-api/#device-management. DELETE /devices/{deviceId}
and POST /delete_devices need user-interactive auth: pass `auth=None` first and drive the request with
`nimbus.api.uia.with_password_auth` (the builders take the auth dict as their last argument).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.request import Request, quote
from nimbus.types.ids import DeviceId

DEVICES_PATH = "/_matrix/client/v3/devices"


@dataclass(frozen=True)
class Device:
    device_id: DeviceId
    display_name: str | None = None
    last_seen_ip: str | None = None
    last_seen_ts: int | None = None


def _device_path(device_id: str) -> str:
    return f"{DEVICES_PATH}/{quote(device_id)}"


def list_devices() -> Request:
    # Spec: GET /_matrix/client/v3/devices
    return Request("GET", DEVICES_PATH)


def get_device(device_id: str) -> Request:
    # Spec: GET /_matrix/client/v3/devices/{deviceId}
    return Request("GET", _device_path(device_id))


def update_device(device_id: str, display_name: str | None) -> Request:
    # Spec: PUT /_matrix/client/v3/devices/{deviceId} (only display_name can change)
    body: dict[str, Any] = {} if display_name is None else {"display_name": display_name}
    return Request("PUT", _device_path(device_id), json=body)


def delete_device(device_id: str, auth: dict[str, Any] | None = None) -> Request:
    # Spec: DELETE /_matrix/client/v3/devices/{deviceId} (user-interactive auth)
    body: dict[str, Any] = {} if auth is None else {"auth": auth}
    return Request("DELETE", _device_path(device_id), json=body)


def delete_devices(device_ids: Iterable[str], auth: dict[str, Any] | None = None) -> Request:
    # Spec: POST /_matrix/client/v3/delete_devices (user-interactive auth)
    body: dict[str, Any] = {"devices": list(device_ids)}
    if auth is not None:
        body["auth"] = auth
    return Request("POST", "/_matrix/client/v3/delete_devices", json=body)


def parse_device(body: Any, what: str = DEVICES_PATH) -> Device:
    data = p.obj(body, what)
    return Device(
        device_id=DeviceId(p.req_str(data, "device_id", what)),
        display_name=p.opt_str(data, "display_name", what),
        last_seen_ip=p.opt_str(data, "last_seen_ip", what),
        last_seen_ts=p.opt_int(data, "last_seen_ts", what),
    )


def parse_devices(body: Any) -> tuple[Device, ...]:
    data = p.obj(body, DEVICES_PATH)
    return tuple(parse_device(d, DEVICES_PATH) for d in p.opt_list(data, "devices", DEVICES_PATH))
