"""Send-to-received latency: nimbus's client core against bare HTTP calls, measured in the same run.

What it measures: for one sender and one receiver in one room, the time from just before the send
call until the receiver sees the message, one message in flight at a time, as p50/p99/mean over N
messages, in two topologies (`single`: both users on one Synapse; `federation`: sender on server 0,
receiver on server 1 of a two-server local federation) and two modes:

- `nimbus`: Client.send_text + flush_outbox (durable outbox write, then PUT /send); the receiver runs
  nimbus's SyncLoop (long-poll /sync, parse, save the batch) and the message counts as received when a
  sync listener sees it, i.e. after the store saved the batch.
- `bare`: the same exchange with raw httpx calls: PUT /rooms/{roomId}/send/m.room.message/{txnId}
  (https://spec.matrix.org/v1.12/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid)
  and a receiver long-polling GET /sync?since=…&timeout=… with a filter limited to the room
  (https://spec.matrix.org/v1.12/client-server-api/#get_matrixclientv3sync), parsed with json.loads only.

Rules: the modes alternate in blocks (ABBA order) so both share the machine's noise; each block starts
its receiver, sends one unmeasured primer (so the receiver is caught up and its connection warm),
then the measured messages, then a sentinel that makes the receiver leave its loop without cancelling
a request. Both receivers are asyncio tasks in this process, like the senders. The servers are
always stopped (finally). Progress goes to stderr; the table and, as the LAST line, one JSON object
with every figure go to stdout. Run: `.venv/bin/python bench/latency.py [--messages N]`.

Hook for end-to-end encryption: a mode is anything with the `Mode` shape below; the E2EE issue adds
an encrypted nimbus mode (and an `--encrypted` flag choosing it) in `make_modes`, with the room
created encrypted in `setup_pair`. Nothing here encrypts yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from nimbus.client.client import Client
from nimbus.client.profile import Profile
from nimbus.homeserver import Homeserver, Lab, RegisteredUser
from nimbus.store import OutboxEntry
from nimbus.types.events import SyncBatch
from nimbus.types.ids import RoomId

WARMUP = 5  # unmeasured messages per mode before the first block
BLOCK = 10  # measured messages per block; modes alternate block by block
SYNC_TIMEOUT_MS = 30_000  # the long-poll timeout of both receivers (nimbus's default)
RECEIVE_TIMEOUT_S = 60.0  # a message not seen by then fails the run
CLIENT_API = "/_matrix/client/v3"


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class BenchError(Exception):
    """The exchange did not happen as it should (a send refused, a message never received)."""


class Inbox:
    """Where receivers report what they saw; one per block (its `stop` ends the receiver's loop)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.stop_body: str | None = None
        self._waiting: dict[str, asyncio.Future[float]] = {}

    def expect(self, body: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[body] = future
        return future

    def seen(self, bodies: list[str], at: float) -> None:
        for body in bodies:
            future = self._waiting.pop(body, None)
            if future is not None and not future.done():
                future.set_result(at)
            if body == self.stop_body:
                self.stop.set()


class Mode(Protocol):
    name: str

    def start_receiver(self, inbox: Inbox) -> asyncio.Task[None]: ...
    async def send(self, body: str) -> None: ...
    async def close(self) -> None: ...


class NimbusMode:
    """nimbus's real path: durable outbox + PUT; SyncLoop.run (long-poll, parse, decrypt, store save,
    listeners). In an encrypted room (`nimbus-e2ee`) the sender encrypts (Megolm ratchet saved with the
    outbox entry) and the message counts as received when its plaintext is saved on the receiver."""

    def __init__(self, sender: Client, receiver: Client, room_id: str, *, encrypted: bool = False) -> None:
        self.sender, self.receiver, self.room_id = sender, receiver, room_id
        self.encrypted = encrypted
        self.name = "nimbus_e2ee" if encrypted else "nimbus"
        self._inbox: Inbox | None = None
        receiver.sync.listeners.append(self._on_batch)

    async def _on_batch(self, batch: SyncBatch, confirmed: list[OutboxEntry]) -> None:
        at = time.perf_counter()  # listeners run after the store saved the batch (and its plaintexts)
        if self._inbox is None:
            return
        events = [e for room in batch.rooms if room.room_id == self.room_id for e in room.timeline]
        if self.encrypted:
            ids = [e.event_id for e in events if e.type == "m.room.encrypted"]
            plain = await self.receiver.store.decrypted(RoomId(self.room_id), ids) if ids else {}
            bodies = [str(p.get("content", {}).get("body")) for p in plain.values() if p.get("ok")]
        else:
            bodies = [str(e.content.get("body")) for e in events if e.type == "m.room.message"]
        self._inbox.seen(bodies, at)

    def start_receiver(self, inbox: Inbox) -> asyncio.Task[None]:
        self._inbox = inbox
        return asyncio.create_task(self.receiver.sync.run(inbox.stop))

    async def send(self, body: str) -> None:
        entry = await self.sender.send_text(self.room_id, body)
        result = await self.sender.flush_outbox(timeout=30)
        if not any(sent.txn_id == entry.txn_id for sent in result.sent):
            raise BenchError(f"nimbus: the message was not delivered ({result.last_error})")

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()


class BareMode:
    """The baseline: one httpx.AsyncClient per user, raw PUT /send and GET /sync, json.loads only."""

    name = "bare"

    def __init__(
        self,
        sender: RegisteredUser,
        sender_url: str,
        receiver: RegisteredUser,
        receiver_url: str,
        room_id: str,
    ) -> None:
        self.room_id = room_id
        self._send_path = f"{CLIENT_API}/rooms/{quote(room_id, safe='')}/send/m.room.message/"
        self._sender = httpx.AsyncClient(
            base_url=sender_url, headers={"Authorization": f"Bearer {sender.access_token}"}, timeout=30
        )
        self._receiver = httpx.AsyncClient(
            base_url=receiver_url,
            headers={"Authorization": f"Bearer {receiver.access_token}"},
            timeout=httpx.Timeout(30, read=SYNC_TIMEOUT_MS / 1000 + 10),
        )
        # Spec: "Filtering" (https://spec.matrix.org/v1.12/client-server-api/#filtering), inline JSON.
        self._filter = json.dumps({"room": {"rooms": [room_id]}}, separators=(",", ":"))
        self._since: str | None = None

    async def _sync(self, timeout_ms: int) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms), "filter": self._filter}
        if self._since is not None:
            params["since"] = self._since
        response = await self._receiver.get(f"{CLIENT_API}/sync", params=params)
        response.raise_for_status()
        body: dict[str, Any] = json.loads(response.content)
        self._since = body["next_batch"]
        return body

    async def prepare(self) -> None:
        await self._sync(0)  # a since token for the long-polls

    async def _receive(self, inbox: Inbox) -> None:
        while not inbox.stop.is_set():
            body = await self._sync(SYNC_TIMEOUT_MS)
            at = time.perf_counter()
            room = body.get("rooms", {}).get("join", {}).get(self.room_id, {})
            events = room.get("timeline", {}).get("events", [])
            inbox.seen(
                [str(e.get("content", {}).get("body")) for e in events if e.get("type") == "m.room.message"],
                at,
            )

    def start_receiver(self, inbox: Inbox) -> asyncio.Task[None]:
        return asyncio.create_task(self._receive(inbox))

    async def send(self, body: str) -> None:
        response = await self._sender.put(
            self._send_path + f"bare.{uuid.uuid4().hex}", json={"msgtype": "m.text", "body": body}
        )
        response.raise_for_status()
        if "event_id" not in json.loads(response.content):  # parse the answer, as nimbus does
            raise BenchError("bare: the send answer has no event_id")

    async def close(self) -> None:
        await self._sender.aclose()
        await self._receiver.aclose()


