"""The store: the only code that reads or writes user data.

`Store` (a Protocol, in `base`) is the contract; `SqliteStore` keeps it on disk (SQLite, WAL, 0600,
numbered migrations), `MemoryStore` in memory. Both pass one contract suite.

Encryption at rest: every secret or message-content value passes through a `ValueCodec`. A real store
is opened with a passphrase (`await SqliteStore.open(path, passphrase=...)`) and encrypts with
`AeadCodec` (Argon2id + HKDF + ChaCha20-Poly1305, see `nimbus.store.encryption`); `PlainCodec` is NOT
encryption and is for tests that ask for it explicitly.

Both backends also implement the crypto machine's `CryptoStore` (nimbus/crypto/store.py).
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
from nimbus.store.codec import IndexingCodec, PlainCodec, ValueCodec
from nimbus.store.encryption import AeadCodec, KdfParams, PassphraseRequired, WrongPassphrase
from nimbus.store.memory import MemoryStore
from nimbus.store.sqlite import SqliteStore

__all__ = [
    "AeadCodec",
    "IndexingCodec",
    "KdfParams",
    "MemoryStore",
    "OutboxEntry",
    "PassphraseRequired",
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
    "WrongPassphrase",
]
