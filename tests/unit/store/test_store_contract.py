"""The store contract: every test here runs against every backend (MemoryStore and SqliteStore).

Modelled on matrix-sdk-crypto's store integration_tests.rs: one suite, one `store` fixture per backend.
"""

from __future__ import annotations

import pytest

from nimbus.store import (
    OutboxEntry,
    Session,
    Store,
    StoreClosed,
    StoreError,
    UnknownOutboxEntry,
)
from nimbus.types.events import StrippedState
from nimbus.types.ids import DeviceId, EventId, RoomId, TxnId, UserId

from .conftest import MakeStore
from .factories import ALICE, BOB, ROOM, ROOM2, batch, ev, ids, member, name_event, room

SESSION = Session("https://hs.example.org", UserId("@me:example.org"), DeviceId("DEV"), "syt_secret")


def outbox(txn: str, ts: int, room_id: str = ROOM) -> OutboxEntry:
    return OutboxEntry(TxnId(txn), RoomId(room_id), "m.room.message", {"body": f"hi {txn}"}, created_ts=ts)


# -- session ---------------------------------------------------------------------------------------


async def test_session_round_trip_and_clear(store: Store) -> None:
    assert await store.load_session() is None
    await store.save_session(SESSION)
    assert await store.load_session() == SESSION
    other = Session("https://b.example", UserId("@b:example.org"), DeviceId("D2"), "tok2")
    await store.save_session(other)
    assert await store.load_session() == other
    await store.clear_session()
    assert await store.load_session() is None


def test_session_repr_hides_the_token() -> None:
    assert "syt_secret" not in repr(SESSION)


# -- sync batches ----------------------------------------------------------------------------------


async def test_sync_batch_stores_everything(store: Store) -> None:
    assert await store.load_sync_token() is None
    direct = {"type": "m.direct", "content": {BOB: [ROOM]}}
    tag = {"type": "m.tag", "content": {"tags": {"u.work": {}}}}
    b = batch(
        "s1",
        room(
            ROOM,
            state=(member(1, ALICE), name_event(2, "Old name")),
            timeline=(ev(3), name_event(4, "New name"), ev(5)),
            prev_batch="p1",
            account_data=(tag, {"type": 7}),  # the malformed entry is skipped
        ),
        room(ROOM2, membership="leave", timeline=(ev(6, ROOM2),)),
        account_data=(direct,),
    )
    assert await store.save_sync_batch(b) == []
    assert await store.load_sync_token() == "s1"
    assert await store.room_ids() == sorted([ROOM, ROOM2])
    assert await store.room_ids("join") == [ROOM]
    assert await store.membership(ROOM2) == "leave"
    assert await store.membership(RoomId("!nope:example.org")) is None
    # the timeline state event replaced the state section's one
    name = await store.state_event(ROOM, "m.room.name")
    assert name is not None and name.content == {"name": "New name"}
    alice = await store.state_event(ROOM, "m.room.member", ALICE)
    assert alice is not None and alice.content["membership"] == "join"
    assert ids(await store.state_events(ROOM)) == ["$1", "$4"]
    assert ids(await store.state_events(ROOM, "m.room.member")) == ["$1"]
    assert ids(await store.timeline(ROOM)) == ["$3", "$4", "$5"]
    assert ids(await store.timeline(ROOM2)) == ["$6"]
    assert await store.account_data("m.direct") == {BOB: [ROOM]}
    assert await store.account_data("m.tag", ROOM) == {"tags": {"u.work": {}}}
    assert await store.account_data("m.tag") is None


async def test_stored_events_keep_what_was_received(store: Store) -> None:
    redaction = ev(2, type="m.room.redaction", content={}, redacts="$1")
    await store.save_sync_batch(batch("s1", room(timeline=(ev(1), redaction))))
    got = await store.timeline(ROOM)
    assert got[1] == redaction
    assert got[1].raw["redacts"] == "$1"  # room versions < 11 put `redacts` at the top level


async def test_timeline_is_deduplicated(store: Store) -> None:
    await store.save_sync_batch(batch("s1", room(timeline=(ev(1), ev(2), ev(2)))))
    await store.save_sync_batch(batch("s2", room(timeline=(ev(2), ev(3)))))
    assert ids(await store.timeline(ROOM)) == ["$1", "$2", "$3"]


