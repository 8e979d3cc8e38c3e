"""The store: the only code that reads or writes user data.

`Store` (a Protocol, in `base`) is the contract; `SqliteStore` keeps it on disk (SQLite, WAL, 0600,
numbered migrations), `MemoryStore` in memory. Both pass one contract suite.

Encryption at rest: every secret or message-content value passes through a `ValueCodec`. This is the
seam for encryption at rest; the default `PlainCodec` is NOT encryption (it stores values as given).
The next issue supplies an AEAD codec keyed from a passphrase.
"""

from nimbus.store.base import (
    OutboxEntry,
    SchemaTooNew,
    Session,
    Store,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    UnknownOutboxEntry,
)
from nimbus.store.codec import PlainCodec, ValueCodec
from nimbus.store.memory import MemoryStore
from nimbus.store.sqlite import SqliteStore

__all__ = [
    "MemoryStore",
    "OutboxEntry",
    "PlainCodec",
    "SchemaTooNew",
    "Session",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "UnknownOutboxEntry",
    "ValueCodec",
]
