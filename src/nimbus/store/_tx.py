"""What a sync batch or a backfill does to stored data, written once for every backend.

Owns: value (de)serialization through the codec, and the write algorithms `apply_sync_batch` and
`apply_backfill`, expressed over `Tx`, the small set of primitive reads/writes a backend offers inside
one transaction. Rules:
- These functions run inside the backend's transaction (on the SQLite worker thread, or on a scratch
  copy in `MemoryStore`); if they raise, the backend rolls everything back.
- Crypto objects (`CryptoChanges`) and decrypted-event plaintexts are written by `apply_crypto` and
  `apply_decrypted` inside the same transaction as the batch or outbox entry they come with. Their lookup
  keys go through `index_key` (HMAC under an `IndexingCodec`, plain bytes under any other codec).
- Timeline model: each room's events have integer positions (ascending = chronological). A *gap* at
  position p means "events just before p are missing" and carries the /messages token to fetch them.
  A `limited` sync leaves `GAP_SPAN` free positions so a later backfill fits in between.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from nimbus.crypto.store import CryptoChanges
from nimbus.store.base import JSONDict, OutboxEntry, StoreCorrupt, StoreError
from nimbus.store.codec import IndexingCodec, ValueCodec
from nimbus.types.errors import MalformedData
from nimbus.types.events import Event, StrippedState, SyncBatch, parse_event
from nimbus.types.ids import EventId, RoomId, TxnId, UserId

GAP_SPAN = 2**32
"""Free positions left between two timeline chunks (a limited sync) for back-filled events."""

GLOBAL = ""
"""The room key under which global account data is stored."""


@dataclass(frozen=True)
class Gap:
    pos: int
    token: str


class Tx(Protocol):
    """Primitive operations inside one transaction. Blobs are already codec-encoded."""

    def set_membership(self, room_id: RoomId, membership: str) -> None: ...
    def put_state(self, room_id: RoomId, type: str, state_key: str, event_id: str, blob: bytes) -> None: ...
    def replace_invite_state(self, room_id: RoomId, items: list[tuple[str, str, bytes]]) -> None: ...
    def event_pos(self, room_id: RoomId, event_id: str) -> int | None: ...
    def timeline_bounds(self, room_id: RoomId) -> tuple[int, int] | None: ...
    def max_pos_below(self, room_id: RoomId, pos: int) -> int | None: ...
    def insert_event(self, room_id: RoomId, pos: int, event_id: str, blob: bytes) -> None: ...
    def newest_gap(self, room_id: RoomId) -> Gap | None: ...
    def add_gap(self, room_id: RoomId, gap: Gap) -> None: ...
    def delete_gap(self, room_id: RoomId, pos: int) -> None: ...
    def put_account_data(self, room_key: str, type: str, blob: bytes) -> None: ...
    def outbox_confirm(self, txn_id: str, event_id: str) -> OutboxEntry | None:
        """Mark a not-yet-sent entry sent; return it (updated), or None if unknown/already sent."""
        ...

    def set_sync_token(self, token: str) -> None: ...
    def put_crypto(
        self, kind: str, grp_key: bytes, item_key: bytes, item_blob: bytes, value_blob: bytes
    ) -> None: ...
    def delete_crypto(self, kind: str, grp_key: bytes, item_key: bytes) -> None: ...
    def put_decrypted(self, room_id: RoomId, event_id: str, blob: bytes) -> None: ...


# -- values through the codec ---------------------------------------------------------------------


def encode_json(codec: ValueCodec, value: Any) -> bytes:
    return codec.encode(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def decode_json(codec: ValueCodec, blob: bytes, what: str) -> Any:
    try:
        return json.loads(codec.decode(bytes(blob)).decode("utf-8"))
    except Exception as exc:  # codec, UTF-8 or JSON failure: all mean the same to the caller
        raise StoreCorrupt(f"stored {what} could not be decoded") from exc


def event_to_json(event: Event) -> JSONDict:
    """The event as stored: what was received (`raw`, e.g. a top-level `redacts`), checked fields on top."""
    out: JSONDict = dict(event.raw)
    out.update(
        event_id=event.event_id,
        type=event.type,
        sender=event.sender,
        origin_server_ts=event.origin_server_ts,
        content=event.content,
        room_id=event.room_id,
        unsigned=event.unsigned,
    )
    if event.state_key is not None:
        out["state_key"] = event.state_key
    else:
        out.pop("state_key", None)
    return out


def encode_event(codec: ValueCodec, event: Event) -> bytes:
    return encode_json(codec, event_to_json(event))


def decode_event(codec: ValueCodec, blob: bytes, room_id: str) -> Event:
    raw = decode_json(codec, blob, "event")
    try:
        return parse_event(raw, room_id)
    except MalformedData as exc:
        raise StoreCorrupt("stored event is malformed") from exc


def encode_stripped(codec: ValueCodec, s: StrippedState) -> bytes:
    return encode_json(
        codec, {"type": s.type, "state_key": s.state_key, "sender": s.sender, "content": s.content}
    )


def decode_stripped(codec: ValueCodec, blob: bytes) -> StrippedState:
    raw = decode_json(codec, blob, "invite state")
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), dict):
        raise StoreCorrupt("stored invite state is malformed")
    return StrippedState(
        type=str(raw.get("type")),
        state_key=str(raw.get("state_key")),
        sender=UserId(str(raw.get("sender"))),
        content=raw["content"],
    )


def decode_content(codec: ValueCodec, blob: bytes, what: str) -> JSONDict:
    value = decode_json(codec, blob, what)
    if not isinstance(value, dict):
        raise StoreCorrupt(f"stored {what} is not an object")
    return value


def outbox_entry(
    codec: ValueCodec,
    txn_id: str,
    room_id: str,
    event_type: str,
    content: bytes,
    state: str,
    event_id: str | None,
    created_ts: int,
    attempts: int,
    last_error: str | None,
) -> OutboxEntry:
    return OutboxEntry(
        txn_id=TxnId(txn_id),
        room_id=RoomId(room_id),
        event_type=event_type,
        content=decode_content(codec, content, "outbox content"),
        state=state,
        event_id=EventId(event_id) if event_id is not None else None,
        created_ts=created_ts,
        attempts=attempts,
        last_error=last_error,
    )


def account_data_items(entries: tuple[JSONDict, ...]) -> list[tuple[str, JSONDict]]:
    """(type, content) of well-formed account data events; malformed ones are skipped."""
    out = []
    for entry in entries:
        if isinstance(entry, dict):
            etype, content = entry.get("type"), entry.get("content")
            if isinstance(etype, str) and isinstance(content, dict):
                out.append((etype, content))
    return out


def index_key(codec: ValueCodec, *parts: str) -> bytes:
    """The stored lookup key of `parts` (kind, group[, item]): keyed HMAC under an `IndexingCodec`.

    Under another codec (PlainCodec, test codecs) the last part is stored plain (the kind has a
    column of its own). Parts are JSON-encoded before HMAC so ("a", "bc") and ("ab", "c") differ.
    """
    if _indexes(type(codec)):
        return cast(IndexingCodec, codec).index(json.dumps(parts, ensure_ascii=False).encode("utf-8"))
    return parts[-1].encode("utf-8")


@functools.cache
def _indexes(codec_type: type) -> bool:
    """Whether a codec class can index (a runtime Protocol check is slow: asked once per class)."""
    return callable(getattr(codec_type, "index", None))


def crypto_keys(codec: ValueCodec, kind: str, group: str, item: str) -> tuple[bytes, bytes]:
    return index_key(codec, kind, group), index_key(codec, kind, group, item)


def decode_bytes(codec: ValueCodec, blob: bytes, what: str) -> bytes:
    try:
        return codec.decode(bytes(blob))
    except Exception as exc:
        raise StoreCorrupt(f"stored {what} could not be decoded") from exc


def crypto_item(codec: ValueCodec, item_blob: bytes, value_blob: bytes) -> tuple[str, bytes]:
    item = decode_bytes(codec, item_blob, "crypto object name")
    try:
        name = item.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreCorrupt("stored crypto object name is malformed") from exc
    return name, decode_bytes(codec, value_blob, "crypto object")


# -- the write algorithms -------------------------------------------------------------------------


def apply_sync_batch(tx: Tx, codec: ValueCodec, batch: SyncBatch) -> list[OutboxEntry]:
    """Everything one /sync response changes. Spec: https://spec.matrix.org/v1.12/client-server-api/#syncing"""
    confirmed: list[OutboxEntry] = []
    for update in batch.rooms:
        room = update.room_id
        tx.set_membership(room, update.membership)
        if update.membership == "invite":
            items = [(s.type, s.state_key, encode_stripped(codec, s)) for s in update.invite_state]
            tx.replace_invite_state(room, items)
        else:
            tx.replace_invite_state(room, [])
        # `state` is the state at the start of the timeline; timeline state events come after it.
        for event in update.state:
            _check_room(event, room)
            if event.state_key is not None:
                tx.put_state(room, event.type, event.state_key, event.event_id, encode_event(codec, event))
        _append_timeline(tx, codec, room, update.timeline, update.limited, update.prev_batch)
        for event in update.timeline:
            txn = event.transaction_id
            if txn is not None:
                entry = tx.outbox_confirm(txn, event.event_id)
                if entry is not None:
                    confirmed.append(entry)
        for etype, content in account_data_items(update.account_data):
            tx.put_account_data(room, etype, encode_json(codec, content))
    for etype, content in account_data_items(batch.account_data):
        tx.put_account_data(GLOBAL, etype, encode_json(codec, content))
    tx.set_sync_token(batch.next_batch)
    return confirmed


