"""The outbox's rules, with the network as httpx.MockTransport and a real SQLite store on disk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from nimbus.client.outbox import Outbox
from nimbus.client.transport import Transport
from nimbus.store import PlainCodec, SqliteStore
from nimbus.types.events import RoomUpdate, SyncBatch, parse_event
from nimbus.types.ids import RoomId

ROOM = RoomId("!room:example.org")


async def no_sleep(_delay: float) -> None:
    await asyncio.sleep(0)


def transport(handler: Any) -> Transport:
    return Transport(
        "https://hs.example.org",
        access_token="tok",
        transport=httpx.MockTransport(handler),
        sleep=no_sleep,
        max_retries=0,
    )


async def test_accepted_message_is_on_disk_before_any_request(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db", PlainCodec())
    on_disk_at_put: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        # A second connection to the file: what a restarted process would see at this moment.
        import sqlite3

        with sqlite3.connect(tmp_path / "s.db") as db:
            on_disk_at_put.append([row[0] for row in db.execute("SELECT txn_id FROM outbox")])
        return httpx.Response(200, json={"event_id": "$sent"})

    outbox = Outbox(store, transport(handler))
    entry = await outbox.accept(ROOM, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    result = await outbox.deliver_pending()
    assert on_disk_at_put == [[entry.txn_id]]
    assert [e.event_id for e in result.sent] == ["$sent"]
    assert (await store.outbox_get(entry.txn_id)).state == "sent"  # type: ignore[union-attr]
    await store.close()


async def test_retry_uses_the_same_transaction_id_and_keeps_order(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db", PlainCodec())
    puts: list[str] = []
    down = True

    def handler(request: httpx.Request) -> httpx.Response:
        puts.append(request.url.path)
        if down:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"event_id": "$" + request.url.path.rsplit("/", 1)[1][-6:]})

    outbox = Outbox(store, transport(handler))
    first = await outbox.accept(ROOM, "m.room.message", {"body": "1"})
    second = await outbox.accept(ROOM, "m.room.message", {"body": "2"})
    result = await outbox.deliver_pending()
    assert result.sent == [] and [e.txn_id for e in result.pending] == [first.txn_id, second.txn_id]
    assert result.last_error == "ServerUnreachable"
    assert all(p.endswith(first.txn_id) for p in puts)  # the second never overtook the first
    assert (await store.outbox_get(first.txn_id)).attempts == 1  # type: ignore[union-attr]

    down = False
    puts.clear()
    result = await outbox.deliver_pending()
    assert [e.txn_id for e in result.sent] == [first.txn_id, second.txn_id]
    assert puts[0].endswith("/send/m.room.message/" + first.txn_id)
    assert puts[1].endswith("/send/m.room.message/" + second.txn_id)
    assert await store.outbox_pending() == []
    await store.close()


async def test_permanent_refusal_marks_failed_and_later_messages_still_go(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db", PlainCodec())
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(403, json={"errcode": "M_FORBIDDEN", "error": "not in room"})
        return httpx.Response(200, json={"event_id": "$ok"})

    outbox = Outbox(store, transport(handler))
    refused = await outbox.accept(ROOM, "m.room.message", {"body": "1"})
    fine = await outbox.accept(ROOM, "m.room.message", {"body": "2"})
    result = await outbox.deliver_pending()
    assert [e.txn_id for e in result.failed] == [refused.txn_id]
    assert result.failed[0].last_error == "Forbidden (M_FORBIDDEN)"
    assert [e.txn_id for e in result.sent] == [fine.txn_id]
    kept = await store.outbox_get(refused.txn_id)
    assert (
        kept is not None and kept.state == "failed" and kept.content == {"body": "1"}
    )  # never silently dropped
    await store.close()


async def test_sync_echo_confirms_delivery_without_a_resend(tmp_path: Path) -> None:
    """The answer to the PUT was lost, but /sync shows our event with its transaction id."""
    store = await SqliteStore.open(tmp_path / "s.db", PlainCodec())
    puts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal puts
        puts += 1
        raise httpx.ConnectError("refused", request=request)

    outbox = Outbox(store, transport(handler))
    entry = await outbox.accept(ROOM, "m.room.message", {"body": "1"})
    echo = {
        "event_id": "$echo",
        "type": "m.room.message",
        "sender": "@me:example.org",
        "origin_server_ts": 1,
        "content": {"body": "1"},
        "unsigned": {"transaction_id": entry.txn_id},
    }
    confirmed = await store.save_sync_batch(
        SyncBatch("t1", rooms=(RoomUpdate(ROOM, "join", timeline=(parse_event(echo, ROOM),)),))
    )
    assert [e.txn_id for e in confirmed] == [entry.txn_id]
    result = await outbox.deliver_pending()
    assert puts == 0 and result.pending == []
    assert (await store.outbox_get(entry.txn_id)).event_id == "$echo"  # type: ignore[union-attr]
    await store.close()


async def test_flush_gives_up_at_the_deadline_and_keeps_the_message(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db", PlainCodec())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=json.dumps({"error": "bad gateway"}).encode())

    outbox = Outbox(store, transport(handler), backoff_base=0.01, sleep=no_sleep)
    entry = await outbox.accept(ROOM, "m.room.message", {"body": "1"})
    loop = asyncio.get_running_loop()
    result = await outbox.flush(deadline=loop.time() + 0.2)
    assert [e.txn_id for e in result.pending] == [entry.txn_id]
    assert result.last_error is not None and "ServerError" in result.last_error
    await store.close()
