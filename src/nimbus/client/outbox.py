"""The outbox: a message accepted by `send` is delivered exactly once, whatever happens meanwhile.

Rules:
- `accept` writes the event with a fresh transaction id to the store *before* any network I/O; when it
  returns, the message survives a SIGKILL.
- Delivery is `PUT /rooms/{roomId}/send/{eventType}/{txnId}`. The spec makes a repeated PUT with the
  same txnId (same access token) idempotent ("Transaction identifiers",
  https://spec.matrix.org/v1.12/client-server-api/#transaction-identifiers), so a retry after a crash
  or a lost answer never duplicates a message.
- Delivery is confirmed by the server's answer (the event id) or by our own event coming back in
  /sync with `unsigned.transaction_id` (the store marks those while saving the sync batch).
- In an encrypted room the entry is accepted as plaintext (encrypted at rest by the store) and sealed
  right before its first PUT: encrypted, and the ciphertext saved in the outbox in one transaction
  with the Megolm ratchet advance. From then on every retry resends those same bytes. So a message
  can be accepted while the server is away, and still no index is reused and nothing is re-encrypted.
- Entries go out oldest first; a transient failure (server down, timeout, 5xx, rate limit) stops the
  pass so later messages never overtake earlier ones, and the pass is retried with backoff. A
  permanent refusal (e.g. M_FORBIDDEN: not in the room) marks the entry failed: it stays visible, it
  is never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nimbus.api import room_events
from nimbus.api.errors import (
    LimitExceeded,
    MatrixError,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
)
from nimbus.client.transport import Transport
from nimbus.crypto.errors import CryptoError
from nimbus.crypto.store import CryptoChanges
from nimbus.store import OutboxEntry, Store
from nimbus.types.errors import NimbusError
from nimbus.types.ids import EventId, RoomId, TxnId

log = logging.getLogger("nimbus.client.outbox")

TRANSIENT = (ServerUnreachable, RequestTimeout, ServerError, LimitExceeded)


def new_txn_id() -> TxnId:
    """Unique per access token for the token's lifetime (spec: "Transaction identifiers")."""
    return TxnId(f"nimbus.{int(time.time() * 1000)}.{uuid.uuid4().hex}")


class NotReady(NimbusError):
    """The entry cannot be sent yet (e.g. its room's encryption state is not synced): try later."""


def describe(exc: BaseException) -> str:
    """A short cause for the store and the user: the error class and the server's errcode."""
    if isinstance(exc, MatrixError):
        return f"{type(exc).__name__} ({exc.errcode or exc.status})"
    return type(exc).__name__


@dataclass
class FlushResult:
    sent: list[OutboxEntry] = field(default_factory=list)
    failed: list[OutboxEntry] = field(default_factory=list)
    pending: list[OutboxEntry] = field(default_factory=list)
    last_error: str | None = None


class Outbox:
    """Accepts messages into the store and delivers them. Safe to share between tasks."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._transport = transport
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self.on_sent: list[Callable[[OutboxEntry], None]] = []
        self.sealer: Callable[[OutboxEntry], Awaitable[OutboxEntry]] | None = None
        """Runs on each entry right before its PUT: in an encrypted room it encrypts the plaintext and
        saves the ciphertext with the ratchet advance (store.outbox_seal) before anything is sent."""

    async def accept(
        self,
        room_id: RoomId,
        event_type: str,
        content: dict[str, Any],
        *,
        crypto: CryptoChanges | None = None,
    ) -> OutboxEntry:
        """Persist a new outgoing event; durable when this returns. Nothing is sent yet. `crypto`: the
        ratchet advance that produced an encrypted `content`, committed in the same transaction."""
        entry = OutboxEntry(
            txn_id=new_txn_id(),
            room_id=room_id,
            event_type=event_type,
            content=content,
            state="pending",
            created_ts=int(time.time() * 1000),
        )
        await self._store.outbox_add(entry, crypto=crypto)
        self._wake.set()
        return entry

    async def deliver_pending(self) -> FlushResult:
        """One pass over the pending entries, oldest first; stops at the first transient failure."""
        result = FlushResult()
        async with self._lock:
            for entry in await self._store.outbox_pending():
                current = await self._store.outbox_get(entry.txn_id)
                if current is None or current.state != "pending":
                    continue  # confirmed by /sync meanwhile
                try:
                    if self.sealer is not None:
                        current = await self.sealer(current)
                    body = await self._transport.send(
                        room_events.send_event(
                            current.room_id, current.event_type, current.content, current.txn_id
                        )
                    )
                    event_id: EventId = room_events.parse_event_id_response(body)
                except TRANSIENT as exc:
                    cause = describe(exc)
                    await self._store.outbox_mark_attempt(entry.txn_id, cause)
                    result.last_error = cause
                    log.info("outbox: %s not delivered yet: %s", entry.txn_id, cause)
                    break
                except NotReady as exc:
                    await self._store.outbox_mark_attempt(entry.txn_id, str(exc))
                    result.last_error = str(exc)
                    break
                except (MatrixError, CryptoError) as exc:
                    cause = describe(exc)
                    await self._store.outbox_mark_failed(entry.txn_id, cause)
                    log.warning("outbox: %s refused by the server: %s", entry.txn_id, cause)
                    failed = await self._store.outbox_get(entry.txn_id)
                    if failed is not None:
                        result.failed.append(failed)
                    continue
                await self._store.outbox_mark_sent(entry.txn_id, event_id)
                sent = await self._store.outbox_get(entry.txn_id)
                if sent is not None:
                    result.sent.append(sent)
                    for callback in self.on_sent:
                        callback(sent)
            result.pending = await self._store.outbox_pending()
        return result

    async def flush(self, deadline: float | None = None) -> FlushResult:
        """Deliver until nothing is pending or `deadline` (time.monotonic()) passes."""
        total = FlushResult()
        delay = self._backoff_base
        while True:
            result = await self.deliver_pending()
            total.sent += result.sent
            total.failed += result.failed
            total.pending = result.pending
            total.last_error = result.last_error
            if not result.pending:
                return total
            if result.last_error is None:
                delay = self._backoff_base  # progress was made; go again at once
                continue
            if deadline is not None and time.monotonic() + delay > deadline:
                return total
            await self._sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver whatever is accepted until `stop` is set, backing off while the server is away."""
        delay = self._backoff_base
        while not stop.is_set():
            self._wake.clear()
            try:
                result = await self.deliver_pending()
            except Exception:  # the store or a bug: log, back off, never die
                log.exception("outbox: delivery pass failed")
                result = FlushResult(last_error="internal error")
            if result.pending and result.last_error is not None:
                timeout = delay
                delay = min(delay * 2, self._backoff_max)
            elif result.pending:
                continue
            else:
                timeout = None
                delay = self._backoff_base
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    def wake(self) -> None:
        self._wake.set()