async def test_timeline_limit_and_before_event(store: Store) -> None:
    await store.save_sync_batch(batch("s1", room(timeline=tuple(ev(i) for i in range(1, 11)))))
    assert ids(await store.timeline(ROOM, limit=3)) == ["$8", "$9", "$10"]
    assert ids(await store.timeline(ROOM, limit=3, before_event=EventId("$5"))) == ["$2", "$3", "$4"]
    assert ids(await store.timeline(ROOM, limit=10, before_event=EventId("$3"))) == ["$1", "$2"]
    assert await store.timeline(ROOM, before_event=EventId("$unknown")) == []
    assert await store.timeline(ROOM, limit=0) == []


async def test_limited_sync_leaves_a_gap_that_backfill_fills_in_order(store: Store) -> None:
    await store.save_sync_batch(batch("s1", room(timeline=(ev(1), ev(2)), prev_batch="p-start")))
    assert await store.backfill_token(ROOM) == "p-start"
    await store.save_sync_batch(batch("s2", room(timeline=(ev(5), ev(6)), limited=True, prev_batch="p-gap")))
    assert ids(await store.timeline(ROOM)) == ["$1", "$2", "$5", "$6"]
    assert await store.backfill_token(ROOM) == "p-gap"  # the newest gap comes first

    # /messages dir=b from p-gap: newest first; part of the gap
    await store.add_backfill(ROOM, [ev(4)], "p-mid")
    assert ids(await store.timeline(ROOM)) == ["$1", "$2", "$4", "$5", "$6"]
    assert await store.backfill_token(ROOM) == "p-mid"
    # the rest, overlapping what we hold: $2 closes the gap, $1 and older are not re-inserted
    await store.add_backfill(ROOM, [ev(3), ev(2), ev(1)], "p-older")
    assert ids(await store.timeline(ROOM)) == ["$1", "$2", "$3", "$4", "$5", "$6"]
    assert await store.backfill_token(ROOM) == "p-start"  # only the start of history is left
    assert ids(await store.timeline(ROOM, limit=2, before_event=EventId("$5"))) == ["$3", "$4"]


async def test_backfill_before_the_oldest_event_until_the_start(store: Store) -> None:
    topic = ev(1, type="m.room.topic", state_key="", content={"topic": "old"})
    await store.save_sync_batch(batch("s1", room(state=(topic,), timeline=(ev(10), ev(11)), prev_batch="p1")))
    old_topic = ev(3, type="m.room.topic", state_key="", content={"topic": "older"})
    await store.add_backfill(ROOM, [ev(11), ev(9), ev(8), old_topic], "p2")
    assert ids(await store.timeline(ROOM)) == ["$3", "$8", "$9", "$10", "$11"]
    assert await store.backfill_token(ROOM) == "p2"
    await store.add_backfill(ROOM, [ev(2)], None)  # no `end`: the start of the room
    assert ids(await store.timeline(ROOM)) == ["$2", "$3", "$8", "$9", "$10", "$11"]
    assert await store.backfill_token(ROOM) is None
    # history does not change current state
    current = await store.state_event(ROOM, "m.room.topic")
    assert current is not None and current.content == {"topic": "old"}


async def test_limited_sync_overlapping_stored_events_makes_no_gap(store: Store) -> None:
    await store.save_sync_batch(batch("s1", room(timeline=(ev(1), ev(2)))))
    await store.save_sync_batch(batch("s2", room(timeline=(ev(2), ev(3)), limited=True, prev_batch="p")))
    assert ids(await store.timeline(ROOM)) == ["$1", "$2", "$3"]
    assert await store.backfill_token(ROOM) is None


async def test_invite_state_is_kept_until_membership_changes(store: Store) -> None:
    stripped = (
        StrippedState("m.room.name", "", BOB, {"name": "Party"}),
        StrippedState("m.room.member", "@me:example.org", BOB, {"membership": "invite"}),
    )
    await store.save_sync_batch(batch("s1", room(membership="invite", invite_state=stripped)))
    assert await store.room_ids("invite") == [ROOM]
    assert sorted(await store.invite_state(ROOM), key=lambda s: s.type) == sorted(
        stripped, key=lambda s: s.type
    )
    await store.save_sync_batch(batch("s2", room(membership="join", timeline=(member(1, ALICE),))))
    assert await store.membership(ROOM) == "join"
    assert await store.invite_state(ROOM) == []


async def test_account_data_set_and_get(store: Store) -> None:
    await store.set_account_data("m.direct", {BOB: [ROOM]})
    await store.set_account_data("m.fully_read", {"event_id": "$1"}, ROOM)
    assert await store.account_data("m.direct") == {BOB: [ROOM]}
    assert await store.account_data("m.fully_read", ROOM) == {"event_id": "$1"}
    assert await store.account_data("m.fully_read") is None
    assert await store.account_data("m.direct", ROOM2) is None
    await store.save_sync_batch(batch("s1", account_data=({"type": "m.direct", "content": {}},)))
    assert await store.account_data("m.direct") == {}


