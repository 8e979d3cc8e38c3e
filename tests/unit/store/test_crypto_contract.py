"""The `CryptoStore` part of the store contract and the decrypted-event cache, on every backend.

Crypto objects are committed with the sync batch / outbox entry they belong to, in ONE transaction
(issue 3, "Persistence: nothing lost, nothing reused"). Overlay semantics (uncommitted changes seen by
the machine) are the crypto machine's, not the store's: the store only shows committed data.
"""

from __future__ import annotations

import pytest

from nimbus.crypto.store import CryptoChanges
from nimbus.store import OutboxEntry, Store, StoreClosed, StoreError
from nimbus.types.ids import EventId, RoomId, TxnId

from .conftest import MakeStore
from .factories import ROOM, ROOM2, batch, ev, room
from .test_store_contract import PoisonCodec, PoisonError


def changes(*puts: tuple[str, str, str, bytes | None]) -> CryptoChanges:
    c = CryptoChanges()
    for kind, group, item, value in puts:
        if value is None:
            c.delete(kind, group, item)
        else:
            c.put(kind, group, item, value)
    return c


def entry(txn: str) -> OutboxEntry:
    return OutboxEntry(TxnId(txn), ROOM, "m.room.encrypted", {"ciphertext": f"c-{txn}"}, created_ts=1)


# -- get / list / save -----------------------------------------------------------------------------


async def test_get_list_save_round_trip(store: Store) -> None:
    assert await store.crypto_get("account", "", "") is None
    assert await store.crypto_list("olm_session", "curveA") == []
    await store.crypto_save(
        changes(
            ("account", "", "", b"\x00pickle\xff"),
            ("olm_session", "curveA", "s1", b"one"),
            ("olm_session", "curveA", "s2", b"two"),
            ("olm_session", "curveB", "s3", b"three"),
            ("inbound_group_session", "curveA", "s1", b"other kind"),
        )
    )
    assert await store.crypto_get("account", "", "") == b"\x00pickle\xff"
    assert await store.crypto_get("olm_session", "curveA", "s2") == b"two"
    assert await store.crypto_get("olm_session", "curveB", "s1") is None
    assert sorted(await store.crypto_list("olm_session", "curveA")) == [("s1", b"one"), ("s2", b"two")]
    assert await store.crypto_list("olm_session", "curveB") == [("s3", b"three")]
    assert await store.crypto_list("inbound_group_session", "curveA") == [("s1", b"other kind")]


async def test_overwrite_delete_and_empty_values(store: Store) -> None:
    await store.crypto_save(changes(("device", "@a:x", "D1", b"v1"), ("device", "@a:x", "D2", b"")))
    await store.crypto_save(changes(("device", "@a:x", "D1", b"v2"), ("device", "@a:x", "D2", None)))
    assert await store.crypto_get("device", "@a:x", "D1") == b"v2"
    assert await store.crypto_get("device", "@a:x", "D2") is None
    assert await store.crypto_list("device", "@a:x") == [("D1", b"v2")]
    await store.crypto_save(changes(("device", "@a:x", "never-stored", None)))  # deleting nothing is fine
    await store.crypto_save(changes(("device", "@a:x", "D1", None)))
    assert await store.crypto_list("device", "@a:x") == []


async def test_names_are_kept_exactly(store: Store) -> None:
    # groups/items that differ only in where a separator falls must not collide
    await store.crypto_save(
        changes(
            ("replay", "ab", "c", b"1"),
            ("replay", "a", "bc", b"2"),
            ("replay", "", "ünïcödé 🔑", b"3"),
            ("replay", '["a"', '"b"]', b"4"),
        )
    )
    assert await store.crypto_get("replay", "ab", "c") == b"1"
    assert await store.crypto_get("replay", "a", "bc") == b"2"
    assert await store.crypto_list("replay", "") == [("ünïcödé 🔑", b"3")]
    assert await store.crypto_get("replay", '["a"', '"b"]') == b"4"


async def test_empty_change_set_is_a_no_op(store: Store) -> None:
    await store.crypto_save(CryptoChanges())
    await store.save_sync_batch(batch("s1"), crypto=CryptoChanges())
    assert await store.load_sync_token() == "s1"


async def test_failing_change_set_keeps_nothing(make_store: MakeStore) -> None:
    store = await make_store(PoisonCodec())
    await store.crypto_save(changes(("olm_session", "g", "old", b"kept")))
    with pytest.raises(PoisonError):
        await store.crypto_save(
            changes(("olm_session", "g", "old", None), ("olm_session", "g", "new", b"POISON"))
        )
    assert await store.crypto_list("olm_session", "g") == [("old", b"kept")]


# -- atomic with a sync batch ----------------------------------------------------------------------


async def test_crypto_changes_commit_with_the_sync_batch(store: Store) -> None:
    await store.save_sync_batch(
        batch("s1", room(timeline=(ev(1),))), crypto=changes(("account", "", "", b"acct-1"))
    )
    assert await store.load_sync_token() == "s1"
    assert await store.crypto_get("account", "", "") == b"acct-1"


async def test_failing_batch_keeps_no_crypto_changes(make_store: MakeStore) -> None:
    store = await make_store(PoisonCodec())
    await store.save_sync_batch(batch("s1"), crypto=changes(("account", "", "", b"acct-1")))
    bad = batch("s2", room(timeline=(ev(1), ev(2, content={"body": "POISON"}))))
    with pytest.raises(PoisonError):
        await store.save_sync_batch(
            bad, crypto=changes(("account", "", "", b"acct-2"), ("olm_session", "k", "s", b"x"))
        )
    assert await store.load_sync_token() == "s1"
    assert await store.crypto_get("account", "", "") == b"acct-1"
    assert await store.crypto_list("olm_session", "k") == []


