"""The on-disk store: SQLite in WAL mode, driven from one dedicated worker thread.

Owns: the database file and every SQL statement that reads or writes it. Rules:
- All SQLite work runs on one worker thread (a single-thread executor); the event loop only awaits.
  Calls are therefore serialized, and each write is one transaction (BEGIN IMMEDIATE … COMMIT, or
  ROLLBACK on any error). A cancelled caller does not cancel the transaction: it still commits or
  rolls back as a whole.
- Opened with a passphrase (`SqliteStore.open(path, passphrase=...)`), every secret or content value is
  AEAD-encrypted (`nimbus.store.encryption`); opening details (passphrase check before any write,
  `meta`, pragmas) are in `nimbus.store._sqlite_open`. What stays plain on disk: room/event/user/device
  ids, membership, event types and state keys, timestamps, sync and /messages tokens, outbox state and
  error codes, crypto object kinds. Everything else (access token, event JSON, account data, outbox
  content, crypto values and the group/item names of crypto objects, decrypted plaintexts) is
  ciphertext, also in the -wal file; -shm holds only WAL indexes.
- The file and its -wal/-shm are created with mode 0600 (SQLite gives the -wal/-shm the database
  file's mode); an existing file with looser permissions is tightened on open.
- `PRAGMA synchronous=FULL`: a commit (e.g. `outbox_add`) is on disk when the call returns.
- Secret and content columns (`*_blob`) go through the `ValueCodec` (see `nimbus.store.codec`).
- Schema: numbered migrations (`nimbus.store.migrate`); a newer schema is refused.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from nimbus.crypto.store import CryptoChanges
from nimbus.store import _tx
from nimbus.store._sqlite_open import open_database
from nimbus.store._sqlite_tx import OUTBOX_INSERT, OUTBOX_SELECT, SqliteTx, outbox_get
from nimbus.store.base import (
    JSONDict,
    OutboxEntry,
    Session,
    StoreClosed,
    StoreError,
    UnknownOutboxEntry,
)
from nimbus.store.codec import ValueCodec
from nimbus.store.encryption import AeadCodec, KdfParams, PassphraseRequired
from nimbus.store.migrate import Migration, bundled_migrations
from nimbus.types.events import Event, StrippedState, SyncBatch
from nimbus.types.ids import DeviceId, EventId, RoomId, TxnId, UserId

T = TypeVar("T")


class SqliteStore:
    """The `Store` (and `CryptoStore`) on an SQLite file.

    Open with `await SqliteStore.open(path, passphrase=...)`; `await close()` after.
    """

    def __init__(
        self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, codec: ValueCodec, owns_codec: bool
    ) -> None:
        self._executor = executor
        self._conn = conn
        self._codec = codec
        self._owns_codec = owns_codec
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        codec: ValueCodec | None = None,
        *,
        passphrase: str | None = None,
        kdf: KdfParams | None = None,
        migrations: list[Migration] | None = None,
    ) -> SqliteStore:
        """Open (creating if needed) and migrate the database at `path`.

        `passphrase`: the store's passphrase (required; an empty one is refused). A new database gets a
        random salt and `kdf` (default `KdfParams()`; an existing database keeps the parameters it was
        created with). `codec`: ONLY for tests that want a specific codec (e.g. `PlainCodec()`); it
        cannot be combined with a passphrase, and cannot open an encrypted database.
        With neither, PassphraseRequired: there is no default and no unencrypted fallback.
        Raises WrongPassphrase, PassphraseRequired, SchemaTooNew, StoreCorrupt, StoreError.
        """
        if passphrase is not None and codec is not None:
            raise ValueError("pass either a passphrase or a codec, not both")
        if passphrase is not None and not passphrase:
            raise PassphraseRequired("an empty passphrase is refused; the store needs a real passphrase")
        if passphrase is None and codec is None:
            raise PassphraseRequired("the store needs a passphrase (there is no default)")
        migs = migrations if migrations is not None else bundled_migrations()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nimbus-store")
        loop = asyncio.get_running_loop()
        try:
            conn, chosen, owned = await loop.run_in_executor(
                executor, open_database, Path(path), migs, codec, passphrase, kdf
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, chosen, owned)

    @property
    def encrypted(self) -> bool:
        """Whether values are encrypted at rest with a passphrase-derived key."""
        return isinstance(self._codec, AeadCodec)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. "vodozemac-pickle"), derived from the store's passphrase.

        Raises StoreError on a store opened without a passphrase (there is no key to derive from).
        """
        if self._closed:
            raise StoreClosed("the store is closed")
        if not isinstance(self._codec, AeadCodec):
            raise StoreError("this store has no passphrase: there is no key to derive")
        return self._codec.derive_key(purpose)

    # -- plumbing --------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")

        def job() -> T:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def txn(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(txn)

    # -- session ---------------------------------------------------------------------------------

    async def load_session(self) -> Session | None:
        def read(c: sqlite3.Connection) -> Session | None:
            row = c.execute(
                "SELECT homeserver, user_id, device_id, access_token_blob FROM session WHERE id = 1"
            ).fetchone()
            if row is None:
                return None
            token = _tx.decode_json(self._codec, row[3], "access token")
            if not isinstance(token, str):
                raise StoreError("stored access token is malformed")
            return Session(str(row[0]), UserId(row[1]), DeviceId(row[2]), token)

        return await self._run(read)

    async def save_session(self, session: Session) -> None:
        blob = _tx.encode_json(self._codec, session.access_token)
        await self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO session (id, homeserver, user_id, device_id, access_token_blob) "
                "VALUES (1, ?, ?, ?, ?)",
                (session.homeserver, session.user_id, session.device_id, blob),
            )
        )

    async def clear_session(self) -> None:
        await self._write(lambda c: c.execute("DELETE FROM session"))

    # -- sync ------------------------------------------------------------------------------------

    async def load_sync_token(self) -> str | None:
        def read(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT next_batch FROM sync_token WHERE id = 1").fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def save_sync_batch(
        self,
        batch: SyncBatch,
        crypto: CryptoChanges | None = None,
        decrypted: Mapping[EventId, JSONDict] | None = None,
    ) -> list[OutboxEntry]:
        def write(c: sqlite3.Connection) -> list[OutboxEntry]:
            tx = SqliteTx(c, self._codec)
            confirmed = _tx.apply_sync_batch(tx, self._codec, batch)
            _tx.apply_crypto(tx, self._codec, crypto)
            _tx.apply_decrypted(tx, self._codec, decrypted, batch)
            return confirmed

        return await self._write(write)

    # -- rooms -----------------------------------------------------------------------------------

    async def room_ids(self, membership: str | None = None) -> list[RoomId]:
        def read(c: sqlite3.Connection) -> list[RoomId]:
            if membership is None:
                rows = c.execute("SELECT room_id FROM rooms ORDER BY room_id").fetchall()
            else:
                rows = c.execute(
                    "SELECT room_id FROM rooms WHERE membership = ? ORDER BY room_id", (membership,)
                ).fetchall()
            return [RoomId(r[0]) for r in rows]

        return await self._run(read)

    async def membership(self, room_id: RoomId) -> str | None:
        def read(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT membership FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def state_event(self, room_id: RoomId, type: str, state_key: str = "") -> Event | None:
        def read(c: sqlite3.Connection) -> Event | None:
            row = c.execute(
                "SELECT event_blob FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                (room_id, type, state_key),
            ).fetchone()
            return None if row is None else _tx.decode_event(self._codec, row[0], room_id)

        return await self._run(read)

    async def state_events(self, room_id: RoomId, type: str | None = None) -> list[Event]:
        def read(c: sqlite3.Connection) -> list[Event]:
            sql = "SELECT event_blob FROM current_state WHERE room_id = ?"
            args: tuple[str, ...] = (room_id,)
            if type is not None:
                sql, args = sql + " AND type = ?", (room_id, type)
            rows = c.execute(sql + " ORDER BY type, state_key", args).fetchall()
            return [_tx.decode_event(self._codec, r[0], room_id) for r in rows]

        return await self._run(read)

    async def timeline(
        self, room_id: RoomId, limit: int = 50, before_event: EventId | None = None
    ) -> list[Event]:
        def read(c: sqlite3.Connection) -> list[Event]:
            if limit <= 0:
                return []
            sql = "SELECT event_blob FROM timeline WHERE room_id = ?"
            args: tuple[object, ...] = (room_id,)
            if before_event is not None:
                pos = SqliteTx(c, self._codec).event_pos(room_id, before_event)
                if pos is None:
                    return []
                sql, args = sql + " AND pos < ?", (room_id, pos)
            rows = c.execute(sql + " ORDER BY pos DESC LIMIT ?", (*args, limit)).fetchall()
            return [_tx.decode_event(self._codec, r[0], room_id) for r in reversed(rows)]

        return await self._run(read)

    async def add_backfill(
        self, room_id: RoomId, events_newest_first: list[Event], end_token: str | None
    ) -> None:
        await self._write(
            lambda c: _tx.apply_backfill(
                SqliteTx(c, self._codec), self._codec, room_id, list(events_newest_first), end_token
            )
        )

    async def backfill_token(self, room_id: RoomId) -> str | None:
        def read(c: sqlite3.Connection) -> str | None:
            gap = SqliteTx(c, self._codec).newest_gap(room_id)
            return None if gap is None else gap.token

        return await self._run(read)

    async def invite_state(self, room_id: RoomId) -> list[StrippedState]:
        def read(c: sqlite3.Connection) -> list[StrippedState]:
            rows = c.execute(
                "SELECT event_blob FROM invite_state WHERE room_id = ? ORDER BY type, state_key", (room_id,)
            ).fetchall()
            return [_tx.decode_stripped(self._codec, r[0]) for r in rows]

        return await self._run(read)

    # -- account data ----------------------------------------------------------------------------

    async def account_data(self, type: str, room_id: RoomId | None = None) -> JSONDict | None:
        def read(c: sqlite3.Connection) -> JSONDict | None:
            row = c.execute(
                "SELECT content_blob FROM account_data WHERE room_id = ? AND type = ?",
                (room_id or _tx.GLOBAL, type),
            ).fetchone()
            return None if row is None else _tx.decode_content(self._codec, row[0], "account data")

        return await self._run(read)

    async def set_account_data(self, type: str, content: JSONDict, room_id: RoomId | None = None) -> None:
        blob = _tx.encode_json(self._codec, content)
        await self._write(
            lambda c: SqliteTx(c, self._codec).put_account_data(room_id or _tx.GLOBAL, type, blob)
        )

    # -- outbox ----------------------------------------------------------------------------------

    async def outbox_add(self, entry: OutboxEntry, crypto: CryptoChanges | None = None) -> None:
        blob = _tx.encode_json(self._codec, entry.content)

        def write(c: sqlite3.Connection) -> None:
            _tx.apply_crypto(SqliteTx(c, self._codec), self._codec, crypto)
            try:
                c.execute(
                    OUTBOX_INSERT,
                    (
                        entry.txn_id,
                        entry.room_id,
                        entry.event_type,
                        blob,
                        entry.state,
                        entry.event_id,
                        entry.created_ts,
                        entry.attempts,
                        entry.last_error,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError("an outbox entry with this transaction id already exists") from exc

        await self._write(write)

    async def outbox_seal(
        self, txn_id: TxnId, event_type: str, content: JSONDict, crypto: CryptoChanges | None = None
    ) -> None:
        blob = _tx.encode_json(self._codec, content)

        def write(c: sqlite3.Connection) -> None:
            _tx.apply_crypto(SqliteTx(c, self._codec), self._codec, crypto)
            cur = c.execute(
                "UPDATE outbox SET event_type = ?, content_blob = ? WHERE txn_id = ? AND state = 'pending'",
                (event_type, blob, txn_id),
            )
            if cur.rowcount != 1:
                raise UnknownOutboxEntry("no pending outbox entry has this transaction id")

        await self._write(write)

    async def outbox_pending(self) -> list[OutboxEntry]:
        def read(c: sqlite3.Connection) -> list[OutboxEntry]:
            rows = c.execute(OUTBOX_SELECT + " WHERE state = 'pending' ORDER BY created_ts, seq").fetchall()
            return [_tx.outbox_entry(self._codec, *r) for r in rows]

        return await self._run(read)

    async def outbox_get(self, txn_id: TxnId) -> OutboxEntry | None:
        return await self._run(lambda c: outbox_get(c, self._codec, txn_id))

    async def _outbox_update(self, sql: str, args: tuple[object, ...]) -> None:
        def write(c: sqlite3.Connection) -> None:
            if c.execute(sql, args).rowcount == 0:
                raise UnknownOutboxEntry("no outbox entry has this transaction id")

        await self._write(write)

    async def outbox_mark_attempt(self, txn_id: TxnId, error: str | None) -> None:
        await self._outbox_update(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE txn_id = ?", (error, txn_id)
        )

    async def outbox_mark_sent(self, txn_id: TxnId, event_id: EventId) -> None:
        await self._outbox_update(
            "UPDATE outbox SET state = 'sent', event_id = ? WHERE txn_id = ?", (event_id, txn_id)
        )

    async def outbox_mark_failed(self, txn_id: TxnId, error: str) -> None:
        await self._outbox_update(
            "UPDATE outbox SET state = 'failed', last_error = ? WHERE txn_id = ?", (error, txn_id)
        )

    # -- decrypted-event cache -------------------------------------------------------------------

    async def save_decrypted(
        self, room_id: RoomId, event_id: EventId, plaintext_event_json: JSONDict
    ) -> None:
        blob = _tx.encode_json(self._codec, plaintext_event_json)
        await self._write(lambda c: SqliteTx(c, self._codec).put_decrypted(room_id, event_id, blob))

    async def decrypted(self, room_id: RoomId, event_ids: list[EventId]) -> dict[EventId, JSONDict]:
        return await self._run(lambda c: SqliteTx(c, self._codec).decrypted(room_id, event_ids))

    # -- crypto objects (nimbus.crypto.store.CryptoStore) -----------------------------------------

    async def crypto_get(self, kind: str, group: str, item: str) -> bytes | None:
        return await self._run(lambda c: SqliteTx(c, self._codec).crypto_get(kind, group, item))

    async def crypto_list(self, kind: str, group: str) -> list[tuple[str, bytes]]:
        return await self._run(lambda c: SqliteTx(c, self._codec).crypto_list(kind, group))

    async def crypto_save(self, changes: CryptoChanges) -> None:
        await self._write(lambda c: _tx.apply_crypto(SqliteTx(c, self._codec), self._codec, changes))

    # -- on-device AI objects (nimbus.store.base.AiStore) -----------------------------------------

    async def ai_put(self, kind: str, item: str, value: bytes) -> None:
        await self.ai_put_many(kind, [(item, value)])

    async def ai_put_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        rows = [(kind, *_ai_row(self._codec, kind, item, value)) for item, value in items]
        if rows:
            await self._write(
                lambda c: c.executemany(
                    "INSERT OR REPLACE INTO ai_objects (kind, item_key, item_blob, value_blob) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
            )

    async def ai_get(self, kind: str, item: str) -> bytes | None:
        key = _tx.index_key(self._codec, kind, item)

        def read(c: sqlite3.Connection) -> bytes | None:
            row = c.execute(
                "SELECT value_blob FROM ai_objects WHERE kind = ? AND item_key = ?", (kind, key)
            ).fetchone()
            return None if row is None else _tx.decode_bytes(self._codec, row[0], "AI object")

        return await self._run(read)

    async def ai_list(self, kind: str) -> list[tuple[str, bytes]]:
        def read(c: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = c.execute(
                "SELECT item_blob, value_blob FROM ai_objects WHERE kind = ?", (kind,)
            ).fetchall()
            return [_tx.crypto_item(self._codec, item, value) for item, value in rows]

        return await self._run(read)

    async def ai_delete(self, kind: str, item: str) -> bool:
        key = _tx.index_key(self._codec, kind, item)

        def delete(c: sqlite3.Connection) -> bool:
            cursor = c.execute("DELETE FROM ai_objects WHERE kind = ? AND item_key = ?", (kind, key))
            return cursor.rowcount > 0

        return await self._write(delete)

    async def ai_delete_all(self, kind: str | None = None) -> None:
        if kind is None:
            await self._write(lambda c: c.execute("DELETE FROM ai_objects"))
        else:
            await self._write(lambda c: c.execute("DELETE FROM ai_objects WHERE kind = ?", (kind,)))

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the database and stop the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True  # new calls fail now; calls already queued run first, then the close
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)
            if self._owns_codec and isinstance(self._codec, AeadCodec):
                self._codec.close()  # zero the keys


def _ai_row(codec: ValueCodec, kind: str, item: str, value: bytes) -> tuple[bytes, bytes, bytes]:
    """(item_key, item_blob, value_blob) of one AI object (see migrations/0003_ai.sql)."""
    return _tx.index_key(codec, kind, item), codec.encode(item.encode("utf-8")), codec.encode(value)
