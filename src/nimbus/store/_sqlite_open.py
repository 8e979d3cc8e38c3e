"""Opening the SQLite database: file mode, pragmas, passphrase check, migrations, the `meta` table.

Owns: everything `SqliteStore.open` does on the worker thread before the store is usable. Rules:
- The passphrase is checked BEFORE anything is written: a wrong passphrase (`WrongPassphrase`), a
  missing one for an encrypted database (`PassphraseRequired`), or a passphrase for a database created
  with a caller codec leave the database exactly as it was (no migration, no meta row).
- A new database records its codec in `meta` (see migrations/0002_crypto.sql) right after migrating;
  an encrypted one also records the salt, the KDF parameters and the verifier.
- Pragmas: WAL, synchronous=FULL, secure_delete=ON (freed pages are zeroed, so old ciphertexts and
  ids do not linger), temp_store=MEMORY (no temporary files beside the database).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from nimbus.store.base import SchemaTooNew, StoreCorrupt, StoreError
from nimbus.store.codec import PlainCodec, ValueCodec
from nimbus.store.encryption import CODEC_NAME, AeadCodec, KdfParams, PassphraseRequired
from nimbus.store.migrate import Migration, migrate, schema_version

FILE_MODE = 0o600
CALLER_CODEC = "caller"
"""`meta.codec` of a database whose values go through a codec the caller passed (e.g. PlainCodec)."""

_DATA_TABLES = ("session", "rooms", "timeline", "current_state", "account_data", "outbox", "invite_state")


def _read_meta(conn: sqlite3.Connection) -> dict[str, bytes]:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if exists is None:
        return {}
    rows = conn.execute("SELECT name, value FROM meta").fetchall()
    return {str(name): bytes(value) for name, value in rows}


def _holds_data(conn: sqlite3.Connection) -> bool:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return any(
        conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None  # noqa: S608 (fixed names)
        for t in _DATA_TABLES
        if t in tables
    )


def _choose_codec(
    conn: sqlite3.Connection,
    meta: dict[str, bytes],
    codec: ValueCodec | None,
    passphrase: str | None,
    kdf: KdfParams | None,
) -> tuple[ValueCodec, bool]:
    """(codec, whether the store owns it and must close it). Reads only."""
    mode = meta.get("codec")
    if mode is None:  # a new database (or one from before schema 2)
        if passphrase is None:
            return (codec if codec is not None else PlainCodec()), False
        if _holds_data(conn):
            raise StoreError(
                "this database holds unencrypted data from an earlier nimbus; it cannot be opened "
                "with a passphrase (there is no migration): move it away and start a new store"
            )
        return AeadCodec.from_passphrase(passphrase, kdf=kdf), True
    if mode == CODEC_NAME.encode():
        if passphrase is None:
            raise PassphraseRequired("this store is encrypted: open it with its passphrase")
        try:
            params, salt, verifier = KdfParams.from_json(meta["kdf"]), meta["salt"], meta["verifier"]
        except KeyError as exc:
            raise StoreCorrupt("the store's encryption metadata is incomplete") from exc
        aead = AeadCodec.from_passphrase(passphrase, salt=salt, kdf=params)
        try:
            aead.check_verifier(verifier)
        except BaseException:
            aead.close()
            raise
        return aead, True
    if mode == CALLER_CODEC.encode():
        if passphrase is not None:
            raise StoreError("this store was created without a passphrase; it cannot be opened with one")
        return (codec if codec is not None else PlainCodec()), False
    raise StoreCorrupt("the store's metadata names an unknown codec")


def _write_meta(conn: sqlite3.Connection, codec: ValueCodec) -> None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return  # only when a test migrates to a schema older than 2
    rows: list[tuple[str, bytes]]
    if isinstance(codec, AeadCodec):
        rows = [
            ("codec", CODEC_NAME.encode()),
            ("kdf", codec.kdf.to_json()),
            ("salt", codec.salt),
            ("verifier", codec.make_verifier()),
        ]
    else:
        rows = [("codec", CALLER_CODEC.encode())]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_read_only(
    path: Path, codec: ValueCodec | None, passphrase: str | None, kdf: KdfParams | None
) -> tuple[ValueCodec, bool] | None:
    """Check the passphrase of an existing database over a read-only connection, before a read-write
    one could checkpoint a WAL left by a killed process: a wrong passphrase then changes no byte of
    the database or its WAL (SQLite may rebuild the -shm index, which holds no data). None when
    there is nothing to check this way (a new database, or no WAL left behind)."""
    if not path.exists() or path.stat().st_size == 0 or not Path(f"{path}-wal").exists():
        return None  # no WAL left behind: the read-write open changes nothing before its own check
    try:
        ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        meta = _read_meta(ro)
        if not meta:
            return None
        return _choose_codec(ro, meta, codec, passphrase, kdf)
    except sqlite3.Error:
        return None
    finally:
        ro.close()


def open_database(
    path: Path,
    migrations: list[Migration],
    codec: ValueCodec | None,
    passphrase: str | None,
    kdf: KdfParams | None,
) -> tuple[sqlite3.Connection, ValueCodec, bool]:
    """Open, check the passphrase, migrate. Returns (connection, codec, store owns the codec)."""
    checked = _check_read_only(path, codec, passphrase, kdf)  # raises WrongPassphrase & co.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists() and (p.stat().st_mode & 0o777) != FILE_MODE:
            os.chmod(p, FILE_MODE)
    conn = sqlite3.connect(path, isolation_level=None)
    chosen, owned = checked if checked is not None else (None, False)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"could not put the database in WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        current = schema_version(conn)
        if current > len(migrations):
            raise SchemaTooNew(
                f"the database has schema version {current}, newer than this nimbus supports "
                f"({len(migrations)}); upgrade nimbus to open it"
            )
        meta = _read_meta(conn)
        if chosen is None:
            chosen, owned = _choose_codec(conn, meta, codec, passphrase, kdf)
        migrate(conn, migrations)
        if not meta:
            _write_meta(conn, chosen)
    except BaseException as exc:
        if owned and isinstance(chosen, AeadCodec):
            chosen.close()
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"could not open the database: {exc}") from exc
        raise
    return conn, chosen, owned
