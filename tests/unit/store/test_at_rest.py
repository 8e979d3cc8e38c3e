"""Nothing secret at rest: canary secrets written through the store never appear in any file it wrote.

Canaries (tests/unit/store/canary_writer.py): access token, message bodies, a display name, global and
room account data, invite state, outbox content, crypto values ("private keys"), crypto group/item
names (a sender key, a session id) and decrypted plaintexts. The files (database, -wal, -shm, anything
else in the folder) are read as raw bytes: while the store is open (data in the WAL), after a
checkpoint, after close, and after SIGKILL of a process that was writing. A PlainCodec run shows the
scan finds the canaries when they are there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from nimbus.store import SqliteStore
from nimbus.types.ids import EventId

from . import canary_writer as cw

WRITER = Path(cw.__file__)


def raw_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def canaries_in(folder: Path) -> dict[str, list[str]]:
    """{file name: canaries found in it}, for files holding any."""
    found = {}
    for name, data in raw_files(folder).items():
        hits = [c for c in cw.CANARIES if c.encode() in data]
        if hits:
            found[name] = hits
    return found


def file_sizes(folder: Path) -> dict[str, int]:
    return {name: len(data) for name, data in raw_files(folder).items()}


async def check_readable(store: SqliteStore, rounds: int) -> None:
    """The canaries really were stored (so their absence on disk means encryption, not loss)."""
    session = await store.load_session()
    assert session is not None and session.access_token == cw.TOKEN
    assert await store.load_sync_token() == f"s{rounds}"
    timeline = await store.timeline(cw.ROOM, limit=1000)
    assert timeline[-2].content["body"] == f"{cw.BODY} {rounds}"
    assert await store.crypto_get("account", "", "") == f"{cw.PRIVATE_KEY} {rounds}".encode()
    items = dict(await store.crypto_list("inbound_group_session", cw.SENDER_KEY))
    assert f"{cw.SESSION_ID}{rounds}" in items
    got = await store.decrypted(cw.ROOM, [EventId(f"$e{rounds}")])
    assert got[EventId(f"$e{rounds}")]["content"]["body"] == f"{cw.DECRYPTED_BODY} {rounds}"
    entries = await store.outbox_pending()
    # A round is two transactions (the sync batch, then the outbox entry): a kill between them leaves
    # the round's batch without its outbox entry, never the other way round.
    assert entries[-1].content in (
        {"body": f"{cw.OUTBOX_BODY} {rounds}"},
        {"body": f"{cw.OUTBOX_BODY} {rounds - 1}"},
    )
    assert await store.account_data("m.direct") == {cw.ACCOUNT_DATA: [cw.ROOM]}


async def test_no_canary_in_any_file_open_checkpointed_or_closed(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    store = await cw.open_store(path, plain=False)
    try:
        await cw.main_session(store)
        for n in range(1, 4):
            await cw.write_round(store, n)
        sizes = file_sizes(tmp_path)
        assert sizes["nimbus.db-wal"] > 0 and "nimbus.db-shm" in sizes  # the data is in the WAL now
        assert canaries_in(tmp_path) == {}
        await store._run(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        assert file_sizes(tmp_path)["nimbus.db-wal"] == 0  # everything moved into the database file
        assert canaries_in(tmp_path) == {}
        await check_readable(store, 3)
    finally:
        await store.close()
    assert canaries_in(tmp_path) == {}


async def test_the_scan_finds_canaries_in_a_plain_store(tmp_path: Path) -> None:
    store = await cw.open_store(tmp_path / "nimbus.db", plain=True)
    try:
        await cw.main_session(store)
        await cw.write_round(store, 1)
        await check_readable(store, 1)
    finally:
        await store.close()
    found = {c for hits in canaries_in(tmp_path).values() for c in hits}
    assert found == set(cw.CANARIES)


async def kill_writer_mid_way(folder: Path, rounds: int, plain: bool = False) -> int:
    """Run the writer in a subprocess, SIGKILL it while it keeps writing; return the rounds it reported."""
    args = [sys.executable, str(WRITER), str(folder / "nimbus.db")] + (["plain"] if plain else [])
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    done = 0
    try:
        while done < rounds:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                pytest.fail(f"writer exited early: {err.decode(errors='replace')[-2000:]}")
            done = int(line.split()[1])
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)  # mid-way: the writer is in its next round
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return done


async def test_no_canary_after_sigkill_of_a_writer(tmp_path: Path) -> None:
    done = await kill_writer_mid_way(tmp_path, rounds=25)
    sizes = file_sizes(tmp_path)
    assert sizes.get("nimbus.db-wal", 0) > 0  # killed with committed data still in the WAL
    assert canaries_in(tmp_path) == {}

    # recovery: at least every reported round is there, and readable with the passphrase
    store = await cw.open_store(tmp_path / "nimbus.db", plain=False)
    try:
        token = await store.load_sync_token()
        assert token is not None and int(token[1:]) >= done
        await check_readable(store, int(token[1:]))
        assert canaries_in(tmp_path) == {}
    finally:
        await store.close()
    assert canaries_in(tmp_path) == {}
    conn = sqlite3.connect(tmp_path / "nimbus.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_the_scan_finds_canaries_after_sigkill_of_a_plain_writer(tmp_path: Path) -> None:
    await kill_writer_mid_way(tmp_path, rounds=3, plain=True)
    found = {c for hits in canaries_in(tmp_path).values() for c in hits}
    assert found == set(cw.CANARIES)