def _check_room(event: Event, room_id: RoomId) -> None:
    if event.room_id != room_id:
        raise StoreError("event room_id does not match the room it is stored under")


def _append_timeline(
    tx: Tx, codec: ValueCodec, room: RoomId, timeline: tuple[Event, ...], limited: bool, prev: str | None
) -> None:
    seen: set[str] = set()
    new: list[Event] = []
    overlaps = False
    for event in timeline:
        _check_room(event, room)
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        if tx.event_pos(room, event.event_id) is not None:
            overlaps = True  # we already hold part of this timeline, so it joins what we have
        else:
            new.append(event)
    if not new:
        return
    bounds = tx.timeline_bounds(room)
    if bounds is None:
        pos, gap_token = 0, prev  # the room's first events: history before them is a gap
    elif limited and not overlaps:
        pos, gap_token = bounds[1] + GAP_SPAN, prev  # spec: `limited` means events were skipped
    else:
        pos, gap_token = bounds[1] + 1, None
    first = pos
    for event in new:
        tx.insert_event(room, pos, event.event_id, encode_event(codec, event))
        if event.state_key is not None:
            tx.put_state(room, event.type, event.state_key, event.event_id, encode_event(codec, event))
        pos += 1
    if gap_token is not None:
        tx.add_gap(room, Gap(first, gap_token))


