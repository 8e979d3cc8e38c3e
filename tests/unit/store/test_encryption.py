"""Encryption at rest: `AeadCodec`, the passphrase check, and how `SqliteStore.open` uses them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from nimbus.crypto.store import CryptoChanges
from nimbus.store import (
    AeadCodec,
    KdfParams,
    MemoryStore,
    PassphraseRequired,
    PlainCodec,
    Session,
    SqliteStore,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    WrongPassphrase,
)
from nimbus.store.migrate import Migration, bundled_migrations
from nimbus.types.ids import DeviceId, UserId

from .factories import FAST_KDF, PASSPHRASE, ROOM, batch, ev, ids, room

SESSION = Session("https://hs.example.org", UserId("@me:example.org"), DeviceId("DEV"), "syt_token")


def codec(passphrase: str = PASSPHRASE, salt: bytes | None = None) -> AeadCodec:
    return AeadCodec.from_passphrase(passphrase, salt=salt, kdf=FAST_KDF)


def meta(path: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(path)
    try:
        return {r[0]: bytes(r[1]) for r in conn.execute("SELECT name, value FROM meta")}
    finally:
        conn.close()


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- the codec -------------------------------------------------------------------------------------


def test_round_trip_with_random_nonces() -> None:
    c = codec()
    for value in (b"", b"x", b"\x00" * 1000, "ünïcödé".encode()):
        assert c.decode(c.encode(value)) == value
    a, b = c.encode(b"same"), c.encode(b"same")
    assert a != b  # a fresh nonce per value
    assert a[0] == 1 and len(a) == 1 + 12 + 4 + 16  # version, nonce, ciphertext, tag


def test_every_tampered_byte_is_detected() -> None:
    c = codec()
    stored = c.encode(b"secret value")
    for i in range(len(stored)):
        tampered = bytearray(stored)
        tampered[i] ^= 0x01
        with pytest.raises(StoreCorrupt):
            c.decode(bytes(tampered))
    for cut in (0, 1, 13, len(stored) - 1):
        with pytest.raises(StoreCorrupt):
            c.decode(stored[:cut])


def test_another_key_cannot_decode() -> None:
    a = codec()
    assert a.decode(a.encode(b"v")) == b"v"
    with pytest.raises(StoreCorrupt):
        codec("another passphrase", salt=a.salt).decode(a.encode(b"v"))
    with pytest.raises(StoreCorrupt):
        codec(salt=b"\x01" * 16).decode(codec(salt=b"\x02" * 16).encode(b"v"))


def test_same_passphrase_and_salt_give_the_same_keys() -> None:
    a, b = codec(salt=b"s" * 16), codec(salt=b"s" * 16)
    assert b.decode(a.encode(b"v")) == b"v"
    assert a.index(b"room") == b.index(b"room") != codec(salt=b"t" * 16).index(b"room")
    assert a.derive_key("vodozemac-pickle") == b.derive_key("vodozemac-pickle")
    assert len(a.derive_key("vodozemac-pickle")) == 32
    keys = {a.derive_key(p) for p in ("vodozemac-pickle", "backup", "x")} | {a.index(b"")}
    assert len(keys) == 4  # purposes (and the index key) are separated


def test_passphrase_is_unicode_normalised() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    a, b = codec(composed, salt=b"s" * 16), codec(decomposed, salt=b"s" * 16)
    b.check_verifier(a.make_verifier())


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(PassphraseRequired):
        AeadCodec.from_passphrase("", kdf=FAST_KDF)
    with pytest.raises(PassphraseRequired):
        MemoryStore(passphrase="", kdf=FAST_KDF)


def test_default_kdf_is_memory_hard() -> None:
    assert KdfParams() == KdfParams(memory_kib=65536, iterations=3, lanes=1)
    with pytest.raises(StoreError):
        KdfParams(memory_kib=1).check()


def test_close_zeroes_the_keys_and_stops_the_codec() -> None:
    c = codec()
    held = [c._root, c._value_key, c._index_key]
    assert all(any(buf) for buf in held)
    c.close()
    assert all(buf == bytearray(len(buf)) for buf in held)
    with pytest.raises(StoreClosed):
        c.encode(b"x")
    with pytest.raises(StoreClosed):
        c.decode(bytes(30))
    with pytest.raises(StoreClosed):
        c.index(b"x")
    with pytest.raises(StoreClosed):
        c.derive_key("p")


def test_repr_shows_no_key() -> None:
    c = codec()
    assert c._root.hex() not in repr(c) and "root" not in repr(c)


# -- the store on disk -----------------------------------------------------------------------------


async def test_encrypted_store_reopens_with_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    store = await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
    assert store.encrypted
    key = store.derive_key("vodozemac-pickle")
    await store.save_session(SESSION)
    await store.save_sync_batch(batch("s1", room(timeline=(ev(1),))))
    crypto = CryptoChanges()
    crypto.put("account", "", "", b"pickle")
    await store.crypto_save(crypto)
    await store.close()

    again = await SqliteStore.open(path, passphrase=PASSPHRASE)  # the stored KDF parameters apply
    try:
        assert await again.load_session() == SESSION
        assert ids(await again.timeline(ROOM)) == ["$1"]
        assert await again.crypto_get("account", "", "") == b"pickle"
        assert again.derive_key("vodozemac-pickle") == key
    finally:
        await again.close()


async def test_wrong_passphrase_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    store = await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
    await store.save_session(SESSION)
    await store.close()
    before = files(tmp_path)
    extra = Migration(len(bundled_migrations()) + 1, "extra", "CREATE TABLE extra (a);")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        await SqliteStore.open(
            path, passphrase="not the passphrase", migrations=[*bundled_migrations(), extra]
        )
    assert files(tmp_path) == before  # not migrated, no meta written, no byte changed
    again = await SqliteStore.open(path, passphrase=PASSPHRASE)
    try:
        assert await again.load_session() == SESSION
    finally:
        await again.close()


async def test_empty_passphrase_is_refused_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(PassphraseRequired):
        await SqliteStore.open(tmp_path / "nimbus.db", passphrase="")
    assert files(tmp_path) == {}


async def test_encrypted_store_refuses_to_open_without_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    await (await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)).close()
    before = files(tmp_path)
    with pytest.raises(PassphraseRequired):
        await SqliteStore.open(path)
    with pytest.raises(PassphraseRequired):
        await SqliteStore.open(path, PlainCodec())
    assert files(tmp_path) == before


async def test_plain_store_refuses_a_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    store = await SqliteStore.open(path, PlainCodec())
    await store.save_session(SESSION)
    await store.close()
    with pytest.raises(StoreError, match="without a passphrase"):
        await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)


async def test_unencrypted_data_from_before_schema_2_is_not_silently_mixed(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    old = await SqliteStore.open(path, PlainCodec(), migrations=bundled_migrations()[:1])
    await old.save_session(SESSION)
    await old.close()
    before = files(tmp_path)
    with pytest.raises(StoreError, match="unencrypted data"):
        await SqliteStore.open(path, passphrase=PASSPHRASE, kdf=FAST_KDF)
    assert files(tmp_path) == before


async def test_salt_is_random_per_database(tmp_path: Path) -> None:
    for name in ("a.db", "b.db"):
        await (await SqliteStore.open(tmp_path / name, passphrase=PASSPHRASE, kdf=FAST_KDF)).close()
    a, b = meta(tmp_path / "a.db"), meta(tmp_path / "b.db")
    assert len(a["salt"]) == 16 and a["salt"] != b["salt"]
    assert a["verifier"] != b["verifier"]
    assert a["codec"] == b"aead-chacha20poly1305-v1"
    assert PASSPHRASE.encode() not in b"".join(files(tmp_path).values())


async def test_default_kdf_parameters_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "nimbus.db"
    await (await SqliteStore.open(path, passphrase=PASSPHRASE)).close()  # the real (slow) parameters
    assert KdfParams.from_json(meta(path)["kdf"]) == KdfParams()


async def test_no_passphrase_and_no_codec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PassphraseRequired, match="no default"):
        await SqliteStore.open(tmp_path / "nimbus.db")
    assert not (tmp_path / "nimbus.db").exists()


async def test_a_plain_test_store_has_no_keys_to_derive(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "nimbus.db", PlainCodec())
    try:
        assert not store.encrypted
        with pytest.raises(StoreError, match="no passphrase"):
            store.derive_key("vodozemac-pickle")
    finally:
        await store.close()


async def test_passphrase_and_codec_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        await SqliteStore.open(tmp_path / "nimbus.db", PlainCodec(), passphrase=PASSPHRASE)


async def test_close_zeroes_the_store_keys(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "nimbus.db", passphrase=PASSPHRASE, kdf=FAST_KDF)
    aead = store._codec
    assert isinstance(aead, AeadCodec)
    await store.close()
    assert aead._root == bytearray(32)
    with pytest.raises(StoreClosed):
        store.derive_key("p")


KILLED_WRITER = r"""
import asyncio, os, signal, sys
from pathlib import Path
from nimbus.store import KdfParams, SqliteStore
from nimbus.types.events import SyncBatch

