"""Typed crypto records, serialised to JSON bytes for the store (see crypto/store.py for the keys).

Each record is a frozen dataclass of JSON-able fields; `dump` writes it, `load` reads it back and checks
every field's type, so a corrupt record is a clear `StoreDataError`, never a half-read object.
Vodozemac objects are kept as their pickles (encrypted with the machine's pickle key).
Leave room for the next issues: `InboundSessionRecord` has `backed_up`, `forwarding_chain`, `authentic`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from nimbus.crypto.errors import StoreDataError

JSONDict = dict[str, Any]
R = TypeVar("R")

# Object kinds (the `kind` of an ObjectKey) and what group/item mean for each.
ACCOUNT = "account"  # ("", "") → AccountRecord
OLM_SESSION = "olm_session"  # (peer curve25519 key, session id) → OlmSessionRecord
DEVICE = "device"  # (user id, device id) → DeviceRecord
TRACKED_USER = "tracked_user"  # ("", user id) → TrackedUserRecord
OUTBOUND = "outbound_group_session"  # ("", room id) → OutboundSessionRecord
INBOUND = "inbound_group_session"  # (room id, session id) → InboundSessionRecord
REPLAY = "replay"  # (session id, str(index)) → ReplayRecord
WITHHELD = "withheld"  # (room id, session id) → WithheldRecord
OUTGOING = "outgoing"  # ("", request id) → OutgoingRecord
UNWEDGE = "unwedge"  # (user id, device id) → UnwedgeRecord
REJECTED_DEVICE = "rejected_device"  # (user id, device id) → RejectedDeviceRecord
CROSS_SIGNING_IDENTITY = "cross_signing_identity"  # (user id, "") → IdentityRecord (checked public keys)
CROSS_SIGNING_PRIVATE = "cross_signing_private"  # ("", "") → PrivateKeysRecord (our private keys)
TRUST = "trust"  # (user id, "") → TrustRecord (pinned/verified); (user id, device id) → DeviceFlagRecord
SETTING = "crypto_setting"  # ("", name) → SettingRecord
NO_OLM = "no_olm_notice"  # (user id, device id) → NoOlmRecord: m.no_olm sent once per device


@dataclass(frozen=True)
class AccountRecord:
    pickle: str
    device_keys_uploaded: bool = False
    upload_generation: int = 0  # bumps when new keys are generated: the upload request id changes


@dataclass(frozen=True)
class OlmSessionRecord:
    pickle: str
    session_id: str
    peer_user: str
    created_ms: int
    last_used_ms: int


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    curve25519: str
    ed25519: str
    algorithms: list[str]
    keys_json: JSONDict  # the signed device keys object, as verified


@dataclass(frozen=True)
class RejectedDeviceRecord:
    user_id: str
    device_id: str
    reason: str


@dataclass(frozen=True)
class TrackedUserRecord:
    outdated: bool = True


@dataclass(frozen=True)
class OutboundSessionRecord:
    pickle: str
    session_id: str
    created_ms: int
    message_count: int
    shared_history: bool
    rotation_period_ms: int
    rotation_period_msgs: int
    # user → device → curve25519 key the room key went to
    shared_with: dict[str, dict[str, str]] = field(default_factory=dict)
    # user → device → m.room_key.withheld code sent for this session (once per device)
    withheld_from: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundSessionRecord:
    pickle: str
    room_id: str
    session_id: str
    sender_user: str
    sender_device: str | None
    sender_key: str  # Curve25519 key of the Olm-authenticated device
    signing_key: str  # its Ed25519 key
    shared_history: bool = False
    backed_up: bool = False
    forwarding_chain: list[str] = field(default_factory=list)
    authentic: bool = True


@dataclass(frozen=True)
class ReplayRecord:
    event_id: str
    origin_server_ts: int


@dataclass(frozen=True)
class WithheldRecord:
    sender: str
    code: str
    reason: str | None


@dataclass(frozen=True)
class OutgoingRecord:
    kind: str  # "to_device"
    event_type: str
    txn_id: str
    messages: dict[str, dict[str, JSONDict]]


@dataclass(frozen=True)
class IdentityRecord:
    """A user's published cross-signing keys as last checked (master → self-signing [→ user-signing])."""

    master_key: str
    self_signing_key: str
    user_signing_key: str | None
    master_json: JSONDict


@dataclass(frozen=True)
class PrivateKeysRecord:
    """Our private cross-signing keys (Ed25519 seeds; the store encrypts every value at rest)."""

    master: str
    self_signing: str
    user_signing: str
    uploaded: bool = False  # the public keys were accepted by the server
    device_signed: bool = False  # this device's keys were signed and the signature uploaded


@dataclass(frozen=True)
class TrustRecord:
    """What we decided about a user's identity: the master key we pinned (trust on first use, or the
    last one the user acknowledged) and whether the user verified that key."""

    pinned_master: str
    verified: bool = False


@dataclass(frozen=True)
class DeviceFlagRecord:
    blocked: bool = False


@dataclass(frozen=True)
class SettingRecord:
    value: str


@dataclass(frozen=True)
class NoOlmRecord:
    sent_ms: int


@dataclass(frozen=True)
class UnwedgeRecord:
    curve25519: str
    last_attempt_ms: int
    pending: bool


def dump(record: Any) -> bytes:
    # Records hold only JSON values (no nested dataclasses), so a shallow dict is enough.
    fields = {f.name: getattr(record, f.name) for f in _fields(cast(Hashable, type(record)))}
    data = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    _remember(type(record), data, record)  # the next load of these bytes is this very record
    return data


@functools.cache
def _fields(cls: Hashable) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cast(type, cls))


_LOADED: dict[tuple[type, bytes], Any] = {}
_LOADED_MAX = 4096


def load(cls: type[R], data: bytes) -> R:
    """Read a record of type `cls`; raises StoreDataError naming the record type, never its content.

    Records are immutable values, so one read of the same bytes serves every later one (a bounded
    cache: the send and receive paths read the same account, device and session records each time).
    """
    hit = _LOADED.get((cast(type, cls), bytes(data)))
    if hit is not None:
        return cast(R, hit)
    record = _load(cls, data)
    _remember(cast(type, cls), data, record)
    return record


def _remember(cls: type, data: bytes, record: Any) -> None:
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[(cls, bytes(data))] = record


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        kt, vt = typing.get_args(hint)
        return isinstance(value, dict) and all(_type_ok(k, kt) and _type_ok(v, vt) for k, v in value.items())
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(cls: type[R], data: bytes) -> R:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise StoreDataError(f"stored {cls.__name__} is not JSON") from None
    if not isinstance(raw, dict):
        raise StoreDataError(f"stored {cls.__name__} is not an object")
    hints = _hints(typing.cast(type, cls))
    kwargs: JSONDict = {}
    for f in _fields(cast(Hashable, cls)):
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise StoreDataError(f"stored {cls.__name__} lacks {f.name!r}")
            continue
        if not _type_ok(raw[f.name], hints[f.name]):
            raise StoreDataError(f"stored {cls.__name__} has a bad {f.name!r}")
        kwargs[f.name] = raw[f.name]
    return cls(**kwargs)
