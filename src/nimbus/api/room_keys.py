"""Server-side key backup: /room_keys/version and /room_keys/keys.

Spec: https://spec.matrix.org/v1.12/client-server-api/#server-side-key-backups. Session data stays
opaque here (encrypted by the crypto layer); parsers check the outer shape only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.errors import MalformedResponse
from nimbus.api.request import Request, quote

ROOM_KEYS = "/_matrix/client/v3/room_keys"
JSONDict = dict[str, Any]


@dataclass(frozen=True)
class BackupVersion:
    version: str
    algorithm: str
    auth_data: JSONDict
    count: int
    etag: str


def create_backup_version(algorithm: str, auth_data: Mapping[str, Any]) -> Request:
    # Spec: POST /_matrix/client/v3/room_keys/version
    body = {"algorithm": algorithm, "auth_data": dict(auth_data)}
    return Request("POST", f"{ROOM_KEYS}/version", json=body)


def parse_create_backup_version(body: Any) -> str:
    what = f"{ROOM_KEYS}/version"
    return p.req_str(p.obj(body, what), "version", what)


def get_backup_version(version: str | None = None) -> Request:
    """The current backup version, or a given one. No backup → NotFound (M_NOT_FOUND)."""
    # Spec: GET /_matrix/client/v3/room_keys/version[/{version}]
    path = f"{ROOM_KEYS}/version" if version is None else f"{ROOM_KEYS}/version/{quote(version)}"
    return Request("GET", path)


def parse_backup_version(body: Any) -> BackupVersion:
    what = f"{ROOM_KEYS}/version"
    data = p.obj(body, what)
    count = p.opt_int(data, "count", what)
    auth_data = data.get("auth_data")
    if not isinstance(auth_data, dict):
        raise MalformedResponse("'auth_data' missing or not an object", what)
    return BackupVersion(
        version=p.req_str(data, "version", what),
        algorithm=p.req_str(data, "algorithm", what),
        auth_data=auth_data,
        count=count if count is not None else 0,
        etag=p.req_str(data, "etag", what),
    )


def delete_backup_version(version: str) -> Request:
    # Spec: DELETE /_matrix/client/v3/room_keys/version/{version}
    return Request("DELETE", f"{ROOM_KEYS}/version/{quote(version)}")


def put_room_keys(version: str, rooms: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Request:
    """`rooms`: room id → session id → KeyBackupData. Idempotent: retry-safe."""
    # Spec: PUT /_matrix/client/v3/room_keys/keys?version=
    body = {"rooms": {r: {"sessions": {s: dict(d) for s, d in sess.items()}} for r, sess in rooms.items()}}
    return Request("PUT", f"{ROOM_KEYS}/keys", query={"version": version}, json=body, retry_safe=True)


def parse_put_room_keys(body: Any) -> tuple[str, int]:
    """(etag, count) after the upload."""
    what = f"{ROOM_KEYS}/keys"
    data = p.obj(body, what)
    count = p.opt_int(data, "count", what)
    return p.req_str(data, "etag", what), count if count is not None else 0


def get_room_keys(version: str, room_id: str | None = None, session_id: str | None = None) -> Request:
    # Spec: GET /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=
    path = f"{ROOM_KEYS}/keys"
    if room_id is not None:
        path += f"/{quote(room_id)}"
        if session_id is not None:
            path += f"/{quote(session_id)}"
    return Request("GET", path, query={"version": version})


def parse_room_keys(body: Any) -> dict[str, dict[str, JSONDict]]:
    """For GET of all keys: room id → session id → KeyBackupData (outer shape checked)."""
    what = f"{ROOM_KEYS}/keys"
    rooms = p.opt_obj(p.obj(body, what), "rooms", what)
    out: dict[str, dict[str, JSONDict]] = {}
    for room_id, room in rooms.items():
        sessions = p.opt_obj(p.obj(room, what), "sessions", what)
        if not all(isinstance(s, dict) for s in sessions.values()):
            raise MalformedResponse("a backed-up session is not an object", what)
        out[room_id] = sessions
    return out