def apply_backfill(
    tx: Tx, codec: ValueCodec, room: RoomId, events_newest_first: list[Event], end_token: str | None
) -> None:
    """Fill the newest gap (or the front of the timeline) with /messages events, newest first.

    Spec: https://spec.matrix.org/v1.12/client-server-api/#get_matrixclientv3roomsroomidmessages
    Back-filled state events are history: they do not change current state.
    """
    gap = tx.newest_gap(room)
    if gap is not None:
        upper, lower = gap.pos, tx.max_pos_below(room, gap.pos)
    else:
        bounds = tx.timeline_bounds(room)
        upper, lower = (bounds[0] if bounds else 0), None
    pos, closed = upper, False
    for event in events_newest_first:
        _check_room(event, room)
        known = tx.event_pos(room, event.event_id)
        if known is not None:
            if lower is not None and known <= lower:
                closed = True  # reached the older chunk: the gap is filled
                break
            continue
        pos -= 1
        if lower is not None and pos <= lower:
            raise StoreError("timeline gap has no free positions left")
        tx.insert_event(room, pos, event.event_id, encode_event(codec, event))
    if gap is not None:
        tx.delete_gap(room, gap.pos)
    if not closed and end_token is not None:
        tx.add_gap(room, Gap(pos, end_token))


def apply_crypto(tx: Tx, codec: ValueCodec, changes: CryptoChanges | None) -> None:
    """Puts and deletes of crypto objects (nimbus/crypto/store.py), inside the caller's transaction."""
    if not changes:
        return
    for key, value in changes.objects.items():
        if len(key) != 3 or not all(isinstance(p, str) for p in key):
            raise StoreError("a crypto object key is (kind, group, item) strings")
        if value is not None and not isinstance(value, bytes):
            raise StoreError("a crypto object value is bytes or None")
        kind, group, item = key
        grp_key, item_key = crypto_keys(codec, kind, group, item)
        if value is None:
            tx.delete_crypto(kind, grp_key, item_key)
        else:
            item_blob = codec.encode(item.encode("utf-8"))
            tx.put_crypto(kind, grp_key, item_key, item_blob, codec.encode(value))


def apply_decrypted(
    tx: Tx, codec: ValueCodec, decrypted: Mapping[EventId, JSONDict] | None, batch: SyncBatch | None = None
) -> None:
    """Cache decrypted plaintexts, keyed by (room, event id).

    The room is the one the batch carries the event in, else the plaintext's own `room_id` (a
    decrypted Megolm payload has one: spec https://spec.matrix.org/v1.12/client-server-api/#mmegolmv1aes-sha2);
    if both are known they must agree.
    """
    if not decrypted:
        return
    rooms: dict[str, RoomId] = {}
    if batch is not None:
        for update in batch.rooms:
            for event in update.timeline:
                rooms[event.event_id] = update.room_id
    for event_id, plaintext in decrypted.items():
        if not isinstance(plaintext, dict):
            raise StoreError("a decrypted event must be a JSON object")
        claimed = plaintext.get("room_id")
        room = rooms.get(event_id)
        if room is None:
            if not isinstance(claimed, str):
                raise StoreError("a decrypted event outside the batch must carry its room_id")
            room = RoomId(claimed)
        elif claimed is not None and claimed != room:
            raise StoreError("a decrypted event's room_id differs from the room it arrived in")
        tx.put_decrypted(room, event_id, encode_json(codec, plaintext))
