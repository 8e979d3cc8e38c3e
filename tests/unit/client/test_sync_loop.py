"""The sync loop against bad input and bad servers: it keeps going and loses nothing stored.

The network seam is httpx.MockTransport (unit tests never open sockets). Each scenario scripts the
/sync answers; the loop must skip or retry, never die, and never advance past unsaved data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from nimbus.api.errors import UnknownToken
from nimbus.client.sync import SyncLoop
from nimbus.client.transport import Transport
from nimbus.store import MemoryStore
from nimbus.types.ids import RoomId

ROOM = RoomId("!room:example.org")


def event(n: int, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": f"$e{n}",
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "origin_server_ts": 1000 + n,
        "content": {"msgtype": "m.text", "body": f"message {n}"},
    }
    ev.update(over)
    return ev


def sync_body(next_batch: str, *events: dict[str, Any]) -> dict[str, Any]:
    return {
        "next_batch": next_batch,
        "rooms": {"join": {ROOM: {"timeline": {"events": list(events), "limited": False}}}},
    }


Answer = Callable[[httpx.Request], httpx.Response]


def scripted(answers: list[Answer], seen: list[httpx.Request], stop: asyncio.Event) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not answers:
            stop.set()
            return httpx.Response(200, json={"next_batch": "idle"})
        return answers.pop(0)(request)

    return httpx.MockTransport(handler)


def ok(body: Any) -> Answer:
    return lambda _r: httpx.Response(200, json=body)


def raw(status: int, content: bytes, headers: dict[str, str] | None = None) -> Answer:
    return lambda _r: httpx.Response(status, content=content, headers=headers or {})


def fail(exc: type[Exception]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc("scripted failure", request=request)  # type: ignore[call-arg]

    return answer


async def no_sleep(_delay: float) -> None:
    await asyncio.sleep(0)


async def run_script(answers: list[Answer]) -> tuple[MemoryStore, SyncLoop, list[httpx.Request]]:
    store = MemoryStore()
    seen: list[httpx.Request] = []
    stop = asyncio.Event()
    transport = Transport(
        "https://hs.example.org",
        access_token="secret-token",
        transport=scripted(answers, seen, stop),
        sleep=no_sleep,
        max_retries=1,
    )
    loop = SyncLoop(store, transport, timeout_ms=0, backoff_base=0.001, backoff_max=0.002)
    await asyncio.wait_for(loop.run(stop), timeout=10)
    await transport.aclose()
    return store, loop, seen


async def bodies(store: MemoryStore) -> list[str]:
    return [e.content.get("body", "") for e in await store.timeline(ROOM, limit=100)]


async def test_loop_survives_every_kind_of_bad_answer_and_keeps_what_it_stored() -> None:
    answers: list[Answer] = [
        ok(sync_body("t1", event(1))),
        raw(200, b"{not json"),  # malformed JSON
        ok([1, 2, 3]),  # wrong type at the top
        ok({"rooms": {}}),  # next_batch missing
        ok(sync_body("t2", event(2, content="not an object"), event(3))),  # wrong field type: skipped
        ok(sync_body("t3", {"type": "m.room.message", "sender": "@a:b"}, event(4))),  # missing fields
        ok(sync_body("t4", event(5, type="org.example.unknown", content={"x": 1}))),  # unknown type: kept
        raw(500, b"internal error"),
        raw(500, b"internal error"),
        raw(429, json.dumps({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 1}).encode()),
        fail(httpx.RemoteProtocolError),  # closed connection
        fail(httpx.RemoteProtocolError),
        fail(httpx.ReadTimeout),  # a server that never answers
        fail(httpx.ReadTimeout),
        fail(httpx.ConnectError),
        fail(httpx.ConnectError),
        ok(sync_body("t5", event(6))),
    ]
    store, loop, seen = await run_script(answers)

    assert await bodies(store) == ["message 1", "message 3", "message 4", "", "message 6"]
    types = [e.type for e in await store.timeline(ROOM, limit=100)]
    assert "org.example.unknown" in types
    # The token only advanced on saved batches; the last request resumed from the last good one.
    assert await store.load_sync_token() == "idle"
    sinces = [r.url.params.get("since") for r in seen]
    assert sinces[1:4] == ["t1", "t1", "t1"]  # bad answers never advanced the token
    assert "t5" in sinces
    assert loop.errors == 0  # reset by the final good batch


async def test_a_failing_listener_does_not_stop_the_loop() -> None:
    store = MemoryStore()
    seen: list[httpx.Request] = []
    stop = asyncio.Event()
    answers = [ok(sync_body("t1", event(1))), ok(sync_body("t2", event(2)))]
    transport = Transport("https://hs.example.org", transport=scripted(answers, seen, stop), sleep=no_sleep)
    loop = SyncLoop(store, transport, timeout_ms=0)
    calls: list[str] = []

    def broken(batch: Any, _confirmed: Any) -> None:
        calls.append(batch.next_batch)
        raise RuntimeError("listener bug")

    loop.listeners.append(broken)
    await asyncio.wait_for(loop.run(stop), timeout=10)
    await transport.aclose()
    assert calls[:2] == ["t1", "t2"]
    assert await bodies(store) == ["message 1", "message 2"]


async def test_a_dead_session_ends_the_loop_with_a_clear_error() -> None:
    store = MemoryStore()
    stop = asyncio.Event()
    answers = [
        ok(sync_body("t1", event(1))),
        raw(401, json.dumps({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token"}).encode()),
    ]
    transport = Transport("https://hs.example.org", transport=scripted(answers, [], stop), sleep=no_sleep)
    loop = SyncLoop(store, transport, timeout_ms=0)
    with pytest.raises(UnknownToken) as info:
        await asyncio.wait_for(loop.run(stop), timeout=10)
    await transport.aclose()
    assert "Invalid access token" in str(info.value)
    assert await bodies(store) == ["message 1"]  # what was stored stays
    assert await store.load_sync_token() == "t1"


async def test_a_store_failure_keeps_the_token_and_retries() -> None:
    class FlakyStore(MemoryStore):
        fail_next = True

        async def save_sync_batch(self, batch: Any, crypto: Any = None, decrypted: Any = None) -> Any:
            if self.fail_next:
                self.fail_next = False
                raise OSError("disk full")
            return await super().save_sync_batch(batch, crypto, decrypted)

    store = FlakyStore()
    seen: list[httpx.Request] = []
    stop = asyncio.Event()
    answers = [ok(sync_body("t1", event(1))), ok(sync_body("t1", event(1)))]
    transport = Transport("https://hs.example.org", transport=scripted(answers, seen, stop), sleep=no_sleep)
    loop = SyncLoop(store, transport, timeout_ms=0, backoff_base=0.001)
    await asyncio.wait_for(loop.run(stop), timeout=10)
    await transport.aclose()
    assert [r.url.params.get("since") for r in seen][:2] == [None, None]  # the failed batch was asked again
    assert await bodies(store) == ["message 1"]
