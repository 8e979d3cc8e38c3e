"""What the crypto machine needs from a store. The store layer implements it; crypto never imports store.

The contract is deliberately small and generic: crypto state is a set of objects addressed by
(kind, group, item), each an opaque byte string the machine serialises itself (see crypto/records.py).
Examples: ("olm_session", sender_curve25519_key, session_id), ("inbound_group_session", room_id,
session_id), ("device", user_id, device_id), ("replay", session_id, str(message_index)),
("account", "", ""), ("outgoing", "", request_id).

Rules the store must keep:
- every value and every group/item is encrypted or keyed (HMAC) at rest by the store's codec: the
  database never shows a key, a session id, a plaintext or who talked to whom in the clear;
- `CryptoChanges` are written in ONE transaction, together with whatever else the caller saves in the
  same call (`save_sync_batch(batch, crypto=...)`, `outbox_add(entry, crypto=...)`): a ratchet advance
  and the ciphertext it produced are durable together or not at all;
- `get`/`list_group` see only committed data: the machine keeps its own overlay of uncommitted changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

ObjectKey = tuple[str, str, str]
"""(kind, group, item)."""


@dataclass
class CryptoChanges:
    """Puts (value bytes) and deletes (None) of crypto objects, committed atomically.

    Write through `put`/`delete`/`merge`/`discard` (they keep an index by (kind, group), so reading a
    group does not scan every change: a share with a thousand devices makes thousands of changes)."""

    objects: dict[ObjectKey, bytes | None] = field(default_factory=dict)
    _groups: dict[tuple[str, str], dict[str, bytes | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for (kind, group, item), value in self.objects.items():
            self._groups.setdefault((kind, group), {})[item] = value

    def _set(self, key: ObjectKey, value: bytes | None) -> None:
        self.objects[key] = value
        self._groups.setdefault((key[0], key[1]), {})[key[2]] = value

    def put(self, kind: str, group: str, item: str, value: bytes) -> None:
        self._set((kind, group, item), value)

    def delete(self, kind: str, group: str, item: str) -> None:
        self._set((kind, group, item), None)

    def discard(self, key: ObjectKey) -> None:
        """Forget what this change set says about one object."""
        if self.objects.pop(key, _MISSING) is not _MISSING:
            items = self._groups.get((key[0], key[1]))
            if items is not None:
                items.pop(key[2], None)

    def get(self, kind: str, group: str, item: str) -> tuple[bool, bytes | None]:
        """(known, value): whether this change set says anything about the object, and what."""
        key = (kind, group, item)
        if key in self.objects:
            return True, self.objects[key]
        return False, None

    def group(self, kind: str, group: str) -> dict[str, bytes | None]:
        """item → value (None = deleted) of one group, as this change set says."""
        return self._groups.get((kind, group), {})

    def merge(self, later: CryptoChanges) -> None:
        for key, value in later.objects.items():
            self._set(key, value)

    def __bool__(self) -> bool:
        return bool(self.objects)

    def __len__(self) -> int:
        return len(self.objects)


_MISSING = object()


class CryptoStore(Protocol):
    """Committed crypto state. Implemented by nimbus.store (SQLite, encrypted at rest; and in memory)."""

    async def crypto_get(self, kind: str, group: str, item: str) -> bytes | None:
        """One object, or None."""
        ...

    async def crypto_list(self, kind: str, group: str) -> list[tuple[str, bytes]]:
        """Every (item, value) of one group, in no particular order."""
        ...

    async def crypto_save(self, changes: CryptoChanges) -> None:
        """Commit a change set on its own, in one transaction."""
        ...
