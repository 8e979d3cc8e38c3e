"""End-to-end encryption key endpoints: /keys/upload, /keys/query, /keys/claim, /keys/changes.

Spec: https://spec.matrix.org/v1.12/client-server-api/#key-management-api (E2EE module).
Parsers check only the outer shape (maps of maps); the crypto layer verifies keys and signatures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nimbus.api import _parse as p
from nimbus.api.errors import MalformedResponse
from nimbus.api.request import Request
from nimbus.types.ids import DeviceId, UserId

KEYS = "/_matrix/client/v3/keys"
JSONDict = dict[str, Any]


@dataclass(frozen=True)
class KeysQueryResponse:
    device_keys: dict[UserId, dict[DeviceId, JSONDict]]
    failures: JSONDict = field(default_factory=dict)
    master_keys: dict[UserId, JSONDict] = field(default_factory=dict)
    self_signing_keys: dict[UserId, JSONDict] = field(default_factory=dict)
    user_signing_keys: dict[UserId, JSONDict] = field(default_factory=dict)


@dataclass(frozen=True)
class KeysClaimResponse:
    """user → device → {"<algorithm>:<key id>": key object}."""

    one_time_keys: dict[UserId, dict[DeviceId, JSONDict]]
    failures: JSONDict = field(default_factory=dict)


@dataclass(frozen=True)
class KeyChanges:
    changed: tuple[UserId, ...]
    left: tuple[UserId, ...]


def upload_keys(
    *,
    device_keys: Mapping[str, Any] | None = None,
    one_time_keys: Mapping[str, Any] | None = None,
    fallback_keys: Mapping[str, Any] | None = None,
) -> Request:
    # Spec: POST /_matrix/client/v3/keys/upload. Re-uploading the same keys is harmless, but a key
    # id uploaded twice with different content is an error, so only connect failures are retried.
    body: JSONDict = {}
    if device_keys is not None:
        body["device_keys"] = dict(device_keys)
    if one_time_keys is not None:
        body["one_time_keys"] = dict(one_time_keys)
    if fallback_keys is not None:
        body["fallback_keys"] = dict(fallback_keys)
    return Request("POST", f"{KEYS}/upload", json=body)


def parse_upload_keys(body: Any) -> dict[str, int]:
    """`one_time_key_counts`: algorithm → keys the server holds."""
    what = f"{KEYS}/upload"
    counts = p.opt_obj(p.obj(body, what), "one_time_key_counts", what)
    for value in counts.values():
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedResponse("a one-time key count is not an integer", what)
    return dict(counts)


def query_keys(
    users: Mapping[str, Iterable[str]] | Iterable[str], *, timeout_ms: int | None = None
) -> Request:
    """`users`: user ids (all devices) or user id → device ids."""
    # Spec: POST /_matrix/client/v3/keys/query (read-only: retry-safe)
    if isinstance(users, Mapping):
        device_keys: JSONDict = {u: list(devs) for u, devs in users.items()}
    else:
        device_keys = {u: [] for u in users}
    body: JSONDict = {"device_keys": device_keys}
    if timeout_ms is not None:
        body["timeout"] = timeout_ms
    return Request("POST", f"{KEYS}/query", json=body, retry_safe=True)


def _map_of_maps(data: JSONDict, key: str, what: str) -> dict[Any, dict[Any, JSONDict]]:
    outer = p.opt_obj(data, key, what)
    for inner in outer.values():
        if not isinstance(inner, dict) or not all(isinstance(v, dict) for v in inner.values()):
            raise MalformedResponse(f"{key!r} is not a map of maps of objects", what)
    return outer


def _map_of_objects(data: JSONDict, key: str, what: str) -> dict[Any, JSONDict]:
    outer = p.opt_obj(data, key, what)
    if not all(isinstance(v, dict) for v in outer.values()):
        raise MalformedResponse(f"{key!r} is not a map of objects", what)
    return outer


def parse_query_keys(body: Any) -> KeysQueryResponse:
    what = f"{KEYS}/query"
    data = p.obj(body, what)
    return KeysQueryResponse(
        device_keys=_map_of_maps(data, "device_keys", what),
        failures=p.opt_obj(data, "failures", what),
        master_keys=_map_of_objects(data, "master_keys", what),
        self_signing_keys=_map_of_objects(data, "self_signing_keys", what),
        user_signing_keys=_map_of_objects(data, "user_signing_keys", what),
    )


def claim_keys(one_time_keys: Mapping[str, Mapping[str, str]], *, timeout_ms: int | None = None) -> Request:
    """`one_time_keys`: user → device → algorithm (e.g. "signed_curve25519")."""
    # Spec: POST /_matrix/client/v3/keys/claim (consumes keys: not retried after a send)
    body: JSONDict = {"one_time_keys": {u: dict(d) for u, d in one_time_keys.items()}}
    if timeout_ms is not None:
        body["timeout"] = timeout_ms
    return Request("POST", f"{KEYS}/claim", json=body)


def parse_claim_keys(body: Any) -> KeysClaimResponse:
    what = f"{KEYS}/claim"
    data = p.obj(body, what)
    return KeysClaimResponse(
        one_time_keys=_map_of_maps(data, "one_time_keys", what),
        failures=p.opt_obj(data, "failures", what),
    )


def key_changes(from_token: str, to_token: str) -> Request:
    # Spec: GET /_matrix/client/v3/keys/changes
    return Request("GET", f"{KEYS}/changes", query={"from": from_token, "to": to_token})


def parse_key_changes(body: Any) -> KeyChanges:
    what = f"{KEYS}/changes"
    data = p.obj(body, what)
    changed = p.str_list(data, "changed", what)
    left = p.str_list(data, "left", what)
    return KeyChanges(tuple(UserId(u) for u in changed), tuple(UserId(u) for u in left))


def upload_signing_keys(keys: Mapping[str, Any], auth: Mapping[str, Any] | None = None) -> Request:
    """Spec: POST /_matrix/client/v3/keys/device_signing/upload (user-interactive auth).
    `keys`: master_key, self_signing_key, user_signing_key (cross-signing key objects)."""
    body: JSONDict = dict(keys)
    if auth is not None:
        body["auth"] = dict(auth)
    return Request("POST", f"{KEYS}/device_signing/upload", json=body)


def upload_signatures(signed: Mapping[str, Mapping[str, Any]]) -> Request:
    """Spec: POST /_matrix/client/v3/keys/signatures/upload: user → key id or device id → the signed
    object (with its new signature). Re-uploading the same signature is harmless: retry-safe."""
    return Request(
        "POST",
        f"{KEYS}/signatures/upload",
        json={u: {k: dict(v) for k, v in m.items()} for u, m in signed.items()},
        retry_safe=True,
    )


def parse_upload_signatures(body: Any) -> JSONDict:
    """The `failures` map (user → key id → error object); empty when every signature was accepted."""
    what = f"{KEYS}/signatures/upload"
    return p.opt_obj(p.obj(body, what), "failures", what)
