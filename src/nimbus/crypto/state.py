"""The machine's read-through overlay: uncommitted changes first, then the committed store.

Every sub-machine writes only here. `take()` hands the accumulated `CryptoChanges` to the caller, who
commits them in one transaction (with the sync batch or the outbox entry). Until the caller commits,
reads still see the changes, so the machine never acts on stale state; if the process dies first, the
store still holds the previous consistent state and nothing that left the process depended on the lost
changes (ciphertext leaves only after its change set is committed: see machine.py).
"""

from __future__ import annotations

from typing import TypeVar

from nimbus.crypto import records
from nimbus.crypto.store import CryptoChanges, CryptoStore

R = TypeVar("R")


class State:
    def __init__(self, store: CryptoStore) -> None:
        self.store = store
        self.pending = CryptoChanges()  # not yet taken by the caller
        self.taken = CryptoChanges()  # taken, maybe not yet committed: still read through

    async def get_raw(self, kind: str, group: str, item: str) -> bytes | None:
        for layer in (self.pending, self.taken):
            known, value = layer.get(kind, group, item)
            if known:
                return value
        return await self.store.crypto_get(kind, group, item)

    async def get(self, cls: type[R], kind: str, group: str, item: str) -> R | None:
        raw = await self.get_raw(kind, group, item)
        return None if raw is None else records.load(cls, raw)

    async def list_raw(self, kind: str, group: str) -> dict[str, bytes]:
        out = dict(await self.store.crypto_list(kind, group))
        for layer in (self.taken, self.pending):
            for (k, g, item), value in layer.objects.items():
                if k == kind and g == group:
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
            if key in self.taken.objects and self.taken.objects[key] == value:
                del self.taken.objects[key]
