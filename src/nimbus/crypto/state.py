"""The machine's read-through overlay: uncommitted changes first, then the committed store.

Every sub-machine writes only here. `take()` hands the accumulated `CryptoChanges` to the caller, who
commits them in one transaction (with the sync batch or the outbox entry). Until the caller commits,
reads still see the changes, so the machine never acts on stale state; if the process dies first, the
store still holds the previous consistent state and nothing that left the process depended on the lost
changes (ciphertext leaves only after its change set is committed: see machine.py).

Below the overlay sits a cache of committed objects: the machine is the only writer of its crypto
state (one process holds a profile), so what it read once, or what the caller told it was committed,
stays valid. This keeps a message's send path from re-reading and re-decrypting the same records.
"""

from __future__ import annotations

from typing import TypeVar

from nimbus.crypto import records
from nimbus.crypto.store import CryptoChanges, CryptoStore, ObjectKey

R = TypeVar("R")


class State:
    def __init__(self, store: CryptoStore) -> None:
        self.store = store
        self.pending = CryptoChanges()  # not yet taken by the caller
        self.taken = CryptoChanges()  # taken, maybe not yet committed: still read through
        self._objects: dict[ObjectKey, bytes | None] = {}  # committed objects read or written
        self._groups: dict[tuple[str, str], dict[str, bytes]] = {}  # whole committed groups

    async def get_raw(self, kind: str, group: str, item: str) -> bytes | None:
        for layer in (self.pending, self.taken):
            known, value = layer.get(kind, group, item)
            if known:
                return value
        key = (kind, group, item)
        if key in self._objects:
            return self._objects[key]
        listed = self._groups.get((kind, group))
        if listed is not None:
            return listed.get(item)
        value = await self.store.crypto_get(kind, group, item)
        self._objects[key] = value
        return value

    async def get(self, cls: type[R], kind: str, group: str, item: str) -> R | None:
        raw = await self.get_raw(kind, group, item)
        return None if raw is None else records.load(cls, raw)

    async def list_raw(self, kind: str, group: str) -> dict[str, bytes]:
        listed = self._groups.get((kind, group))
        if listed is None:
            listed = dict(await self.store.crypto_list(kind, group))
            self._groups[(kind, group)] = listed
        out = dict(listed)
        for layer in (self.taken, self.pending):
            for item, value in layer.group(kind, group).items():
                if value is None:
                    out.pop(item, None)
                else:
                    out[item] = value
        return out

    async def list(self, cls: type[R], kind: str, group: str) -> dict[str, R]:
        return {item: records.load(cls, raw) for item, raw in (await self.list_raw(kind, group)).items()}

    def put(self, kind: str, group: str, item: str, record: object) -> None:
        self.pending.put(kind, group, item, records.dump(record))

    def delete(self, kind: str, group: str, item: str) -> None:
        self.pending.delete(kind, group, item)

    def take(self) -> CryptoChanges:
        out = self.pending
        self.taken.merge(out)
        self.pending = CryptoChanges()
        return out

    def committed(self, changes: CryptoChanges) -> None:
        """The caller committed `changes`: the store now answers for them, drop them from the overlay."""
        for key, value in changes.objects.items():
            self._objects[key] = value
            listed = self._groups.get((key[0], key[1]))
            if listed is not None:
                if value is None:
                    listed.pop(key[2], None)
                else:
                    listed[key[2]] = value
            if key in self.taken.objects and self.taken.objects[key] == value:
                self.taken.discard(key)
