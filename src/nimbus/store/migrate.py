"""Schema migrations for the SQLite store: numbered .sql files applied in order, each in a transaction.

Owns: finding the migrations (src/nimbus/store/migrations/NNNN_name.sql) and bringing a database up
to the newest one. Rules:
- The schema version is `PRAGMA user_version`; migration N sets it to N in the same transaction as its
  statements, so a failure leaves the database at N-1, untouched.
- Migrations are never edited once released; a change is a new file with the next number.
- A database whose version is higher than the newest migration we ship was written by a newer nimbus:
  it is refused (`SchemaTooNew`), never opened or downgraded.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from nimbus.store.base import SchemaTooNew, StoreError

_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in the package, checked to be numbered 1, 2, 3… without holes."""
    found = []
    for entry in resources.files("nimbus.store").joinpath("migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    check_numbering(found)
    return found


def check_numbering(migrations: list[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise StoreError(f"migration {migration.name} is out of sequence (expected number {expected})")


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: list[Migration]) -> int:
    """Apply the missing migrations in order; return the resulting schema version.

    `conn` must be in autocommit mode (isolation_level=None): each migration opens its own transaction.
    """
    check_numbering(migrations)
    latest = len(migrations)
    current = schema_version(conn)
    if current > latest:
        raise SchemaTooNew(
            f"the database has schema version {current}, newer than this nimbus supports ({latest}); "
            "upgrade nimbus to open it"
        )
    for migration in migrations[current:]:
        script = f"BEGIN IMMEDIATE;\n{migration.sql}\n;PRAGMA user_version = {migration.version};\nCOMMIT;"
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"schema migration {migration.name} failed: {exc}") from exc
    return schema_version(conn)
