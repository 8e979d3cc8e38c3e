"""The encryption-at-rest seam: every secret or message-content value passes through a `ValueCodec`.

Owns: the `ValueCodec` Protocol and `PlainCodec`. Rules:
- The store encodes, before writing, every column that holds a secret or message content: the access
  token, event JSON (timeline, current state, invite state), outbox content and account data. Ids,
  membership, timestamps and sync tokens stay plain so they can be indexed.
- `PlainCodec` is NOT encryption: it returns its input unchanged. It exists so the store's shape is
  final now; the next issue supplies an AEAD codec (key derived from a passphrase) in its place.
- A codec must raise on data it cannot decode (e.g. a wrong key); the store turns that into
  `StoreCorrupt` without echoing the data.
"""

from __future__ import annotations

from typing import Protocol


class ValueCodec(Protocol):
    """Turns plaintext bytes into stored bytes and back. An AEAD codec binds nothing else in."""

    def encode(self, plaintext: bytes) -> bytes: ...

    def decode(self, stored: bytes) -> bytes: ...


class PlainCodec:
    """The identity codec. Not encryption: values are stored as given."""

    def encode(self, plaintext: bytes) -> bytes:
        return plaintext

    def decode(self, stored: bytes) -> bytes:
        return stored
