"""The encryption-at-rest seam: every secret or message-content value passes through a `ValueCodec`.

Owns: the `ValueCodec` Protocol and `PlainCodec`. Rules:
- The store encodes, before writing, every column that holds a secret or message content: the access
  token, event JSON (timeline, current state, invite state), outbox content, account data, crypto
  object values and names, decrypted plaintexts. Ids, membership, timestamps and sync tokens stay
  plain so they can be indexed.
- `PlainCodec` is NOT encryption: it returns its input unchanged. It exists so the store's shape is
  final; real stores use `AeadCodec` (nimbus.store.encryption, key derived from a passphrase).
  PlainCodec is for tests that ask for it explicitly.
- A codec may also be an `IndexingCodec` (keyed lookup keys, e.g. `AeadCodec`): the store then HMACs
  the group/item of crypto objects instead of storing them plain.
- A codec must raise on data it cannot decode (e.g. a wrong key); the store turns that into
  `StoreCorrupt` without echoing the data.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ValueCodec(Protocol):
    """Turns plaintext bytes into stored bytes and back. An AEAD codec binds nothing else in."""

    def encode(self, plaintext: bytes) -> bytes: ...

    def decode(self, stored: bytes) -> bytes: ...


@runtime_checkable
class IndexingCodec(Protocol):
    """A codec that also derives keyed lookup keys (HMAC), so indexed columns hide what they index."""

    def encode(self, plaintext: bytes) -> bytes: ...

    def decode(self, stored: bytes) -> bytes: ...

    def index(self, data: bytes) -> bytes: ...


class PlainCodec:
    """The identity codec. Not encryption: values are stored as given."""

    def encode(self, plaintext: bytes) -> bytes:
        return plaintext

    def decode(self, stored: bytes) -> bytes:
        return stored