# -- outbox ----------------------------------------------------------------------------------------


async def test_outbox_lifecycle(store: Store) -> None:
    await store.outbox_add(outbox("t2", ts=200))
    await store.outbox_add(outbox("t1", ts=100))
    await store.outbox_add(outbox("t3", ts=200))
    assert [e.txn_id for e in await store.outbox_pending()] == ["t1", "t2", "t3"]  # oldest first
    got = await store.outbox_get(TxnId("t1"))
    assert got == outbox("t1", ts=100)

    await store.outbox_mark_attempt(TxnId("t1"), "timeout")
    await store.outbox_mark_attempt(TxnId("t1"), None)
    got = await store.outbox_get(TxnId("t1"))
    assert got is not None and (got.attempts, got.last_error, got.state) == (2, None, "pending")

    await store.outbox_mark_failed(TxnId("t2"), "M_FORBIDDEN")
    await store.outbox_mark_sent(TxnId("t1"), EventId("$sent"))
    assert [e.txn_id for e in await store.outbox_pending()] == ["t3"]
    t1, t2 = await store.outbox_get(TxnId("t1")), await store.outbox_get(TxnId("t2"))
    assert t1 is not None and (t1.state, t1.event_id) == ("sent", "$sent")
    assert t2 is not None and (t2.state, t2.last_error) == ("failed", "M_FORBIDDEN")
    assert t2.content == {"body": "hi t2"}


async def test_outbox_rejects_duplicates_and_unknown_ids(store: Store) -> None:
    await store.outbox_add(outbox("t1", ts=1))
    with pytest.raises(StoreError):
        await store.outbox_add(outbox("t1", ts=2))
    assert await store.outbox_get(TxnId("nope")) is None
    for call in (
        store.outbox_mark_sent(TxnId("nope"), EventId("$x")),
        store.outbox_mark_failed(TxnId("nope"), "e"),
        store.outbox_mark_attempt(TxnId("nope"), None),
    ):
        with pytest.raises(UnknownOutboxEntry):
            await call


async def test_sync_echo_confirms_outbox_entries(store: Store) -> None:
    await store.outbox_add(outbox("t1", ts=1))
    await store.outbox_add(outbox("t2", ts=2))
    echo = ev(9, sender="@me:example.org", txn="t1")
    confirmed = await store.save_sync_batch(batch("s1", room(timeline=(ev(8), echo))))
    assert [(e.txn_id, e.state, e.event_id) for e in confirmed] == [("t1", "sent", "$9")]
    assert confirmed[0].content == {"body": "hi t1"}
    assert [e.txn_id for e in await store.outbox_pending()] == ["t2"]
    # the same echo again confirms nothing new
    assert await store.save_sync_batch(batch("s2", room(timeline=(echo,)))) == []


# -- atomicity -------------------------------------------------------------------------------------


class PoisonError(Exception):
    pass


class PoisonCodec:
    """Fails to encode any value containing b"POISON": a write failing mid-transaction."""

    def encode(self, plaintext: bytes) -> bytes:
        if b"POISON" in plaintext:
            raise PoisonError("encode failed")
        return plaintext

    def decode(self, stored: bytes) -> bytes:
        return stored


async def test_failed_batch_leaves_previous_state_intact(make_store: MakeStore) -> None:
    store = await make_store(PoisonCodec())
    await store.save_sync_batch(
        batch(
            "s1",
            room(ROOM, timeline=(ev(1),)),
            account_data=({"type": "m.direct", "content": {"a": ["!x:y"]}},),
        )
    )
    await store.outbox_add(outbox("t1", ts=1))
    bad = batch(
        "s2",
        room(ROOM, membership="leave", timeline=(ev(2), ev(3, sender="@me:example.org", txn="t1"))),
        room(ROOM2, timeline=(ev(4, ROOM2), ev(5, ROOM2, content={"body": "POISON"}))),
        account_data=({"type": "m.direct", "content": {}},),
    )
    with pytest.raises(PoisonError):
        await store.save_sync_batch(bad)
    assert await store.load_sync_token() == "s1"
    assert await store.membership(ROOM) == "join"
    assert ids(await store.timeline(ROOM)) == ["$1"]
    assert await store.room_ids() == [ROOM]
    assert [e.txn_id for e in await store.outbox_pending()] == ["t1"]
    assert await store.account_data("m.direct") == {"a": ["!x:y"]}


async def test_closed_store_refuses_calls(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreClosed):
        await store.load_sync_token()
    await store.close()  # idempotent
