"""Writes canary secrets through the store, round after round; used in-process and as a subprocess.

`python canary_writer.py DB [plain]` opens DB (encrypted with the test passphrase, or with PlainCodec
when "plain" is given), saves a session, then writes rounds forever, printing "wrote N" after each
committed round, until it is killed (tests/unit/store/test_at_rest.py SIGKILLs it mid-way).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from nimbus.crypto.store import CryptoChanges
from nimbus.store import KdfParams, OutboxEntry, PlainCodec, Session, SqliteStore, Store
from nimbus.types.events import RoomUpdate, StrippedState, SyncBatch, parse_event
from nimbus.types.ids import DeviceId, EventId, RoomId, TxnId, UserId

PASSPHRASE = "canary test passphrase"
KDF = KdfParams(memory_kib=8, iterations=1, lanes=1)  # weak, for a fast test; passed explicitly
ROOM = RoomId("!canary:example.org")
INVITE_ROOM = RoomId("!invite:example.org")
ME = UserId("@me:example.org")

TOKEN = "syt_CANARY_ACCESS_TOKEN_7f3a"
BODY = "CANARY_MESSAGE_BODY_91c2"
DISPLAYNAME = "CANARY_DISPLAYNAME_4b1e"
ACCOUNT_DATA = "CANARY_ACCOUNT_DATA_55d0"
ROOM_ACCOUNT_DATA = "CANARY_ROOM_ACCOUNT_DATA_e8a1"
INVITE_NAME = "CANARY_INVITE_NAME_0c77"
OUTBOX_BODY = "CANARY_OUTBOX_BODY_a9f4"
PRIVATE_KEY = "CANARY_PRIVATE_KEY_d3b8"
SENDER_KEY = "CANARY_SENDER_CURVE25519_6e2f"
SESSION_ID = "CANARY_SESSION_ID_1a9c"
DECRYPTED_BODY = "CANARY_DECRYPTED_BODY_b7e5"

CANARIES = [
    TOKEN,
    BODY,
    DISPLAYNAME,
    ACCOUNT_DATA,
    ROOM_ACCOUNT_DATA,
    INVITE_NAME,
    OUTBOX_BODY,
    PRIVATE_KEY,
    SENDER_KEY,
    SESSION_ID,
    DECRYPTED_BODY,
]


def _event(event_id: str, **fields: Any) -> Any:
    raw = {"event_id": event_id, "sender": ME, "origin_server_ts": 1, "room_id": ROOM, **fields}
    return parse_event(raw, ROOM)


async def write_round(store: Store, n: int) -> None:
    """One sync batch (with crypto changes and decrypted plaintexts) and one outbox entry."""
    message = _event(f"$m{n}", type="m.room.message", content={"msgtype": "m.text", "body": f"{BODY} {n}"})
    encrypted = _event(f"$e{n}", type="m.room.encrypted", content={"algorithm": "m.megolm.v1.aes-sha2"})
    me = _event(
        f"$s{n}",
        type="m.room.member",
        state_key=ME,
        content={"membership": "join", "displayname": DISPLAYNAME},
    )
    batch = SyncBatch(
        next_batch=f"s{n}",
        rooms=(
            RoomUpdate(
                room_id=ROOM,
                membership="join",
                state=(me,),
                timeline=(message, encrypted),
                limited=False,
                prev_batch=None,
                account_data=({"type": "m.tag", "content": {"tags": {ROOM_ACCOUNT_DATA: {}}}},),
                invite_state=(),
            ),
            RoomUpdate(
                room_id=INVITE_ROOM,
                membership="invite",
                state=(),
                timeline=(),
                limited=False,
                prev_batch=None,
                account_data=(),
                invite_state=(StrippedState("m.room.name", "", ME, {"name": INVITE_NAME}),),
            ),
        ),
        account_data=({"type": "m.direct", "content": {ACCOUNT_DATA: [ROOM]}},),
    )
    crypto = CryptoChanges()
    crypto.put("account", "", "", f"{PRIVATE_KEY} {n}".encode())
    crypto.put("inbound_group_session", SENDER_KEY, f"{SESSION_ID}{n}", f"{PRIVATE_KEY} session".encode())
    plaintext = {"type": "m.room.message", "content": {"body": f"{DECRYPTED_BODY} {n}"}, "room_id": ROOM}
    await store.save_sync_batch(batch, crypto=crypto, decrypted={EventId(f"$e{n}"): plaintext})
    ratchet = CryptoChanges()
    ratchet.put("outbound_group_session", ROOM, "", f"{PRIVATE_KEY} outbound {n}".encode())
    entry = OutboxEntry(TxnId(f"t{n}"), ROOM, "m.room.message", {"body": f"{OUTBOX_BODY} {n}"}, created_ts=n)
    await store.outbox_add(entry, crypto=ratchet)


async def open_store(path: Path, plain: bool) -> SqliteStore:
    if plain:
        return await SqliteStore.open(path, PlainCodec())
    return await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=KDF)


async def main_session(store: Store) -> None:
    await store.save_session(Session("https://hs.example.org", ME, DeviceId("DEV"), TOKEN))


async def main(path: Path, plain: bool) -> None:
    store = await open_store(path, plain)
    await main_session(store)
    n = 0
    while True:  # until SIGKILL
        n += 1
        await write_round(store, n)
        print(f"wrote {n}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), len(sys.argv) > 2 and sys.argv[2] == "plain"))
