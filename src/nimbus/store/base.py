"""The store interface: what the client may ask of user data on disk (or in memory).

Owns: the `Store` Protocol, the plain data it trades in (`Session`, `OutboxEntry`), and the store's
exceptions. Rules:
- Every method is async and never blocks the event loop.
- `save_sync_batch` is all-or-nothing: one transaction holds the whole batch and its `next_batch`.
- Every backend (`SqliteStore`, `MemoryStore`) passes the one contract suite in
  tests/unit/store/test_contract.py; a behaviour that is not tested there is not part of the contract.
- Secrets and message content pass through a `ValueCodec` (see `nimbus.store.codec`) before storage.
- A `Store` is also the crypto machine's `CryptoStore` (nimbus/crypto/store.py): a crypto change set
  passed to `save_sync_batch`/`outbox_add` is committed in the same transaction as the batch/entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nimbus.crypto.store import CryptoChanges, CryptoStore
from nimbus.types.errors import NimbusError
from nimbus.types.events import Event, StrippedState, SyncBatch
from nimbus.types.ids import DeviceId, EventId, RoomId, TxnId, UserId

JSONDict = dict[str, Any]

OUTBOX_STATES = ("pending", "sent", "failed")


class StoreError(NimbusError):
    """The store could not do what was asked; nothing half-done was kept."""


class StoreClosed(StoreError):
    """The store was used after `close()`."""


class SchemaTooNew(StoreError):
    """The database was written by a newer nimbus (its schema version is higher than ours)."""


class StoreCorrupt(StoreError):
    """A stored value could not be decoded (wrong codec key, or damaged data)."""


class UnknownOutboxEntry(StoreError):
    """No outbox entry has this transaction id."""


@dataclass(frozen=True)
class Session:
    """A logged-in device. `access_token` is a secret: it never appears in repr or logs."""

    homeserver: str
    user_id: UserId
    device_id: DeviceId
    access_token: str

    def __repr__(self) -> str:
        return (
            f"Session(homeserver={self.homeserver!r}, user_id={self.user_id!r}, "
            f"device_id={self.device_id!r}, access_token=<redacted>)"
        )


@dataclass(frozen=True)
class OutboxEntry:
    """A message we mean to send, kept until the homeserver has it.

    Spec: https://spec.matrix.org/v1.12/client-server-api/#transaction-identifiers — the `txn_id` is
    reused on every retry so the server deduplicates; the echo in /sync carries it back in
    `unsigned.transaction_id`. `state` is "pending", "sent" or "failed". `content` is the plaintext
    content (message content: it never appears in repr).
    """

    txn_id: TxnId
    room_id: RoomId
    event_type: str
    content: JSONDict
    state: str = "pending"
    event_id: EventId | None = None
    created_ts: int = 0
    attempts: int = 0
    last_error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in OUTBOX_STATES:
            raise ValueError(f"outbox state must be one of {OUTBOX_STATES}, not {self.state!r}")

    def __repr__(self) -> str:
        return (
            f"OutboxEntry(txn_id={self.txn_id!r}, room_id={self.room_id!r}, "
            f"event_type={self.event_type!r}, state={self.state!r}, event_id={self.event_id!r}, "
            f"attempts={self.attempts})"
        )


class AiStore(Protocol):
    """On-device AI state (nimbus.ai): opaque values by (kind, item), encrypted at rest like crypto objects.

    Implemented by both backends next to `Store` (not part of `Store`, so other fakes need not grow).
    `item` names and values go through the codec; `kind` stays plain (see migrations/0003_ai.sql).
    """

    async def ai_put(self, kind: str, item: str, value: bytes) -> None:
        """Insert or replace one value."""
        ...

    async def ai_put_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Insert or replace many values in one transaction (all or nothing)."""
        ...

    async def ai_get(self, kind: str, item: str) -> bytes | None: ...

    async def ai_list(self, kind: str) -> list[tuple[str, bytes]]:
        """Every (item, value) of `kind`, in no particular order."""
        ...

    async def ai_delete(self, kind: str, item: str) -> bool:
        """Forget one AI object; whether it existed (e.g. the index entry of a redacted message)."""
        ...

    async def ai_delete_all(self, kind: str | None = None) -> None:
        """Forget every AI object (of `kind`, if given)."""
        ...