async def main() -> None:
    store = await SqliteStore.open(
        Path(sys.argv[1]), passphrase=sys.argv[2], kdf=KdfParams(memory_kib=8, iterations=1, lanes=1)
    )
    await store.set_account_data("org.example", {"n": 1})
    await store.save_sync_batch(SyncBatch("t1"))
    os.kill(os.getpid(), signal.SIGKILL)  # leaves its WAL behind, never checkpointed

asyncio.run(main())
"""


async def test_wrong_passphrase_after_a_kill_leaves_database_and_wal_untouched(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "nimbus.db"
    command = [sys.executable, "-c", KILLED_WRITER, str(path), PASSPHRASE]
    proc = await asyncio.to_thread(subprocess.run, command, timeout=60)
    assert proc.returncode == -9
    before = files(tmp_path)
    assert before.get("nimbus.db-wal"), "the killed writer left a WAL"
    with pytest.raises(WrongPassphrase):
        await SqliteStore.open(path, passphrase="not the passphrase")
    after = files(tmp_path)
    for name in ("nimbus.db", "nimbus.db-wal"):  # -shm is SQLite's rebuildable index, no data
        assert after[name] == before[name]
    store = await SqliteStore.open(path, passphrase=PASSPHRASE)
    assert await store.load_sync_token() == "t1"
    await store.close()
