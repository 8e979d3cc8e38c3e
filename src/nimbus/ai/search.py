"""Semantic search over decrypted messages: a local, multilingual index, encrypted at rest.

Owns: `SearchIndex` (add messages, search by meaning) and how an index entry is stored. Rules:
- Messages come in already decrypted, from the client (`index_room_messages(events)`), or one by one
  (`add(...)`). Adding is incremental and idempotent: an event already indexed is skipped.
- Every entry (room id, event id, sender, timestamp, text and its vector) is one AI object in the store
  (kind "search_entry", see store/migrations/0003_ai.sql), so it is encrypted with the store's key like
  every other plaintext-derived value; deleting the store (or `clear()`) deletes the index. A batch of
  messages is written in one transaction.
- Vectors are kept in memory as one float32 matrix; search is brute-force cosine (a matrix-vector
  product), ~1-3 ms over 10,000 messages plus the query's embedding. Stored as float16 (half the
  bytes; the in-memory copy is rounded the same way, so results do not change across a reopen).
- The index remembers which embedder made its vectors; opened with another one (another model, or the
  same model on another engine), it re-embeds the stored messages with the new one, then records the
  new name last: a crash half-way re-embeds again at the next open, and no message is lost.
- Embedding runs in a worker thread, never on the event loop, `_BATCH` messages per engine call:
  events decrypted together (one sync batch, across rooms) are embedded together. A text already in
  the index (same words: "ok", "thanks!") reuses its vector instead of being embedded again.
- Redactions (https://spec.matrix.org/v1.12/client-server-api/#redactions): when an
  `m.room.redaction` arrives, or an event whose `unsigned.redacted_because` is set, the redacted
  message's entry is deleted from memory and the store (`AiStore.ai_delete`), with every cached
  translation of it (kind "translation", see nimbus.ai.translation), and it is not indexed again
  later in this process. Message text is never logged.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np  # type: ignore[import-not-found,unused-ignore]
import numpy.typing as npt  # type: ignore[import-not-found,unused-ignore]

from nimbus.ai.embeddings import E5Embedder
from nimbus.ai.interfaces import Embedder
from nimbus.store.base import AiStore
from nimbus.types.events import Event

ENTRY = "search_entry"
META = "search_meta"
TRANSLATION = "translation"  # nimbus.ai.translation.KIND: items are JSON [event id, target language]
_BATCH = 64
# Spec: https://spec.matrix.org/v1.12/client-server-api/#mroommessage-msgtypes — the msgtypes whose
# `body` is the message a person wrote (files and images carry a file name there instead).
TEXT_MSGTYPES = frozenset({"m.text", "m.notice", "m.emote"})


@dataclass(frozen=True)
class IndexedMessage:
    room_id: str
    event_id: str
    sender: str
    ts: int
    text: str

    def __repr__(self) -> str:  # message text stays out of logs and tracebacks
        return f"IndexedMessage(room_id={self.room_id!r}, event_id={self.event_id!r}, ts={self.ts})"


@dataclass(frozen=True)
class SearchHit:
    message: IndexedMessage
    score: float  # cosine similarity, -1..1 (higher is closer)


def message_text(event: Event) -> str | None:
    """The searchable text of a decrypted room event, or None (not a text message, or an edit).

    Spec: https://spec.matrix.org/v1.12/client-server-api/#mroommessage ; edits (`m.new_content`,
    https://spec.matrix.org/v1.12/client-server-api/#event-replacements) are not indexed as new messages.
    """
    if event.type != "m.room.message" or event.is_state:
        return None
    content = event.content
    body = content.get("body")
    if content.get("msgtype") not in TEXT_MSGTYPES or not isinstance(body, str) or not body.strip():
        return None
    if "m.new_content" in content:
        return None
    return body


def redacted_ids(event: Event) -> list[str]:
    """The event ids a room event says are redacted: the target of an `m.room.redaction` (`redacts`
    in content since room version 11, top-level before), and the event itself when its
    `unsigned.redacted_because` is set (a redacted event as the server serves it).
    Spec: https://spec.matrix.org/v1.12/client-server-api/#redactions"""
    out = []
    if event.type == "m.room.redaction" and not event.is_state:
        target = event.content.get("redacts", event.raw.get("redacts"))
        if isinstance(target, str) and target:
            out.append(target)
    if isinstance(event.unsigned.get("redacted_because"), dict):
        out.append(event.event_id)
    return out


def _key(room_id: str, event_id: str) -> str:
    return json.dumps([room_id, event_id], ensure_ascii=False)


