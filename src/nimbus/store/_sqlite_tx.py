"""SQLite statements for one transaction: the `_tx.Tx` primitives, run on the store's worker thread.

Owns: the SQL behind `apply_sync_batch`/`apply_backfill`/`apply_crypto`/`apply_decrypted`, the
outbox row queries and the crypto-object and decrypted-event reads. Rules: never
commits or rolls back (the caller, `SqliteStore._write`, owns the transaction); blobs arrive encoded.
"""

from __future__ import annotations

import sqlite3

from nimbus.store import _tx
from nimbus.store.base import JSONDict, OutboxEntry
from nimbus.store.codec import ValueCodec
from nimbus.types.ids import EventId, RoomId

OUTBOX_SELECT = (
    "SELECT txn_id, room_id, event_type, content_blob, state, event_id, created_ts, attempts, last_error "
    "FROM outbox"
)
OUTBOX_INSERT = (
    "INSERT INTO outbox (txn_id, room_id, event_type, content_blob, state, event_id, created_ts, "
    "attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteTx:
    """`_tx.Tx` over an open transaction on the worker thread's connection."""

    def __init__(self, conn: sqlite3.Connection, codec: ValueCodec) -> None:
        self.c = conn
        self.codec = codec

    def set_membership(self, room_id: RoomId, membership: str) -> None:
        self.c.execute(
            "INSERT INTO rooms (room_id, membership) VALUES (?, ?) "
            "ON CONFLICT (room_id) DO UPDATE SET membership = excluded.membership",
            (room_id, membership),
        )

    def put_state(self, room_id: RoomId, type: str, state_key: str, event_id: str, blob: bytes) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO current_state (room_id, type, state_key, event_id, event_blob) "
            "VALUES (?, ?, ?, ?, ?)",
            (room_id, type, state_key, event_id, blob),
        )

    def replace_invite_state(self, room_id: RoomId, items: list[tuple[str, str, bytes]]) -> None:
        self.c.execute("DELETE FROM invite_state WHERE room_id = ?", (room_id,))
        self.c.executemany(
            "INSERT OR REPLACE INTO invite_state (room_id, type, state_key, event_blob) VALUES (?, ?, ?, ?)",
            [(room_id, t, k, b) for t, k, b in items],
        )

    def event_pos(self, room_id: RoomId, event_id: str) -> int | None:
        row = self.c.execute(
            "SELECT pos FROM timeline WHERE room_id = ? AND event_id = ?", (room_id, event_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def timeline_bounds(self, room_id: RoomId) -> tuple[int, int] | None:
        row = self.c.execute(
            "SELECT MIN(pos), MAX(pos) FROM timeline WHERE room_id = ?", (room_id,)
        ).fetchone()
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def max_pos_below(self, room_id: RoomId, pos: int) -> int | None:
        row = self.c.execute(
            "SELECT MAX(pos) FROM timeline WHERE room_id = ? AND pos < ?", (room_id, pos)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def insert_event(self, room_id: RoomId, pos: int, event_id: str, blob: bytes) -> None:
        self.c.execute(
            "INSERT INTO timeline (room_id, pos, event_id, event_blob) VALUES (?, ?, ?, ?)",
            (room_id, pos, event_id, blob),
        )

    def newest_gap(self, room_id: RoomId) -> _tx.Gap | None:
        row = self.c.execute(
            "SELECT pos, token FROM timeline_gaps WHERE room_id = ? ORDER BY pos DESC LIMIT 1", (room_id,)
        ).fetchone()
        return None if row is None else _tx.Gap(int(row[0]), str(row[1]))

    def add_gap(self, room_id: RoomId, gap: _tx.Gap) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO timeline_gaps (room_id, pos, token) VALUES (?, ?, ?)",
            (room_id, gap.pos, gap.token),
        )

    def delete_gap(self, room_id: RoomId, pos: int) -> None:
        self.c.execute("DELETE FROM timeline_gaps WHERE room_id = ? AND pos = ?", (room_id, pos))

    def put_account_data(self, room_key: str, type: str, blob: bytes) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO account_data (room_id, type, content_blob) VALUES (?, ?, ?)",
            (room_key, type, blob),
        )

    def outbox_confirm(self, txn_id: str, event_id: str) -> OutboxEntry | None:
        cur = self.c.execute(
            "UPDATE outbox SET state = 'sent', event_id = ? WHERE txn_id = ? AND state != 'sent'",
            (event_id, txn_id),
        )
        if cur.rowcount == 0:
            return None
        return outbox_get(self.c, self.codec, txn_id)

    def set_sync_token(self, token: str) -> None:
        self.c.execute("INSERT OR REPLACE INTO sync_token (id, next_batch) VALUES (1, ?)", (token,))

    def put_crypto(
        self, kind: str, grp_key: bytes, item_key: bytes, item_blob: bytes, value_blob: bytes
    ) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO crypto_objects (kind, grp_key, item_key, item_blob, value_blob) "
            "VALUES (?, ?, ?, ?, ?)",
            (kind, grp_key, item_key, item_blob, value_blob),
        )

    def delete_crypto(self, kind: str, grp_key: bytes, item_key: bytes) -> None:
        self.c.execute(
            "DELETE FROM crypto_objects WHERE kind = ? AND grp_key = ? AND item_key = ?",
            (kind, grp_key, item_key),
        )

    def put_decrypted(self, room_id: RoomId, event_id: str, blob: bytes) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO decrypted_events (room_id, event_id, event_blob) VALUES (?, ?, ?)",
            (room_id, event_id, blob),
        )

    def decrypted(self, room_id: RoomId, event_ids: list[EventId]) -> dict[EventId, JSONDict]:
        out: dict[EventId, JSONDict] = {}
        for event_id in dict.fromkeys(event_ids):
            row = self.c.execute(
                "SELECT event_blob FROM decrypted_events WHERE room_id = ? AND event_id = ?",
                (room_id, event_id),
            ).fetchone()
            if row is not None:
                out[event_id] = _tx.decode_content(self.codec, row[0], "decrypted event")
        return out

    def crypto_get(self, kind: str, group: str, item: str) -> bytes | None:
        grp_key, item_key = _tx.crypto_keys(self.codec, kind, group, item)
        row = self.c.execute(
            "SELECT value_blob FROM crypto_objects WHERE kind = ? AND grp_key = ? AND item_key = ?",
            (kind, grp_key, item_key),
        ).fetchone()
        return None if row is None else _tx.decode_bytes(self.codec, row[0], "crypto object")

    def crypto_list(self, kind: str, group: str) -> list[tuple[str, bytes]]:
        rows = self.c.execute(
            "SELECT item_blob, value_blob FROM crypto_objects WHERE kind = ? AND grp_key = ?",
            (kind, _tx.index_key(self.codec, kind, group)),
        ).fetchall()
        return [_tx.crypto_item(self.codec, item, value) for item, value in rows]


def outbox_get(conn: sqlite3.Connection, codec: ValueCodec, txn_id: str) -> OutboxEntry | None:
    row = conn.execute(OUTBOX_SELECT + " WHERE txn_id = ?", (txn_id,)).fetchone()
    return None if row is None else _tx.outbox_entry(codec, *row)
