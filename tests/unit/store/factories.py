"""Builders for events and sync batches used by the store contract suite."""

from __future__ import annotations

from typing import Any

from nimbus.store import KdfParams
from nimbus.types.events import Event, RoomUpdate, StrippedState, SyncBatch, parse_event
from nimbus.types.ids import RoomId, UserId

FAST_KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)
"""Weak Argon2id parameters, for fast tests only (passed explicitly; never a default)."""
PASSPHRASE = "correct horse battery staple"

ROOM = RoomId("!room:example.org")
ROOM2 = RoomId("!other:example.org")
ALICE = UserId("@alice:example.org")
BOB = UserId("@bob:example.org")


def ev(
    n: int | str,
    room: str = ROOM,
    *,
    type: str = "m.room.message",
    sender: str = ALICE,
    content: dict[str, Any] | None = None,
    state_key: str | None = None,
    txn: str | None = None,
    ts: int | None = None,
    **extra: Any,
) -> Event:
    raw: dict[str, Any] = {
        "event_id": f"${n}",
        "type": type,
        "sender": sender,
        "origin_server_ts": ts if ts is not None else (n if isinstance(n, int) else 0),
        "content": content if content is not None else {"msgtype": "m.text", "body": f"message {n}"},
        "room_id": room,
        **extra,
    }
    if state_key is not None:
        raw["state_key"] = state_key
    if txn is not None:
        raw["unsigned"] = {"transaction_id": txn}
    return parse_event(raw, room)


def member(n: int | str, user: str, membership: str = "join", room: str = ROOM, **content: Any) -> Event:
    return ev(
        n,
        room,
        type="m.room.member",
        sender=user,
        state_key=user,
        content={"membership": membership, **content},
    )


def name_event(n: int | str, name: str, room: str = ROOM) -> Event:
    return ev(n, room, type="m.room.name", state_key="", content={"name": name})


def room(
    room_id: str = ROOM,
    *,
    membership: str = "join",
    state: tuple[Event, ...] = (),
    timeline: tuple[Event, ...] = (),
    limited: bool = False,
    prev_batch: str | None = None,
    account_data: tuple[dict[str, Any], ...] = (),
    invite_state: tuple[StrippedState, ...] = (),
) -> RoomUpdate:
    return RoomUpdate(
        room_id=RoomId(room_id),
        membership=membership,
        state=state,
        timeline=timeline,
        limited=limited,
        prev_batch=prev_batch,
        account_data=account_data,
        invite_state=invite_state,
    )


def batch(next_batch: str, *rooms: RoomUpdate, account_data: tuple[dict[str, Any], ...] = ()) -> SyncBatch:
    return SyncBatch(next_batch=next_batch, rooms=rooms, account_data=account_data)


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]