class Store(CryptoStore, AiStore, Protocol):
    """The store contract. Implementations: `SqliteStore` (on disk) and `MemoryStore` (tests).

    Includes `CryptoStore` (`crypto_get`, `crypto_list`, `crypto_save`).
    """

    # -- session ---------------------------------------------------------------------------------
    async def load_session(self) -> Session | None: ...
    async def save_session(self, session: Session) -> None: ...
    async def clear_session(self) -> None: ...

    # -- sync ------------------------------------------------------------------------------------
    async def load_sync_token(self) -> str | None:
        """The `next_batch` of the last saved batch, to resume /sync from."""
        ...

    async def save_sync_batch(
        self,
        batch: SyncBatch,
        crypto: CryptoChanges | None = None,
        decrypted: Mapping[EventId, JSONDict] | None = None,
    ) -> list[OutboxEntry]:
        """Store one /sync response and its `next_batch` in one transaction.

        `crypto`: the crypto machine's changes from this batch (e.g. its to-device events), and
        `decrypted`: plaintexts of this batch's encrypted events (event id -> decrypted payload JSON,
        its room is the one the batch carries it in, else its `room_id`), both committed in the same
        transaction. Returns the outbox entries this batch confirmed (their echo arrived with our
        transaction id), already marked "sent". If anything fails, nothing of the batch, its crypto
        changes or its plaintexts is kept and the error raises.
        """
        ...

    # -- rooms -----------------------------------------------------------------------------------
    async def room_ids(self, membership: str | None = None) -> list[RoomId]: ...
    async def membership(self, room_id: RoomId) -> str | None: ...
    async def state_event(self, room_id: RoomId, type: str, state_key: str = "") -> Event | None: ...
    async def state_events(self, room_id: RoomId, type: str | None = None) -> list[Event]: ...
    async def timeline(
        self, room_id: RoomId, limit: int = 50, before_event: EventId | None = None
    ) -> list[Event]:
        """The newest `limit` stored events (before `before_event` if given), oldest first.

        An unknown `before_event` gives an empty list.
        """
        ...

    async def add_backfill(
        self, room_id: RoomId, events_newest_first: list[Event], end_token: str | None
    ) -> None:
        """Fill the newest gap with events from /messages (dir=b), newest first.

        Events already stored are skipped; meeting one means the gap is closed. `end_token` is the
        response's `end` (None: no older history), and becomes the new `backfill_token`.
        """
        ...

    async def backfill_token(self, room_id: RoomId) -> str | None:
        """The /messages `from` token for the newest gap in the room's timeline, or None."""
        ...

    async def invite_state(self, room_id: RoomId) -> list[StrippedState]: ...

    # -- account data ----------------------------------------------------------------------------
    async def account_data(self, type: str, room_id: RoomId | None = None) -> JSONDict | None: ...
    async def set_account_data(self, type: str, content: JSONDict, room_id: RoomId | None = None) -> None: ...

    # -- outbox ----------------------------------------------------------------------------------
    async def outbox_add(self, entry: OutboxEntry, crypto: CryptoChanges | None = None) -> None:
        """Durable when it returns. A duplicate `txn_id` raises StoreError.

        `crypto` (e.g. the Megolm ratchet advance that produced the entry's ciphertext content) is
        committed in the same transaction: both are durable, or neither.
        """
        ...

    async def outbox_seal(
        self, txn_id: TxnId, event_type: str, content: JSONDict, crypto: CryptoChanges | None = None
    ) -> None:
        """Replace a pending entry's plaintext by its ciphertext (`event_type` m.room.encrypted), in one
        transaction with the crypto changes (the ratchet advance) that produced it. From then on a
        retry resends exactly these bytes. UnknownOutboxEntry if it is not pending."""
        ...

    async def outbox_pending(self) -> list[OutboxEntry]:
        """Entries in state "pending", oldest first."""
        ...

    async def outbox_get(self, txn_id: TxnId) -> OutboxEntry | None: ...
    async def outbox_mark_attempt(self, txn_id: TxnId, error: str | None) -> None:
        """One more send attempt was made (`error`: why it failed, if it did, without content)."""
        ...

    async def outbox_mark_sent(self, txn_id: TxnId, event_id: EventId) -> None: ...
    async def outbox_mark_failed(self, txn_id: TxnId, error: str) -> None: ...

    # -- decrypted-event cache (encrypted at rest) --------------------------------------------------
    async def save_decrypted(
        self, room_id: RoomId, event_id: EventId, plaintext_event_json: JSONDict
    ) -> None: ...
    async def decrypted(self, room_id: RoomId, event_ids: list[EventId]) -> dict[EventId, JSONDict]:
        """The cached plaintexts of those of `event_ids` that have one."""
        ...

    # -- keys ------------------------------------------------------------------------------------
    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. "vodozemac-pickle") from the store's passphrase.

        Raises StoreError if the store was opened without one.
        """
        ...

    # -- lifecycle -------------------------------------------------------------------------------
    async def close(self) -> None: ...
