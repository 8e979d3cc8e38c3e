"""Semantic search: paraphrased (and other-language) queries find the message, adds are incremental and
idempotent, the index survives a reopen, is ciphertext on disk, and is gone with `clear()`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nimbus.ai.embeddings import E5Embedder
from nimbus.ai.search import IndexedMessage, SearchIndex
from nimbus.store import MemoryStore, SqliteStore
from nimbus.types.events import Event
from nimbus.types.ids import EventId, RoomId, UserId

from .conftest import OpenStore, raw_store_bytes

ROOM = "!work:example.org"
HOME = "!home:example.org"
CANARY = "zebracanary"

MESSAGES = [
    (ROOM, "$1", "the quarterly report is due next Friday"),
    (ROOM, "$2", "the build server ran out of disk space again"),
    (HOME, "$3", "don't forget to buy milk and bread"),
    (HOME, "$4", "the dentist appointment moved to Tuesday at 3pm"),
    (ROOM, "$5", "who is presenting at the all-hands tomorrow?"),
    (HOME, "$6", f"our {CANARY} wifi password is on the fridge"),
    (HOME, "$7", "the cat knocked the plant off the windowsill"),
    (ROOM, "$8", "please review my pull request before lunch"),
]


def msgs() -> list[IndexedMessage]:
    return [IndexedMessage(r, e, "@a:example.org", i, t) for i, (r, e, t) in enumerate(MESSAGES)]


async def test_paraphrased_queries_rank_the_message_first(ai_store: MemoryStore | SqliteStore) -> None:
    index = await SearchIndex.open(ai_store, E5Embedder())
    assert await index.add_many(msgs()) == len(MESSAGES)
    for query, expected in [
        ("when do we have to hand in the quarterly numbers", "$1"),
        ("no storage left on the CI machine", "$2"),
        ("grocery shopping list", "$3"),
        ("when is my teeth doctor visit", "$4"),
        ("¿cuándo es la cita con el dentista?", "$4"),  # another language
        ("Wer hält morgen die Präsentation?", "$5"),
        ("code review request", "$8"),
    ]:
        hits = await index.search(query, k=3)
        assert hits[0].message.event_id == expected, query
        assert hits[0].score > hits[1].score


async def test_room_filter_and_k(ai_store: MemoryStore | SqliteStore) -> None:
    index = await SearchIndex.open(ai_store, E5Embedder())
    await index.add_many(msgs())
    hits = await index.search("dentist", k=10, room=ROOM)
    assert hits and all(h.message.room_id == ROOM for h in hits)
    assert len(hits) == sum(1 for r, _, _ in MESSAGES if r == ROOM)
    assert len(await index.search("dentist", k=2)) == 2
    assert await index.search("   ") == []


async def test_incremental_and_idempotent_adds(ai_store: MemoryStore | SqliteStore) -> None:
    index = await SearchIndex.open(ai_store, E5Embedder())
    assert await index.add(ROOM, "$a", "@a:x", 1, "lunch at noon at the italian place") is True
    assert (await index.search("where do we eat", k=1))[0].message.event_id == "$a"
    assert await index.add(ROOM, "$a", "@a:x", 1, "lunch at noon at the italian place") is False
    assert await index.add(ROOM, "$b", "@a:x", 2, "   ") is False
    await index.add(ROOM, "$c", "@b:x", 3, "the flight to Lisbon leaves at 7am")
    assert len(index) == 2
    assert (await index.search("plane departure time", k=1))[0].message.event_id == "$c"
    assert len(await ai_store.ai_list("search_entry")) == 2


async def test_index_room_messages_takes_text_messages_only(ai_store: MemoryStore | SqliteStore) -> None:
    def ev(eid: str, content: dict[str, object], type_: str = "m.room.message") -> Event:
        return Event(EventId(eid), type_, UserId("@a:example.org"), 5, content, RoomId(ROOM))

    index = await SearchIndex.open(ai_store, E5Embedder())
    added = await index.index_room_messages(
        [
            ev("$t", {"msgtype": "m.text", "body": "the meeting is cancelled"}),
            ev("$n", {"msgtype": "m.notice", "body": "deploy finished"}),
            ev("$i", {"msgtype": "m.image", "body": "IMG_0001.jpg"}),
            ev("$e", {"msgtype": "m.text", "body": "* edit", "m.new_content": {"body": "edit"}}),
            ev("$r", {"membership": "join"}, "m.room.member"),
        ]
    )
    assert added == 2
    assert {h.message.event_id for h in await index.search("meeting", k=10)} == {"$t", "$n"}


async def test_persists_across_reopen_and_is_ciphertext_on_disk(
    tmp_path: Path, open_sqlite: OpenStore
) -> None:
    path = tmp_path / "acct.db"
    store = await open_sqlite(path)
    index = await SearchIndex.open(store, E5Embedder())
    await index.add_many(msgs())
    before = [(h.message.event_id, round(h.score, 5)) for h in await index.search("wifi password", k=3)]
    await store.close()

    raw = raw_store_bytes(tmp_path, "acct.db")
    assert len(raw) > 8 * 384  # the vectors are in there...
    assert CANARY.encode() not in raw  # ...but no plaintext
    assert b"dentist" not in raw  # (a 2-byte id like "$4" would match random ciphertext by chance)

    reopened = await SearchIndex.open(await open_sqlite(path), E5Embedder())
    assert len(reopened) == len(MESSAGES)
    after = [(h.message.event_id, round(h.score, 5)) for h in await reopened.search("wifi password", k=3)]
    assert after == before and after[0][0] == "$6"
    hit = (await reopened.search("wifi password", k=1))[0].message
    assert (hit.room_id, hit.sender, hit.ts, hit.text) == (HOME, "@a:example.org", 5, MESSAGES[5][2])


async def test_clear_deletes_the_index(tmp_path: Path, open_sqlite: OpenStore) -> None:
    path = tmp_path / "acct.db"
    store = await open_sqlite(path)
    index = await SearchIndex.open(store, E5Embedder())
    await index.add_many(msgs())
    await index.clear()
    assert len(index) == 0 and await index.search("wifi") == []
    await store.close()
    assert len(await SearchIndex.open(await open_sqlite(path), E5Embedder())) == 0


async def test_another_embedder_reembeds_the_stored_messages(ai_store: MemoryStore | SqliteStore) -> None:
    index = await SearchIndex.open(ai_store, E5Embedder())
    await index.add_many(msgs())
    before = {k: v for k, v in await ai_store.ai_list("search_entry")}
    await ai_store.ai_put("search_entry", "not an entry", b"\x00garbage")

    class Other(E5Embedder):  # another model: here, the same one asked with the query prefix
        def __init__(self) -> None:
            super().__init__()
            self.name = "some-other-model"

        def embed_array(self, texts: Sequence[str], *, query: bool = False) -> npt.NDArray[np.float32]:
            return super().embed_array(texts, query=True)

    other = await SearchIndex.open(ai_store, Other())
    assert len(other) == len(MESSAGES)  # every message kept, none lost
    after = {k: v for k, v in await ai_store.ai_list("search_entry")}
    assert set(after) == set(before)  # the unreadable entry is gone, every real one rewritten
    assert all(after[k] != before[k] for k in before)  # with the new embedder's vectors
    assert await ai_store.ai_get("search_meta", "model") == b"some-other-model"
    hits = await other.search("wifi password", k=1)
    assert hits[0].message.event_id == "$6"
    assert len(await SearchIndex.open(ai_store, Other())) == len(MESSAGES)
    assert {k: v for k, v in await ai_store.ai_list("search_entry")} == after  # nothing redone next time
