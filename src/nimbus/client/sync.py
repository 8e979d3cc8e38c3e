"""The sync loop: GET /sync, parse, save the batch and its token in one transaction, tell listeners.

Spec: https://spec.matrix.org/v1.12/client-server-api/#syncing
Rules:
- The next /sync is sent only after the previous batch (with its next_batch) is saved, so a crash
  never skips events: the server re-sends from the last saved token.
- The loop never dies on bad input: malformed events are skipped and counted by the parser; a
  malformed response, a 5xx, a closed connection or a timeout is logged and retried with backoff
  (the token is not advanced). Only a dead session (M_UNKNOWN_TOKEN) ends it: nothing can fix that
  but a new login.
- A listener that raises is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from nimbus.api import sync as api_sync
from nimbus.api.errors import ApiError, UnknownToken
from nimbus.client.transport import Transport
from nimbus.crypto.store import CryptoChanges
from nimbus.store import OutboxEntry, Store
from nimbus.types.events import SyncBatch

log = logging.getLogger("nimbus.client.sync")

BatchListener = Callable[[SyncBatch, list[OutboxEntry]], Awaitable[None] | None]


class BatchPreparer(Protocol):
    """Runs between parsing and saving a batch (the E2EE loop): what it returns is saved with the
    batch in the same transaction; `committed` is told once that transaction is done."""

    async def prepare_batch(self, batch: SyncBatch) -> Any: ...

    def committed(self, changes: CryptoChanges) -> None: ...


class SyncLoop:
    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        timeout_ms: int = 30_000,
        filter: dict[str, Any] | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._transport = transport
        self.timeout_ms = timeout_ms
        self._filter = filter
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self.listeners: list[BatchListener] = []
        self.preparer: BatchPreparer | None = None
        self.errors = 0  # consecutive failed /sync calls, for status displays
        self.last_error: str | None = None

    async def sync_once(self, timeout_ms: int | None = None) -> SyncBatch:
        """One /sync round trip; the batch is saved before this returns. Errors propagate."""
        since = await self._store.load_sync_token()
        request = api_sync.sync(
            since=since,
            timeout_ms=self.timeout_ms if timeout_ms is None else timeout_ms,
            filter=self._filter,
        )
        body = await self._transport.send(request)
        batch = api_sync.parse_sync(body)
        if batch.skipped or any(room.skipped for room in batch.rooms):
            log.warning(
                "sync: skipped %d malformed item(s) in this batch",
                batch.skipped + sum(room.skipped for room in batch.rooms),
            )
        if self.preparer is not None:
            extras = await self.preparer.prepare_batch(batch)
            confirmed = await self._store.save_sync_batch(
                batch, crypto=extras.crypto, decrypted=extras.decrypted
            )
            self.preparer.committed(extras.crypto)
        else:
            confirmed = await self._store.save_sync_batch(batch)
        for listener in list(self.listeners):
            try:
                outcome = listener(batch, confirmed)
                if outcome is not None:
                    await outcome
            except Exception:
                log.exception("sync: a listener failed; the loop goes on")
        return batch

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until `stop` is set. Raises only UnknownToken (the session is gone)."""
        delay = self._backoff_base
        while not stop.is_set():
            try:
                await self._sync_or_stop(stop)
            except UnknownToken:
                raise
            except ApiError as exc:
                self._failed(exc)
            except Exception as exc:  # a bug or the store: keep the loop alive, keep the token
                log.exception("sync: unexpected failure")
                self._failed(exc)
            else:
                self.errors = 0
                self.last_error = None
                delay = self._backoff_base
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, self._backoff_max)

    async def _sync_or_stop(self, stop: asyncio.Event) -> None:
        task = asyncio.ensure_future(self.sync_once())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()  # a cancelled long-poll loses nothing: the token was not advanced
            try:
                await task
            except asyncio.CancelledError:
                pass
            return
        task.result()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = type(exc).__name__
        log.warning("sync: failed (%s), retrying with backoff (attempt %d)", self.last_error, self.errors)
