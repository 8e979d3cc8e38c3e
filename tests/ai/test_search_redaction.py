"""Redactions reach the on-device AI state: a redacted message leaves the search index (memory and
store) together with its cached translations, whichever way the redaction shows up (an
`m.room.redaction` event, old or room-v11 shape, or the redacted event with `unsigned.redacted_because`),
and is not indexed again. Spec: https://spec.matrix.org/v1.12/client-server-api/#redactions"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from nimbus.ai.embeddings import E5Embedder
from nimbus.ai.search import ENTRY, SearchIndex, redacted_ids
from nimbus.ai.translation import KIND, MessageTranslator
from nimbus.store import MemoryStore, SqliteStore
from nimbus.types.events import Event
from nimbus.types.ids import EventId, RoomId, UserId

from .conftest import OpenStore, raw_store_bytes

ROOM = "!r:example.org"
SECRET = "quokkasecret"


def ev(
    eid: str,
    content: dict[str, Any],
    type_: str = "m.room.message",
    *,
    unsigned: dict[str, Any] | None = None,
    raw: dict[str, Any] | None = None,
) -> Event:
    return Event(
        EventId(eid), type_, UserId("@a:example.org"), 7, content, RoomId(ROOM),
        unsigned=unsigned or {}, raw=raw or {},
    )  # fmt: skip


def text(eid: str, body: str) -> Event:
    return ev(eid, {"msgtype": "m.text", "body": body})


TIMELINE = [
    text("$pw", f"the {SECRET} alarm code for the office is 4321"),
    text("$lunch", "lunch at noon at the italian place"),
    text("$train", "my train is delayed by twenty minutes"),
]


async def event_ids(index: SearchIndex, query: str) -> set[str]:
    return {h.message.event_id for h in await index.search(query, k=10)}


def test_redacted_ids_reads_every_shape() -> None:
    assert redacted_ids(ev("$x", {"redacts": "$pw"}, "m.room.redaction")) == ["$pw"]  # room v11
    assert redacted_ids(ev("$x", {}, "m.room.redaction", raw={"redacts": "$pw"})) == ["$pw"]  # v1-v10
    assert redacted_ids(ev("$pw", {}, unsigned={"redacted_because": {"event_id": "$x"}})) == ["$pw"]
    assert redacted_ids(text("$t", "hello")) == []
    assert redacted_ids(ev("$x", {"redacts": 5}, "m.room.redaction")) == []


async def test_redaction_event_removes_entry_and_cached_translation(
    tmp_path: Path, open_sqlite: OpenStore
) -> None:
    if shutil.which("apertium") is None:
        pytest.skip("needs apertium + apertium-eng-spa")
    path = tmp_path / "acct.db"
    store = await open_sqlite(path)
    index = await SearchIndex.open(store, E5Embedder())
    assert await index.index_room_messages(TIMELINE) == 3
    assert "$pw" in await event_ids(index, "what is the code for the office alarm")
    translator = MessageTranslator(store)
    done = await translator.translate_message("$pw", TIMELINE[0].content["body"], "es", source="en")
    assert done.status == "translated"
    await translator.translate_message("$lunch", TIMELINE[1].content["body"], "es", source="en")

    # The redaction arrives in a later sync (room v11 shape: `redacts` in content).
    assert await index.index_room_messages([ev("$red", {"redacts": "$pw"}, "m.room.redaction")]) == 0

    assert "$pw" not in await event_ids(index, "what is the code for the office alarm")
    assert len(index) == 2
    assert await store.ai_get(ENTRY, json.dumps([ROOM, "$pw"])) is None
    assert all(SECRET.encode() not in value for _, value in await store.ai_list(ENTRY))
    assert await translator.cached("$pw", "es") is None
    assert await translator.cached("$lunch", "es") is not None  # other messages' translations stay
    assert [json.loads(item)[0] for item, _ in await store.ai_list(KIND)] == ["$lunch"]

    # Not indexed again in this process, even if the original shows up again (e.g. a stale backfill).
    assert await index.index_room_messages([TIMELINE[0]]) == 0
    await store.close()
    reopened = await SearchIndex.open(await open_sqlite(path), E5Embedder())
    assert len(reopened) == 2
    assert "$pw" not in await event_ids(reopened, "what is the code for the office alarm")
    assert SECRET.encode() not in raw_store_bytes(tmp_path, "acct.db")


async def test_redacted_because_and_same_batch_redaction(ai_store: MemoryStore | SqliteStore) -> None:
    index = await SearchIndex.open(ai_store, E5Embedder())
    await index.index_room_messages(TIMELINE)
    # The server serves a redacted event stripped, with unsigned.redacted_because (e.g. on backfill).
    stripped = ev(
        "$lunch", {}, unsigned={"redacted_because": {"event_id": "$r1", "type": "m.room.redaction"}}
    )
    await index.index_room_messages([stripped])
    assert "$lunch" not in await event_ids(index, "where do we eat")
    assert await ai_store.ai_get(ENTRY, json.dumps([ROOM, "$lunch"])) is None
    # A message and its redaction in one batch: never indexed.
    added = await index.index_room_messages(
        [
            text("$late", "the cinema starts at eight"),
            ev("$r2", {}, "m.room.redaction", raw={"redacts": "$late"}),
        ]
    )
    assert added == 0
    assert "$late" not in await event_ids(index, "when does the movie begin")
    assert sorted(json.loads(item)[1] for item, _ in await ai_store.ai_list(ENTRY)) == ["$pw", "$train"]
    assert len(index) == 2
