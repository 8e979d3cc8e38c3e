"""The in-memory store: the same contract as `SqliteStore`, kept in dicts, gone when the process ends.

Owns: nothing on disk. For tests and for throwaway sessions. Rules:
- Values are stored codec-encoded exactly as SQLite stores them, so both backends see the same bytes
  and a codec failure behaves the same.
- A write runs on a scratch copy of the data and replaces the original only if it completes, which
  gives `save_sync_batch` the same all-or-nothing behaviour as a database transaction (at O(size)
  cost per write: fine for tests, not for large accounts).
- No I/O and no awaits inside an operation: each call runs to completion on the event loop.
- Crypto objects (`CryptoStore`) are kept under the same lookup keys and blobs as in SQLite
  (`_tx.crypto_keys`): the crypto machine's own in-memory store lives in crypto_memory.py; this one
  exists so that the whole `Store` contract, atomic change sets included, runs on both backends.
- `MemoryStore(passphrase=...)` uses an `AeadCodec` with a fresh random salt (for `derive_key`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from nimbus.crypto.store import CryptoChanges
from nimbus.store import _tx
from nimbus.store.base import JSONDict, OutboxEntry, Session, StoreClosed, StoreError, UnknownOutboxEntry
from nimbus.store.codec import PlainCodec, ValueCodec
from nimbus.store.encryption import AeadCodec, KdfParams
from nimbus.types.events import Event, StrippedState, SyncBatch
from nimbus.types.ids import DeviceId, EventId, RoomId, TxnId, UserId

T = TypeVar("T")
_Key = tuple[str, str]


@dataclass
class _Outbox:
    seq: int
    entry: OutboxEntry  # with content replaced by {} — the content lives encoded in `blob`
    blob: bytes


@dataclass
class _Data:
    session: tuple[str, str, str, bytes] | None = None
    sync_token: str | None = None
    rooms: dict[str, str] = field(default_factory=dict)
    state: dict[str, dict[_Key, tuple[str, bytes]]] = field(default_factory=dict)
    timeline: dict[str, dict[int, tuple[str, bytes]]] = field(default_factory=dict)
    positions: dict[str, dict[str, int]] = field(default_factory=dict)
    gaps: dict[str, dict[int, str]] = field(default_factory=dict)
    invites: dict[str, dict[_Key, bytes]] = field(default_factory=dict)
    account: dict[_Key, bytes] = field(default_factory=dict)
    outbox: dict[str, _Outbox] = field(default_factory=dict)
    next_seq: int = 1
    # (kind, grp_key) -> item_key -> (item_blob, value_blob)
    crypto: dict[tuple[str, bytes], dict[bytes, tuple[bytes, bytes]]] = field(default_factory=dict)
    decrypted: dict[tuple[str, str], bytes] = field(default_factory=dict)
    # (kind, item_key) -> (item_blob, value_blob)
    ai: dict[tuple[str, bytes], tuple[bytes, bytes]] = field(default_factory=dict)


class _MemoryTx:
    """`_tx.Tx` over a scratch copy of the data."""

    def __init__(self, data: _Data, codec: ValueCodec) -> None:
        self.d = data
        self.codec = codec

    def set_membership(self, room_id: RoomId, membership: str) -> None:
        self.d.rooms[room_id] = membership

    def put_state(self, room_id: RoomId, type: str, state_key: str, event_id: str, blob: bytes) -> None:
        self.d.state.setdefault(room_id, {})[(type, state_key)] = (event_id, blob)

    def replace_invite_state(self, room_id: RoomId, items: list[tuple[str, str, bytes]]) -> None:
        self.d.invites[room_id] = {(t, k): b for t, k, b in items}

    def event_pos(self, room_id: RoomId, event_id: str) -> int | None:
        return self.d.positions.get(room_id, {}).get(event_id)

    def timeline_bounds(self, room_id: RoomId) -> tuple[int, int] | None:
        events = self.d.timeline.get(room_id)
        return (min(events), max(events)) if events else None

    def max_pos_below(self, room_id: RoomId, pos: int) -> int | None:
        below = [p for p in self.d.timeline.get(room_id, {}) if p < pos]
        return max(below) if below else None

    def insert_event(self, room_id: RoomId, pos: int, event_id: str, blob: bytes) -> None:
        events = self.d.timeline.setdefault(room_id, {})
        positions = self.d.positions.setdefault(room_id, {})
        if pos in events or event_id in positions:
            raise StoreError("timeline position or event id already taken")
        events[pos] = (event_id, blob)
        positions[event_id] = pos

    def newest_gap(self, room_id: RoomId) -> _tx.Gap | None:
        gaps = self.d.gaps.get(room_id)
        if not gaps:
            return None
        pos = max(gaps)
        return _tx.Gap(pos, gaps[pos])

    def add_gap(self, room_id: RoomId, gap: _tx.Gap) -> None:
        self.d.gaps.setdefault(room_id, {})[gap.pos] = gap.token

    def delete_gap(self, room_id: RoomId, pos: int) -> None:
        self.d.gaps.get(room_id, {}).pop(pos, None)

    def put_account_data(self, room_key: str, type: str, blob: bytes) -> None:
        self.d.account[(room_key, type)] = blob

    def outbox_confirm(self, txn_id: str, event_id: str) -> OutboxEntry | None:
        row = self.d.outbox.get(txn_id)
        if row is None or row.entry.state == "sent":
            return None
        row.entry = replace(row.entry, state="sent", event_id=EventId(event_id))
        return self.entry(row)

    def set_sync_token(self, token: str) -> None:
        self.d.sync_token = token

    def put_crypto(
        self, kind: str, grp_key: bytes, item_key: bytes, item_blob: bytes, value_blob: bytes
    ) -> None:
        self.d.crypto.setdefault((kind, grp_key), {})[item_key] = (item_blob, value_blob)

    def delete_crypto(self, kind: str, grp_key: bytes, item_key: bytes) -> None:
        group = self.d.crypto.get((kind, grp_key))
        if group is not None:
            group.pop(item_key, None)
            if not group:
                del self.d.crypto[(kind, grp_key)]

    def put_decrypted(self, room_id: RoomId, event_id: str, blob: bytes) -> None:
        self.d.decrypted[(room_id, event_id)] = blob

    def entry(self, row: _Outbox) -> OutboxEntry:
        content = _tx.decode_content(self.codec, row.blob, "outbox content")
        return replace(row.entry, content=content)


class MemoryStore:
    """The `Store` (and `CryptoStore`) in memory.

    `MemoryStore(codec)`: the codec defaults to `PlainCodec`; `MemoryStore(passphrase=..., kdf=...)`
    encrypts with an `AeadCodec` under a fresh salt (the keys die with the store).
    """

    def __init__(
        self, codec: ValueCodec | None = None, *, passphrase: str | None = None, kdf: KdfParams | None = None
    ) -> None:
        if passphrase is not None:
            if codec is not None:
                raise ValueError("pass either a passphrase or a codec, not both")
            codec = AeadCodec.from_passphrase(passphrase, kdf=kdf)
        self._owns_codec = passphrase is not None
        self._codec: ValueCodec = codec if codec is not None else PlainCodec()
        self._data = _Data()
        self._closed = False

    @property
    def encrypted(self) -> bool:
        return isinstance(self._codec, AeadCodec)

    def derive_key(self, purpose: str) -> bytes:
        """See `SqliteStore.derive_key`."""
        if self._closed:
            raise StoreClosed("the store is closed")
        if not isinstance(self._codec, AeadCodec):
            raise StoreError("this store has no passphrase: there is no key to derive")
        return self._codec.derive_key(purpose)

    def _read(self) -> _MemoryTx:
        if self._closed:
            raise StoreClosed("the store is closed")
        return _MemoryTx(self._data, self._codec)

    def _write(self, fn: Callable[[_MemoryTx], T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        scratch = copy.deepcopy(self._data)
        result = fn(_MemoryTx(scratch, self._codec))
        self._data = scratch  # only a completed write replaces the data
        return result

    # -- session ---------------------------------------------------------------------------------

    async def load_session(self) -> Session | None:
        s = self._read().d.session
        if s is None:
            return None
        token = _tx.decode_json(self._codec, s[3], "access token")
        if not isinstance(token, str):
            raise StoreError("stored access token is malformed")
        return Session(s[0], UserId(s[1]), DeviceId(s[2]), token)

    async def save_session(self, session: Session) -> None:
        blob = _tx.encode_json(self._codec, session.access_token)

        def write(t: _MemoryTx) -> None:
            t.d.session = (session.homeserver, session.user_id, session.device_id, blob)

        self._write(write)

    async def clear_session(self) -> None:
        def write(t: _MemoryTx) -> None:
            t.d.session = None

        self._write(write)

    # -- sync ------------------------------------------------------------------------------------

    async def load_sync_token(self) -> str | None:
        return self._read().d.sync_token

    async def save_sync_batch(
        self,
        batch: SyncBatch,
        crypto: CryptoChanges | None = None,
        decrypted: Mapping[EventId, JSONDict] | None = None,
    ) -> list[OutboxEntry]:
        def write(t: _MemoryTx) -> list[OutboxEntry]:
            confirmed = _tx.apply_sync_batch(t, self._codec, batch)
            _tx.apply_crypto(t, self._codec, crypto)
            _tx.apply_decrypted(t, self._codec, decrypted, batch)
            return confirmed

        return self._write(write)

    # -- rooms -----------------------------------------------------------------------------------

    async def room_ids(self, membership: str | None = None) -> list[RoomId]:
        rooms = self._read().d.rooms
        return sorted(RoomId(r) for r, m in rooms.items() if membership is None or m == membership)

    async def membership(self, room_id: RoomId) -> str | None:
        return self._read().d.rooms.get(room_id)

    async def state_event(self, room_id: RoomId, type: str, state_key: str = "") -> Event | None:
        found = self._read().d.state.get(room_id, {}).get((type, state_key))
        return None if found is None else _tx.decode_event(self._codec, found[1], room_id)

    async def state_events(self, room_id: RoomId, type: str | None = None) -> list[Event]:
        state = self._read().d.state.get(room_id, {})
        keys = sorted(k for k in state if type is None or k[0] == type)
        return [_tx.decode_event(self._codec, state[k][1], room_id) for k in keys]

    async def timeline(
        self, room_id: RoomId, limit: int = 50, before_event: EventId | None = None
    ) -> list[Event]:
        t = self._read()
        if limit <= 0:
            return []
        events = t.d.timeline.get(room_id, {})
        positions = sorted(events)
        if before_event is not None:
            end = t.event_pos(room_id, before_event)
            if end is None:
                return []
            positions = [p for p in positions if p < end]
        return [_tx.decode_event(self._codec, events[p][1], room_id) for p in positions[-limit:]]

    async def add_backfill(
        self, room_id: RoomId, events_newest_first: list[Event], end_token: str | None
    ) -> None:
        self._write(
            lambda t: _tx.apply_backfill(t, self._codec, room_id, list(events_newest_first), end_token)
        )

    async def backfill_token(self, room_id: RoomId) -> str | None:
        gap = self._read().newest_gap(room_id)
        return None if gap is None else gap.token

    async def invite_state(self, room_id: RoomId) -> list[StrippedState]:
        invites = self._read().d.invites.get(room_id, {})
        return [_tx.decode_stripped(self._codec, invites[k]) for k in sorted(invites)]

    # -- account data ----------------------------------------------------------------------------

    async def account_data(self, type: str, room_id: RoomId | None = None) -> JSONDict | None:
        blob = self._read().d.account.get((room_id or _tx.GLOBAL, type))
        return None if blob is None else _tx.decode_content(self._codec, blob, "account data")

    async def set_account_data(self, type: str, content: JSONDict, room_id: RoomId | None = None) -> None:
        blob = _tx.encode_json(self._codec, content)
        self._write(lambda t: t.put_account_data(room_id or _tx.GLOBAL, type, blob))

    # -- outbox ----------------------------------------------------------------------------------

    async def outbox_add(self, entry: OutboxEntry, crypto: CryptoChanges | None = None) -> None:
        blob = _tx.encode_json(self._codec, entry.content)

        def write(t: _MemoryTx) -> None:
            _tx.apply_crypto(t, self._codec, crypto)
            if entry.txn_id in t.d.outbox:
                raise StoreError("an outbox entry with this transaction id already exists")
            t.d.outbox[entry.txn_id] = _Outbox(t.d.next_seq, replace(entry, content={}), blob)
            t.d.next_seq += 1

        self._write(write)

    async def outbox_seal(
        self, txn_id: TxnId, event_type: str, content: JSONDict, crypto: CryptoChanges | None = None
    ) -> None:
        blob = _tx.encode_json(self._codec, content)

        def write(t: _MemoryTx) -> None:
            _tx.apply_crypto(t, self._codec, crypto)
            row = t.d.outbox.get(txn_id)
            if row is None or row.entry.state != "pending":
                raise UnknownOutboxEntry("no pending outbox entry has this transaction id")
            row.entry = replace(row.entry, event_type=event_type)
            row.blob = blob

        self._write(write)

    async def outbox_pending(self) -> list[OutboxEntry]:
        t = self._read()
        rows = sorted(
            (r for r in t.d.outbox.values() if r.entry.state == "pending"),
            key=lambda r: (r.entry.created_ts, r.seq),
        )
        return [t.entry(r) for r in rows]

    async def outbox_get(self, txn_id: TxnId) -> OutboxEntry | None:
        t = self._read()
        row = t.d.outbox.get(txn_id)
        return None if row is None else t.entry(row)

    def _outbox_update(self, txn_id: TxnId, change: Callable[[OutboxEntry], OutboxEntry]) -> None:
        def write(t: _MemoryTx) -> None:
            row = t.d.outbox.get(txn_id)
            if row is None:
                raise UnknownOutboxEntry("no outbox entry has this transaction id")
            row.entry = change(row.entry)

        self._write(write)

    async def outbox_mark_attempt(self, txn_id: TxnId, error: str | None) -> None:
        self._outbox_update(txn_id, lambda e: replace(e, attempts=e.attempts + 1, last_error=error))

    async def outbox_mark_sent(self, txn_id: TxnId, event_id: EventId) -> None:
        self._outbox_update(txn_id, lambda e: replace(e, state="sent", event_id=event_id))

    async def outbox_mark_failed(self, txn_id: TxnId, error: str) -> None:
        self._outbox_update(txn_id, lambda e: replace(e, state="failed", last_error=error))

    # -- decrypted-event cache -------------------------------------------------------------------

    async def save_decrypted(
        self, room_id: RoomId, event_id: EventId, plaintext_event_json: JSONDict
    ) -> None:
        blob = _tx.encode_json(self._codec, plaintext_event_json)
        self._write(lambda t: t.put_decrypted(room_id, event_id, blob))

    async def decrypted(self, room_id: RoomId, event_ids: list[EventId]) -> dict[EventId, JSONDict]:
        stored = self._read().d.decrypted
        out: dict[EventId, JSONDict] = {}
        for event_id in event_ids:
            blob = stored.get((room_id, event_id))
            if blob is not None:
                out[event_id] = _tx.decode_content(self._codec, blob, "decrypted event")
        return out

    # -- crypto objects (nimbus.crypto.store.CryptoStore) -----------------------------------------

    async def crypto_get(self, kind: str, group: str, item: str) -> bytes | None:
        grp_key, item_key = _tx.crypto_keys(self._codec, kind, group, item)
        found = self._read().d.crypto.get((kind, grp_key), {}).get(item_key)
        return None if found is None else _tx.decode_bytes(self._codec, found[1], "crypto object")

    async def crypto_list(self, kind: str, group: str) -> list[tuple[str, bytes]]:
        grp_key = _tx.index_key(self._codec, kind, group)
        rows = self._read().d.crypto.get((kind, grp_key), {})
        return [_tx.crypto_item(self._codec, item, value) for item, value in rows.values()]

    async def crypto_save(self, changes: CryptoChanges) -> None:
        self._write(lambda t: _tx.apply_crypto(t, self._codec, changes))

    # -- on-device AI objects (nimbus.store.base.AiStore) -----------------------------------------

    async def ai_put(self, kind: str, item: str, value: bytes) -> None:
        await self.ai_put_many(kind, [(item, value)])

    async def ai_put_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        rows = [_ai_row(self._codec, kind, item, value) for item, value in items]

        def write(t: _MemoryTx) -> None:
            for key, item_blob, value_blob in rows:
                t.d.ai[(kind, key)] = (item_blob, value_blob)

        self._write(write)

    async def ai_get(self, kind: str, item: str) -> bytes | None:
        found = self._read().d.ai.get((kind, _tx.index_key(self._codec, kind, item)))
        return None if found is None else _tx.decode_bytes(self._codec, found[1], "AI object")

    async def ai_list(self, kind: str) -> list[tuple[str, bytes]]:
        rows = self._read().d.ai
        return [_tx.crypto_item(self._codec, i, v) for (k, _), (i, v) in rows.items() if k == kind]

    async def ai_delete(self, kind: str, item: str) -> bool:
        key = (kind, _tx.index_key(self._codec, kind, item))

        def write(t: _MemoryTx) -> bool:
            return t.d.ai.pop(key, None) is not None

        return self._write(write)

    async def ai_delete_all(self, kind: str | None = None) -> None:
        def write(t: _MemoryTx) -> None:
            t.d.ai = {} if kind is None else {k: v for k, v in t.d.ai.items() if k[0] != kind}

        self._write(write)

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        if self._owns_codec and isinstance(self._codec, AeadCodec):
            self._codec.close()


def _ai_row(codec: ValueCodec, kind: str, item: str, value: bytes) -> tuple[bytes, bytes, bytes]:
    """(item_key, item_blob, value_blob) of one AI object (see migrations/0003_ai.sql)."""
    return _tx.index_key(codec, kind, item), codec.encode(item.encode("utf-8")), codec.encode(value)