def _encode(msg: IndexedMessage, vector: npt.NDArray[np.float16]) -> bytes:
    header = json.dumps(
        {"r": msg.room_id, "e": msg.event_id, "s": msg.sender, "t": msg.ts, "x": msg.text},
        ensure_ascii=False,
    ).encode("utf-8")
    return struct.pack(">I", len(header)) + header + vector.astype("<f2").tobytes()


def _decode(value: bytes, dims: int | None) -> tuple[IndexedMessage, npt.NDArray[np.float32]] | None:
    """An entry's message and vector; None if malformed or (with `dims`) the vector has another size."""
    try:
        (size,) = struct.unpack_from(">I", value)
        header = json.loads(value[4 : 4 + size].decode("utf-8"))
        vector = np.frombuffer(value[4 + size :], dtype="<f2")
        if dims is not None and vector.shape != (dims,):
            return None
        msg = IndexedMessage(
            str(header["r"]), str(header["e"]), str(header["s"]), int(header["t"]), str(header["x"])
        )
    except (struct.error, ValueError, KeyError, TypeError):
        return None
    return msg, vector.astype(np.float32)


class SearchIndex:
    """A semantic index over one account's decrypted messages. Create with `await SearchIndex.open(...)`."""

    def __init__(self, store: AiStore, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder
        self._dims = embedder.dimensions
        self._messages: list[IndexedMessage] = []
        self._rooms: list[str] = []  # per row
        self._room_rows: npt.NDArray[np.object_] | None = None  # cached array of `_rooms`
        self._seen: set[tuple[str, str]] = set()
        self._redacted: set[tuple[str, str]] = set()  # never (re-)indexed in this process
        self._by_text: dict[str, int] = {}  # text -> a row holding its vector
        self._matrix = np.zeros((0, self._dims), dtype=np.float32)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, store: AiStore, embedder: Embedder | None = None) -> SearchIndex:
        """Load the stored index (if it was made by this embedder) into memory."""
        index = cls(store, embedder or E5Embedder())
        await index._load()
        return index

    def _embed(self, texts: list[str], query: bool) -> npt.NDArray[np.float32]:
        if isinstance(self._embedder, E5Embedder):
            return self._embedder.embed_array(texts, query=query)
        return np.asarray(self._embedder.embed(texts, query=query), dtype=np.float32).reshape(-1, self._dims)

    def __len__(self) -> int:
        return len(self._messages)

    async def _load(self) -> None:
        model = await self._store.ai_get(META, "model")
        rows = await self._store.ai_list(ENTRY)
        if model is None or model.decode("utf-8", "replace") != self._embedder.name:
            await self._reembed(rows)
            return
        decoded = [d for _, value in rows if (d := _decode(value, self._dims)) is not None]
        decoded.sort(key=lambda d: (d[0].ts, d[0].room_id, d[0].event_id))
        self._append([d[0] for d in decoded], [d[1] for d in decoded])

    async def _reembed(self, rows: list[tuple[str, bytes]]) -> None:
        """Entries made by another embedder: embed their messages again (same keys, overwritten in
        place), drop the unreadable ones, and only then record this embedder's name."""
        messages = []
        for key, value in rows:
            decoded = _decode(value, None)
            if decoded is None:
                await self._store.ai_delete(ENTRY, key)
            else:
                messages.append(decoded[0])
        messages.sort(key=lambda m: (m.ts, m.room_id, m.event_id))
        await self.add_many(messages)
        await self._store.ai_put(META, "model", self._embedder.name.encode("utf-8"))

    def _append(self, messages: Sequence[IndexedMessage], vectors: Sequence[npt.NDArray[np.float32]]) -> None:
        if not messages:
            return
        n = len(self._messages)
        need = n + len(messages)
        if need > self._matrix.shape[0]:  # grow geometrically: incremental adds stay O(1) amortised
            grown = np.zeros((max(need, 2 * self._matrix.shape[0], 64), self._dims), dtype=np.float32)
            grown[:n] = self._matrix[:n]
            self._matrix = grown
        np.stack(vectors, out=self._matrix[n:need])  # straight into place: no temporary copy
        for row, m in enumerate(messages, start=n):
            self._by_text.setdefault(m.text, row)
        self._messages.extend(messages)
        self._rooms.extend(m.room_id for m in messages)
        self._room_rows = None
        self._seen.update((m.room_id, m.event_id) for m in messages)

    async def add(self, room_id: str, event_id: str, sender: str, ts: int, text: str) -> bool:
        """Index one message; False if it was already indexed (or has no text)."""
        return await self.add_many([IndexedMessage(room_id, event_id, sender, ts, text)]) == 1

    async def add_many(self, messages: Iterable[IndexedMessage]) -> int:
        """Index messages not indexed yet, in batches (one store transaction each); how many were new."""
        async with self._lock:
            fresh: list[IndexedMessage] = []
            keys: set[tuple[str, str]] = set()
            for m in messages:
                key = (m.room_id, m.event_id)
                if m.text.strip() and key not in self._seen and key not in keys and key not in self._redacted:
                    fresh.append(m)
                    keys.add(key)
            for start in range(0, len(fresh), _BATCH):
                batch = fresh[start : start + _BATCH]
                halves = np.zeros((len(batch), self._dims), dtype=np.float16)
                todo = [i for i, m in enumerate(batch) if m.text not in self._by_text]
                for i, m in enumerate(batch):
                    if m.text in self._by_text:  # same text indexed before: same vector
                        halves[i] = self._matrix[self._by_text[m.text]]
                if todo:
                    vectors = await asyncio.to_thread(self._embed, [batch[i].text for i in todo], False)
                    halves[todo] = vectors.astype(np.float16)
                await self._store.ai_put_many(
                    ENTRY,
                    [
                        (_key(m.room_id, m.event_id), _encode(m, v))
                        for m, v in zip(batch, halves, strict=True)
                    ],
                )
                self._append(batch, list(halves.astype(np.float32)))
            return len(fresh)

    async def index_room_messages(self, events: Iterable[Event]) -> int:
        """Index the text messages among decrypted room events (others are skipped) and apply the
        redactions among them; how many messages were new. Events may come from many rooms (e.g.
        everything one sync decrypted): they are embedded together, `_BATCH` per engine call."""
        found = []
        redacted: list[tuple[str, str]] = []
        for event in events:
            redacted.extend((event.room_id, target) for target in redacted_ids(event))
            text = message_text(event)
            if text is not None:
                found.append(
                    IndexedMessage(event.room_id, event.event_id, event.sender, event.origin_server_ts, text)
                )
        if redacted:
            await self.remove(redacted)
        return await self.add_many(found)

    async def remove(self, keys: Iterable[tuple[str, str]]) -> int:
        """Forget the (room id, event id) messages (redacted): their index entries, in memory and in
        the store, and their cached translations; they are not indexed again. How many were indexed."""
        async with self._lock:
            wanted = set(keys)
            if not wanted:
                return 0
            self._redacted |= wanted
            for room_id, event_id in wanted:
                await self._store.ai_delete(ENTRY, _key(room_id, event_id))
            event_ids = {event_id for _, event_id in wanted}
            for item, _ in await self._store.ai_list(TRANSLATION):
                try:
                    cached_event = json.loads(item)[0]
                except (ValueError, IndexError, KeyError, TypeError):
                    continue
                if cached_event in event_ids:
                    await self._store.ai_delete(TRANSLATION, item)
            keep = [i for i, m in enumerate(self._messages) if (m.room_id, m.event_id) not in wanted]
            removed = len(self._messages) - len(keep)
            if removed:
                messages = [self._messages[i] for i in keep]
                matrix = self._matrix[keep]
                self._messages, self._rooms, self._seen, self._room_rows = [], [], set(), None
                self._by_text = {}
                self._matrix = np.zeros((0, self._dims), dtype=np.float32)
                self._append(messages, list(matrix))
            return removed

    async def search(self, query: str, k: int = 10, room: str | None = None) -> list[SearchHit]:
        """The `k` messages closest in meaning to `query` (in any language), best first."""
        if k <= 0 or not query.strip() or not self._messages:
            return []
        vector = (await asyncio.to_thread(self._embed, [query], True))[0]
        return self.search_vector(vector, k=k, room=room)

    def search_vector(
        self, vector: npt.NDArray[np.float32], k: int = 10, room: str | None = None
    ) -> list[SearchHit]:
        """`search` for an already embedded query (brute-force cosine over the matrix)."""
        n = len(self._messages)
        if n == 0 or k <= 0:
            return []
        scores = self._matrix[:n] @ vector.astype(np.float32)
        if room is not None:
            if self._room_rows is None:
                self._room_rows = np.array(self._rooms, dtype=object)
            mask = self._room_rows == room
            scores = np.where(mask, scores, -np.inf)
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [SearchHit(self._messages[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    async def clear(self) -> None:
        """Forget the whole index, in memory and in the store."""
        async with self._lock:
            await self._store.ai_delete_all(ENTRY)
            self._messages, self._rooms, self._seen, self._room_rows = [], [], set(), None
            self._by_text = {}
            self._matrix = np.zeros((0, self._dims), dtype=np.float32)