async def test_failing_crypto_changes_keep_no_batch(make_store: MakeStore) -> None:
    store = await make_store(PoisonCodec())
    await store.save_sync_batch(batch("s1"))
    with pytest.raises(PoisonError):
        await store.save_sync_batch(
            batch("s2", room(timeline=(ev(1),))),
            crypto=changes(("account", "", "", b"fine"), ("olm_session", "k", "s", b"POISON")),
        )
    assert await store.load_sync_token() == "s1"
    assert await store.timeline(ROOM) == []
    assert await store.crypto_get("account", "", "") is None


# -- atomic with outbox_add ------------------------------------------------------------------------


async def test_crypto_changes_commit_with_the_outbox_entry(store: Store) -> None:
    await store.outbox_add(entry("t1"), crypto=changes(("outbound_group_session", ROOM, "", b"index 5")))
    assert [e.txn_id for e in await store.outbox_pending()] == ["t1"]
    assert await store.crypto_get("outbound_group_session", ROOM, "") == b"index 5"


async def test_rejected_outbox_entry_keeps_no_crypto_changes(store: Store) -> None:
    await store.outbox_add(entry("t1"), crypto=changes(("outbound_group_session", ROOM, "", b"index 5")))
    # the change set is written first, then the duplicate txn_id fails: the ratchet must not move
    with pytest.raises(StoreError):
        await store.outbox_add(entry("t1"), crypto=changes(("outbound_group_session", ROOM, "", b"index 6")))
    assert await store.crypto_get("outbound_group_session", ROOM, "") == b"index 5"


async def test_failing_crypto_changes_keep_no_outbox_entry(make_store: MakeStore) -> None:
    store = await make_store(PoisonCodec())
    with pytest.raises(PoisonError):
        await store.outbox_add(
            entry("t1"),
            crypto=changes(("a", "", "1", b"fine"), ("outbound_group_session", ROOM, "", b"POISON")),
        )
    assert await store.outbox_get(TxnId("t1")) is None
    assert await store.crypto_get("a", "", "1") is None


# -- decrypted-event cache -------------------------------------------------------------------------


async def test_decrypted_cache_round_trip(store: Store) -> None:
    plain = {"type": "m.room.message", "content": {"body": "hello"}, "room_id": ROOM}
    await store.save_decrypted(ROOM, EventId("$1"), plain)
    got = await store.decrypted(ROOM, [EventId("$1"), EventId("$nope")])
    assert got == {EventId("$1"): plain}
    assert await store.decrypted(ROOM2, [EventId("$1")]) == {}


async def test_decrypted_plaintexts_commit_with_the_batch(store: Store) -> None:
    e1, e2 = ev(1, type="m.room.encrypted", content={}), ev(2, ROOM2, type="m.room.encrypted", content={})
    p1 = {"type": "m.room.message", "content": {"body": "one"}}  # room taken from the batch
    p2 = {"type": "m.room.message", "content": {"body": "two"}, "room_id": ROOM2}
    p3 = {"type": "m.room.message", "content": {"body": "late"}, "room_id": ROOM}  # not in the batch
    await store.save_sync_batch(
        batch("s1", room(timeline=(e1,)), room(ROOM2, timeline=(e2,))),
        crypto=changes(("inbound_group_session", ROOM, "sid", b"sess")),
        decrypted={EventId("$1"): p1, EventId("$2"): p2, EventId("$0"): p3},
    )
    assert await store.decrypted(ROOM, [EventId("$1"), EventId("$0")]) == {"$1": p1, "$0": p3}
    assert await store.decrypted(ROOM2, [EventId("$2")]) == {"$2": p2}


@pytest.mark.parametrize(
    "plaintext",
    [
        {"content": {}, "room_id": "!elsewhere:example.org"},  # claims another room than it arrived in
        "not an object",
    ],
)
async def test_bad_decrypted_plaintext_rejects_the_whole_batch(store: Store, plaintext: object) -> None:
    with pytest.raises(StoreError):
        await store.save_sync_batch(
            batch("s1", room(timeline=(ev(1),))),
            crypto=changes(("account", "", "", b"a")),
            decrypted={EventId("$1"): plaintext},  # type: ignore[dict-item]
        )
    assert await store.load_sync_token() is None
    assert await store.crypto_get("account", "", "") is None
    assert await store.decrypted(ROOM, [EventId("$1")]) == {}


async def test_decrypted_plaintext_without_a_room_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="room_id"):
        await store.save_sync_batch(batch("s1"), decrypted={EventId("$9"): {"content": {}}})
    assert await store.load_sync_token() is None


async def test_closed_store_refuses_crypto_calls(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreClosed):
        await store.crypto_get("account", "", "")
    with pytest.raises(StoreClosed):
        await store.crypto_save(changes(("account", "", "", b"a")))
    with pytest.raises(StoreClosed):
        await store.decrypted(RoomId(ROOM), [EventId("$1")])


async def test_malformed_change_set_keeps_nothing(store: Store) -> None:
    bad = CryptoChanges()
    bad.put("account", "", "", b"fine")
    bad.objects[("olm_session", "g", "i")] = "not bytes"  # type: ignore[assignment]
    with pytest.raises(StoreError):
        await store.crypto_save(bad)
    with pytest.raises(StoreError):
        await store.save_sync_batch(batch("s1"), crypto=bad)
    assert await store.crypto_get("account", "", "") is None
    assert await store.load_sync_token() is None
