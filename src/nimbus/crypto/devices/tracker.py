"""Device tracking: which users we track, their verified device keys, and /keys/query.

Spec: https://spec.matrix.org/v1.12/client-server-api/#tracking-the-device-list-for-a-user and
"Device keys". Rules:
- a user is queried when first tracked and whenever device_lists.changed names them; `left` stops
  tracking;
- every device key object must carry a valid self-signature by its own Ed25519 key, and its user_id and
  device_id must match where it was listed; otherwise it is rejected (recorded, never used);
- a device whose keys change under the same device id is rejected and the keys we knew are kept;
- a device missing from a fresh answer is removed (which rotates outbound Megolm sessions shared with it).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from nimbus.api import keys as keys_api
from nimbus.api.request import Request
from nimbus.crypto import records
from nimbus.crypto.canonical_json import SignatureError, verify_json
from nimbus.crypto.records import DeviceRecord, RejectedDeviceRecord, TrackedUserRecord
from nimbus.crypto.state import State
from nimbus.types.ids import UserId


@dataclass(frozen=True)
class DeviceProblem:
    """A device key object we refused, and why (shown to the user; holds no key material)."""

    user_id: str
    device_id: str
    reason: str


def check_device_keys(obj: Any, user_id: str, device_id: str) -> DeviceRecord:
    """Validate one device key object (shape, ids, self-signature). Raises ValueError with a reason."""
    if not isinstance(obj, dict):
        raise ValueError("device keys are not an object")
    if obj.get("user_id") != user_id or obj.get("device_id") != device_id:
        raise ValueError("device keys name another user or device")
    keys = obj.get("keys")
    algorithms = obj.get("algorithms", [])
    if not isinstance(keys, dict) or not isinstance(algorithms, list):
        raise ValueError("device keys lack keys or algorithms")
    curve = keys.get(f"curve25519:{device_id}")
    ed = keys.get(f"ed25519:{device_id}")
    if not isinstance(curve, str) or not isinstance(ed, str):
        raise ValueError("device keys lack a curve25519 or ed25519 key")
    try:
        verify_json(obj, user_id, f"ed25519:{device_id}", ed)
    except SignatureError as e:
        raise ValueError(f"self-signature check failed: {e}") from None
    return DeviceRecord(
        user_id=user_id,
        device_id=device_id,
        curve25519=curve,
        ed25519=ed,
        algorithms=[a for a in algorithms if isinstance(a, str)],
        keys_json={k: v for k, v in obj.items() if k != "unsigned"},
    )


class DeviceTracker:
    def __init__(self, state: State, own_user: str, own_device: str) -> None:
        self.state = state
        self.own_user = own_user
        self.own_device = own_device
        # request id → users it asked about (in memory: a lost query is simply asked again)
        self._in_flight: dict[str, tuple[set[str], Request]] = {}
        self.answered: set[str] = set()  # users some query answered for since load
        self._dirty_again: set[str] = set()
        self.problems: list[DeviceProblem] = []

    async def tracked(self) -> dict[str, TrackedUserRecord]:
        return await self.state.list(TrackedUserRecord, records.TRACKED_USER, "")

    async def is_tracked(self, user_id: str) -> bool:
        return await self.state.get_raw(records.TRACKED_USER, "", user_id) is not None

    async def track(self, users: list[str]) -> None:
        for user in users:
            if not await self.is_tracked(user):
                self.state.put(records.TRACKED_USER, "", user, TrackedUserRecord(outdated=True))

    async def mark_changed(self, users: list[str]) -> None:
        """device_lists.changed: query again (only users we track)."""
        for user in users:
            if await self.is_tracked(user):
                self.state.put(records.TRACKED_USER, "", user, TrackedUserRecord(outdated=True))
                self._dirty_again.add(user)

    async def stop_tracking(self, users: list[str]) -> None:
        """device_lists.left: we share no encrypted room with them any more."""
        for user in users:
            if user != self.own_user:
                self.state.delete(records.TRACKED_USER, "", user)

    async def outdated(self) -> list[str]:
        return sorted(u for u, r in (await self.tracked()).items() if r.outdated)

    async def query_request(self) -> tuple[str, Request] | None:
        for request_id, (_, request) in self._in_flight.items():
            return request_id, request  # one query at a time; the same one until it is answered
        users = await self.outdated()
        if not users:
            return None
        request_id = f"keys_query-{secrets.token_hex(8)}"
        request = keys_api.query_keys(users)
        self._in_flight[request_id] = (set(users), request)
        for u in users:
            self._dirty_again.discard(u)
        return request_id, request

    def owns(self, request_id: str) -> bool:
        return request_id in self._in_flight

    async def receive_query(self, request_id: str, body: Any) -> list[str]:
        """Apply a /keys/query answer (raw, or already parsed). Returns users whose device set changed."""
        response = body if isinstance(body, keys_api.KeysQueryResponse) else keys_api.parse_query_keys(body)
        asked, _ = self._in_flight.pop(request_id)
        self.answered |= asked
        changed: list[str] = []
        for user in asked:
            devices: dict[Any, Any] | None = response.device_keys.get(UserId(user))
            if devices is None:
                continue  # a failure (e.g. remote server down): stays outdated
            if await self._apply_user(user, devices):
                changed.append(user)
            if user not in self._dirty_again and await self.is_tracked(user):
                self.state.put(records.TRACKED_USER, "", user, TrackedUserRecord(outdated=False))
        return changed

    async def _apply_user(self, user: str, devices: dict[Any, Any]) -> bool:
        known = await self.devices(user)
        changed = False
        for device_id, obj in devices.items():
            if not isinstance(device_id, str):
                continue
            try:
                record = check_device_keys(obj, user, device_id)
            except ValueError as e:
                self._reject(user, device_id, str(e))
                continue
            old = known.get(device_id)
            if old is not None and (old.curve25519, old.ed25519) != (record.curve25519, record.ed25519):
                self._reject(user, device_id, "keys changed under the same device id")
                continue
            if old is None:
                changed = True
            self.state.put(records.DEVICE, user, device_id, record)
        for device_id in known:
            if device_id not in devices:
                self.state.delete(records.DEVICE, user, device_id)
                changed = True
        return changed

    @staticmethod
    def problem(user: str, device_id: str, reason: str) -> DeviceProblem:
        return DeviceProblem(user, device_id, reason)

    def _reject(self, user: str, device_id: str, reason: str) -> None:
        self.problems.append(DeviceProblem(user, device_id, reason))
        self.state.put(
            records.REJECTED_DEVICE, user, device_id, RejectedDeviceRecord(user, device_id, reason)
        )

    async def devices(self, user: str) -> dict[str, DeviceRecord]:
        return await self.state.list(DeviceRecord, records.DEVICE, user)

    async def device(self, user: str, device_id: str) -> DeviceRecord | None:
        return await self.state.get(DeviceRecord, records.DEVICE, user, device_id)

    async def device_by_curve(self, user: str, curve25519: str) -> DeviceRecord | None:
        for dev in (await self.devices(user)).values():
            if dev.curve25519 == curve25519:
                return dev
        return None

    async def rejected(self, user: str) -> dict[str, RejectedDeviceRecord]:
        return await self.state.list(RejectedDeviceRecord, records.REJECTED_DEVICE, user)