# --- the exchange -------------------------------------------------------------------------------


async def exchange(mode: Mode, inbox: Inbox, receiver: asyncio.Task[None], body: str) -> float:
    """One message, sent and awaited; returns its latency in seconds."""
    arrived = inbox.expect(body)
    t0 = time.perf_counter()
    await mode.send(body)
    waits: list[asyncio.Future[Any]] = [arrived, receiver]
    await asyncio.wait(waits, timeout=RECEIVE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    if not arrived.done():
        arrived.cancel()
        if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
            raise BenchError(f"{mode.name}: the receiver failed") from receiver.exception()
        raise BenchError(f"{mode.name}: a message was not received within {RECEIVE_TIMEOUT_S:.0f}s")
    return arrived.result() - t0


def message(mode: Mode, tag: str) -> str:
    return f"bench {mode.name} {tag} {uuid.uuid4().hex}"


async def run_block(mode: Mode, count: int, into: list[float] | None) -> None:
    """Start the receiver, send a primer, `count` messages (latencies appended to `into`), a sentinel."""
    inbox = Inbox()
    task = mode.start_receiver(inbox)
    try:
        await exchange(mode, inbox, task, message(mode, "primer"))
        for i in range(count):
            latency = await exchange(mode, inbox, task, message(mode, str(i)))
            if into is not None:
                into.append(latency)
        inbox.stop_body = message(mode, "stop")
        await exchange(mode, inbox, task, inbox.stop_body)
        await asyncio.wait_for(task, RECEIVE_TIMEOUT_S)  # it leaves its loop: no request is cancelled
    finally:
        if not task.done():
            inbox.stop.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def measure(modes: list[Mode], messages: int) -> dict[str, list[float]]:
    """Warm up each mode, then alternate blocks in ABBA order until each has `messages` latencies."""
    for mode in modes:
        await run_block(mode, WARMUP, None)
    results: dict[str, list[float]] = {mode.name: [] for mode in modes}
    round_no = 0
    while any(len(results[m.name]) < messages for m in modes):
        order = modes if round_no % 2 == 0 else list(reversed(modes))
        for mode in order:
            await run_block(mode, min(BLOCK, messages - len(results[mode.name])), results[mode.name])
        round_no += 1
    return results


# --- set-up ----------------------------------------------------------------------------------------


@dataclass
class Pair:
    room_id: str
    sender: Client
    receiver: Client
    sender_user: RegisteredUser
    receiver_user: RegisteredUser


BENCH_PASSPHRASE = "bench store passphrase"  # throwaway profiles in a temp dir


async def setup_pair(
    send_hs: Homeserver, recv_hs: Homeserver, profiles: Path, tag: str, *, encrypted: bool = False
) -> Pair:
    """Fresh users, logged-in nimbus clients, and a room both have joined and synced."""
    suffix = secrets.token_hex(3)
    pw_s, pw_r = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    s_user = await asyncio.to_thread(send_hs.create_user, f"bench-{tag}-sender-{suffix}", pw_s)
    r_user = await asyncio.to_thread(recv_hs.create_user, f"bench-{tag}-receiver-{suffix}", pw_r)
    sender = await Client.login(
        Profile(profiles / f"{tag}-sender-{suffix}"),
        send_hs.client_url,
        s_user.user_id,
        pw_s,
        passphrase=BENCH_PASSPHRASE,
        device_name="nimbus bench",
    )
    receiver = await Client.login(
        Profile(profiles / f"{tag}-receiver-{suffix}"),
        recv_hs.client_url,
        r_user.user_id,
        pw_r,
        passphrase=BENCH_PASSPHRASE,
        device_name="nimbus bench",
    )
    try:
        room_id = await sender.create_room(
            name=f"latency bench ({tag})", invite=[r_user.user_id], encrypted=encrypted
        )
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while room_id not in await receiver.room_ids("invite"):
            if time.monotonic() > deadline:
                raise BenchError("the receiver never saw the invite")
            await receiver.sync_once(1000)
        await receiver.join(room_id)
        # Both stores know the room (as a running client's would): the sender's send path checks
        # encryption state in its store instead of asking the server.
        await sender.sync_once(0)
        await receiver.sync_once(0)
    except BaseException:
        await sender.close()
        await receiver.close()
        raise
    return Pair(room_id, sender, receiver, s_user, r_user)


async def make_modes(pair: Pair, e2ee: Pair, send_hs: Homeserver, recv_hs: Homeserver) -> list[Mode]:
    """The modes compared in a topology: nimbus in a plaintext room, nimbus in an encrypted room
    (its own pair of users), and the bare-HTTP plaintext baseline."""
    bare = BareMode(
        pair.sender_user, send_hs.client_url, pair.receiver_user, recv_hs.client_url, pair.room_id
    )
    await bare.prepare()
    return [
        NimbusMode(pair.sender, pair.receiver, pair.room_id),
        NimbusMode(e2ee.sender, e2ee.receiver, e2ee.room_id, encrypted=True),
        bare,
    ]


async def run_topology(
    send_hs: Homeserver, recv_hs: Homeserver, base: Path, tag: str, messages: int
) -> dict[str, list[float]]:
    progress(f"{tag}: setting up users and a room…")
    pair = await setup_pair(send_hs, recv_hs, base / "profiles", tag)
    e2ee = await setup_pair(send_hs, recv_hs, base / "profiles", tag + "-e2ee", encrypted=True)
    modes: list[Mode] = []
    try:
        modes = await make_modes(pair, e2ee, send_hs, recv_hs)
        progress(f"{tag}: measuring {messages} messages per mode ({', '.join(m.name for m in modes)})…")
        return await measure(modes, messages)
    finally:
        if not modes:
            for p in (pair, e2ee):
                await p.sender.close()
                await p.receiver.close()
        for mode in modes:
            await mode.close()


# --- figures -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 200 values is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(results: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in results.items():
        out[name] = {
            "p50_ms": round(statistics.median(values) * 1000, 3),
            "p99_ms": round(percentile(values, 99) * 1000, 3),
            "mean_ms": round(statistics.fmean(values) * 1000, 3),
            "n": len(values),
        }
    out["ratio_p50"] = round(out["nimbus"]["p50_ms"] / out["bare"]["p50_ms"], 3)
    out["ratio_p99"] = round(out["nimbus"]["p99_ms"] / out["bare"]["p99_ms"], 3)
    if "nimbus_e2ee" in out:  # encrypted nimbus against bare-HTTP plaintext (the E2EE issue's figure)
        out["e2ee_ratio_p50"] = round(out["nimbus_e2ee"]["p50_ms"] / out["bare"]["p50_ms"], 3)
        out["e2ee_ratio_p99"] = round(out["nimbus_e2ee"]["p99_ms"] / out["bare"]["p99_ms"], 3)
    return out


def table(figures: dict[str, Any]) -> str:
    rows = [f"{'topology':<11} {'mode':<11} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'n':>5}"]
    for topology, fig in figures.items():
        for mode in ("nimbus", "nimbus_e2ee", "bare"):
            if mode not in fig:
                continue
            m = fig[mode]
            cells = f"{m['p50_ms']:>9.2f} {m['p99_ms']:>9.2f} {m['mean_ms']:>9.2f} {m['n']:>5}"
            rows.append(f"{topology:<11} {mode:<11} {cells}")
        rows.append(f"{topology:<11} nimbus/bare: p50 x{fig['ratio_p50']:.2f}, p99 x{fig['ratio_p99']:.2f}")
        if "e2ee_ratio_p50" in fig:
            rows.append(
                f"{topology:<11} nimbus_e2ee/bare: "
                f"p50 x{fig['e2ee_ratio_p50']:.2f}, p99 x{fig['e2ee_ratio_p99']:.2f}"
            )
    return "\n".join(rows)


# --- main ------------------------------------------------------------------------------------------


async def run_all(lab: Lab, base: Path, topologies: list[str], messages: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for topology in topologies:
        recv = lab.servers[0] if topology == "single" else lab.servers[1]
        figures[topology] = summarize(await run_topology(lab.servers[0], recv, base, topology, messages))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200, help="measured messages per mode (default 200)")
    parser.add_argument("--dir", help="working directory, kept afterwards (default: a temp dir, removed)")
    parser.add_argument("--topology", choices=("single", "federation", "both"), default="both")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    topologies = ["single", "federation"] if args.topology == "both" else [args.topology]
    servers = 1 if topologies == ["single"] else 2

    base = Path(args.dir).absolute() if args.dir else Path(tempfile.mkdtemp(prefix="nimbus-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"starting {servers} Synapse server(s) in {base}…")
        t0 = time.perf_counter()
        lab = Lab.start(base / f"lab{servers}", servers)
        synapse_start_s = time.perf_counter() - t0
        progress(f"servers up in {synapse_start_s:.2f}s")
        try:
            figures = asyncio.run(run_all(lab, base, topologies, args.messages))
        finally:
            progress("stopping the servers…")
            lab.stop()
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)

    print(table(figures))
    report = {
        "bench": "latency",
        "messages": args.messages,
        "warmup": WARMUP,
        "block": BLOCK,
        **figures,
        "servers": servers,
        "synapse_start_s": round(synapse_start_s, 3),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
