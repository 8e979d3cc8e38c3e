"""An in-memory CryptoStore (nimbus.crypto.store): a dict, each change set applied atomically.

For tests and ephemeral sessions. Values are kept as given (the machine's vodozemac pickles are already
encrypted with its pickle key; nothing here is written to disk). `save` applies a whole change set or,
if it is malformed, nothing.
"""

from __future__ import annotations

from nimbus.crypto.store import CryptoChanges, ObjectKey


class MemoryCryptoStore:
    """Implements nimbus.crypto.store.CryptoStore."""

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, bytes] = {}
        self.commits = 0

    async def crypto_get(self, kind: str, group: str, item: str) -> bytes | None:
        return self._objects.get((kind, group, item))

    async def crypto_list(self, kind: str, group: str) -> list[tuple[str, bytes]]:
        return [(i, v) for (k, g, i), v in self._objects.items() if k == kind and g == group]

    async def crypto_save(self, changes: CryptoChanges) -> None:
        for key, value in changes.objects.items():
            if len(key) != 3 or not all(isinstance(p, str) for p in key):
                raise TypeError("a crypto object key is (kind, group, item) strings")
            if value is not None and not isinstance(value, bytes):
                raise TypeError("a crypto object value is bytes or None")
        for key, value in changes.objects.items():
            if value is None:
                self._objects.pop(key, None)
            else:
                self._objects[key] = value
        self.commits += 1

    def snapshot(self) -> dict[ObjectKey, bytes]:
        """A copy of everything committed (for tests)."""
        return dict(self._objects)
