"""Megolm cost: nimbus's room-event pipeline against vodozemac's raw GroupSession, in the same run.

What it measures, per message (one full room event: type, content, room_id):
- `pipeline` (the ratio against `raw` is the headline figure, target under 2x): nimbus's Megolm path
  without the disk: OlmMachine encrypt, change set handed over, OlmMachine decrypt of the parsed
  event with every check (binding, room, replay table), change set handed over.
- `nimbus`: the same plus one durable commit per message on each side, as the client makes them:
  `OlmMachine.encrypt_room_event` on the sender, `take_changes` + `crypto_save` (the ratchet advance,
  encrypted at rest, fsynced) + `changes_committed`; then, on the receiver, `decrypt_room_event` +
  `take_changes` + `crypto_save` + `changes_committed`. The store is a passphrase-encrypted
  SqliteStore by default (`--store`; weak Argon2id params only because key derivation is not
  measured). The client commits a receiver's changes once per sync batch, so this is its worst case.
- `raw`: vodozemac alone on the same JSON payload: `GroupSession.encrypt`, `to_base64`,
  `MegolmMessage.from_base64`, `InboundGroupSession.decrypt`, `json.loads`.
Spec: https://spec.matrix.org/v1.12/client-server-api/#mmegolmv1aes-sha2

Rules: one Megolm session per mode for the whole run (the room's rotation_period_msgs is set above N
so nimbus never rotates mid-run; raw never does); the modes alternate in blocks (ABBA order) so both
share the machine's noise; a few warm-up messages per mode first. The keys reach the receiver the way
they do in nimbus (keys upload/query/claim, Olm-encrypted m.room_key over to-device) through a tiny
in-process router. If the ratio is over the 2x target the script profiles the nimbus pipeline
(cProfile) and prints where the time goes to stderr, with the top entries in the JSON.
Progress goes to stderr; a table, then as the LAST line one JSON object, go to stdout.
Run: `.venv/bin/python bench/crypto.py [--messages N] [--block B] [--store memory|sqlite] [--profile]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import vodozemac

from nimbus.api.request import Request
from nimbus.crypto.machine import OlmMachine, RequestKind, SharingMode
from nimbus.store import KdfParams, MemoryStore, SqliteStore, Store
from nimbus.types.events import Event, parse_event

ROOM = "!bench:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"
WEAK_KDF = KdfParams(memory_kib=64, iterations=1, lanes=1)  # key derivation is not what is measured
WARMUP = 20
TARGET = 2.0
BODY = "The quarterly report is in the shared folder; numbers look fine, see section 3 for the details."


class Router:
    """The server side of keys upload/query/claim and sendToDevice, for two devices, in memory."""

    def __init__(self) -> None:
        self.device_keys: dict[str, dict[str, Any]] = {}
        self.otks: dict[tuple[str, str], dict[str, Any]] = {}
        self.inbox: dict[str, list[dict[str, Any]]] = {}

    def handle(self, req: Request, user: str, device: str) -> dict[str, Any]:
        body = json.loads(json.dumps(req.json or {}))
        if req.path.endswith("/keys/upload"):
            if "device_keys" in body:
                self.device_keys.setdefault(user, {})[device] = body["device_keys"]
            self.otks.setdefault((user, device), {}).update(body.get("one_time_keys", {}))
            return {"one_time_key_counts": {"signed_curve25519": len(self.otks[(user, device)])}}
        if req.path.endswith("/keys/query"):
            return {"device_keys": {u: self.device_keys.get(u, {}) for u in body["device_keys"]}}
        if req.path.endswith("/keys/claim"):
            out: dict[str, dict[str, Any]] = {}
            for u, devs in body["one_time_keys"].items():
                for d in devs:
                    pool = self.otks.get((u, d), {})
                    if pool:
                        key_id = sorted(pool)[0]
                        out.setdefault(u, {})[d] = {key_id: pool.pop(key_id)}
            return {"one_time_keys": out, "failures": {}}
        if "/sendToDevice/" in req.path:
            etype = unquote(req.path.split("/")[-2])
            for to_user, devs in body["messages"].items():
                for content in devs.values():
                    self.inbox.setdefault(to_user, []).append(
                        {"type": etype, "sender": user, "content": content}
                    )
            return {}
        raise ValueError(f"unexpected request {req.method} {req.path}")


class Side:
    """One device: an OlmMachine on a passphrase-encrypted MemoryStore, committing as the client does."""

    def __init__(self, store: Store, machine: OlmMachine) -> None:
        self.store = store
        self.machine = machine

    @classmethod
    async def create(cls, user: str, device: str, sqlite_dir: Path | None) -> Side:
        store: Store
        if sqlite_dir is None:
            store = MemoryStore(passphrase=f"bench {user}", kdf=WEAK_KDF)
        else:
            store = await SqliteStore.open(
                sqlite_dir / f"{device}.db", passphrase=f"bench {user}", kdf=WEAK_KDF
            )
        machine = await OlmMachine.load(store, user, device, store.derive_key("vodozemac-pickle"))
        # The bench measures the Megolm pipeline, not trust: its two devices have no cross-signing
        # identity, so they share in legacy mode (trust is still computed for every message).
        await machine.set_sharing_mode(SharingMode.LEGACY)
        side = cls(store, machine)
        await side.commit()
        return side

    async def commit(self) -> None:
        changes = self.machine.take_changes()
        await self.store.crypto_save(changes)
        self.machine.changes_committed(changes)

    async def send(self, router: Router, request_id: str, request: Request) -> None:
        await self.commit()
        response = router.handle(request, self.machine.user_id, self.machine.device_id)
        await self.machine.mark_request_as_sent(request_id, response)
        await self.commit()

    async def flush(self, router: Router) -> None:
        for _ in range(10):
            requests = await self.machine.outgoing_requests()
            if not requests:
                return
            for r in requests:
                await self.send(router, r.request_id, r.request)


async def setup(sqlite_dir: Path | None) -> tuple[Side, Side]:
    """Alice shares a room session with Bob over Olm, as in nimbus."""
    router = Router()
    alice = await Side.create(ALICE, "ALICEDEV", sqlite_dir)
    bob = await Side.create(BOB, "BOBDEV", sqlite_dir)
    await alice.flush(router)
    await bob.flush(router)
    encryption = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "rotation_period_msgs": 10**9,  # never rotates in the run (nor while profiling)
        "rotation_period_ms": 10**12,
    }
    for _ in range(10):
        requests = await alice.machine.share_room_key(
            ROOM, [ALICE, BOB], history_visibility="shared", now_ms=now_ms(), encryption=encryption
        )
        for r in requests:
            await alice.send(router, r.request_id, r.request)
        if not requests or all(r.kind == RequestKind.TO_DEVICE for r in requests):
            break
    await alice.flush(router)
    results = await bob.machine.receive_sync_changes(
        to_device=router.inbox.pop(BOB, []),
        changed=[],
        left=[],
        one_time_key_counts={},
        unused_fallback_key_types=None,
        now_ms=now_ms(),
    )
    if [r.status for r in results] != ["room_key"]:
        raise SystemExit(f"bench setup: the room key did not arrive ({[r.status for r in results]})")
    await bob.commit()
    await bob.flush(router)
    return alice, bob


def now_ms() -> int:
    return int(time.time() * 1000)


def room_content(i: int) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": f"{BODY} #{i}"}


class Nimbus:
    """The nimbus pipeline; `phases` accumulates ns per phase."""

    def __init__(self, alice: Side, bob: Side) -> None:
        self.alice, self.bob = alice, bob
        self.n = 0
        self.phases = {"encrypt": 0, "commit_sender": 0, "decrypt": 0, "commit_receiver": 0}

    async def one(self) -> None:
        self.n += 1
        t0 = time.perf_counter_ns()
        content = await self.alice.machine.encrypt_room_event(
            ROOM, "m.room.message", room_content(self.n), now_ms=now_ms()
        )
        t1 = time.perf_counter_ns()
        await self.alice.commit()
        t2 = time.perf_counter_ns()
        event = wire_event(self.n, content)
        decrypted = await self.bob.machine.decrypt_room_event(event, now_ms=now_ms())
        t3 = time.perf_counter_ns()
        await self.bob.commit()
        t4 = time.perf_counter_ns()
        if decrypted.content["body"] != room_content(self.n)["body"]:
            raise SystemExit("nimbus pipeline decrypted the wrong plaintext")
        for phase, ns in zip(self.phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            self.phases[phase] += ns


class Pipeline:
    """The nimbus pipeline without the disk: encrypt_room_event, the change set taken and handed back
    as committed (the overlay the client keeps), decrypt_room_event of the parsed event (session
    lookup, binding, room and replay checks), its change set likewise. Its own pair of devices."""

    def __init__(self, alice: Side, bob: Side) -> None:
        self.alice, self.bob = alice, bob
        self.n = 0

    async def one(self) -> None:
        self.n += 1
        a, b = self.alice.machine, self.bob.machine
        content = await a.encrypt_room_event(ROOM, "m.room.message", room_content(self.n), now_ms=now_ms())
        a.changes_committed(a.take_changes())
        decrypted = await b.decrypt_room_event(wire_event(self.n, content), now_ms=now_ms())
        b.changes_committed(b.take_changes())
        if decrypted.content["body"] != room_content(self.n)["body"]:
            raise SystemExit("nimbus pipeline decrypted the wrong plaintext")


def wire_event(i: int, content: dict[str, Any]) -> Event:
    raw = {
        "event_id": f"$bench{i}",
        "type": "m.room.encrypted",
        "sender": ALICE,
        "origin_server_ts": 1_700_000_000_000 + i,
        "content": content,
        "room_id": ROOM,
    }
    return parse_event(raw, ROOM)


class Raw:
    """vodozemac alone, on the same JSON payload."""

    def __init__(self) -> None:
        self.outbound = vodozemac.GroupSession()
        self.inbound = vodozemac.InboundGroupSession(self.outbound.session_key)
        self.n = 0

    async def one(self) -> None:
        self.n += 1
        content = room_content(self.n)
        payload = {"type": "m.room.message", "content": content, "room_id": ROOM}
        wire = self.outbound.encrypt(json.dumps(payload).encode()).to_base64()
        decrypted = self.inbound.decrypt(vodozemac.MegolmMessage.from_base64(wire))
        if json.loads(decrypted.plaintext)["content"]["body"] != content["body"]:
            raise SystemExit("raw vodozemac decrypted the wrong plaintext")


async def timed(step: Callable[[], Awaitable[None]], count: int, into: list[float]) -> None:
    for _ in range(count):
        t0 = time.perf_counter_ns()
        await step()
        into.append((time.perf_counter_ns() - t0) / 1000)  # µs


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_us": round(statistics.fmean(ordered), 2),
        "p50_us": round(ordered[len(ordered) // 2], 2),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "total_ms": round(sum(ordered) / 1000, 2),
        "n": len(ordered),
    }


def profile_nimbus(alice: Side, bob: Side, count: int, top: int = 12) -> list[dict[str, Any]]:
    """cProfile `count` more messages through the nimbus pipeline; the top entries by own time."""
    pipeline = Nimbus(alice, bob)
    pipeline.n = 10**6  # new event ids, new plaintexts
    profiler = cProfile.Profile()

    async def run() -> None:
        for _ in range(count):
            await pipeline.one()

    profiler.enable()
    asyncio.run(run())
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
    stats.print_stats(top)
    print(text.getvalue(), file=sys.stderr)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    out = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:top]:
        out.append(
            {
                "function": f"{file.rsplit('/', 1)[-1]}:{line}({func})",
                "calls": ncalls,
                "own_share": round(tottime / total, 3) if total else 0.0,
                "cum_s": round(cumtime, 4),
            }
        )
    return out


async def measure(
    messages: int, block: int, sqlite_dir: Path | None
) -> tuple[dict[str, list[float]], Nimbus, Side, Side]:
    alice, bob = await setup(sqlite_dir)
    p_alice, p_bob = await setup(None)
    nimbus, pipeline, raw = Nimbus(alice, bob), Pipeline(p_alice, p_bob), Raw()
    samples: dict[str, list[float]] = {"pipeline": [], "nimbus": [], "raw": []}
    await timed(nimbus.one, WARMUP, [])
    await timed(pipeline.one, WARMUP, [])
    await timed(raw.one, WARMUP, [])
    nimbus.phases = dict.fromkeys(nimbus.phases, 0)
    order = [("pipeline", pipeline.one), ("nimbus", nimbus.one), ("raw", raw.one)]
    done, blocks = 0, 0
    while done < messages:
        count = min(block, messages - done)
        pair = order if blocks % 2 == 0 else order[::-1]  # ABBA
        for name, step in pair:
            await timed(step, count, samples[name])
        done += count
        blocks += 1
        if blocks % 10 == 0:
            print(f"  {done}/{messages} messages per mode", file=sys.stderr)
    return samples, nimbus, alice, bob


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--messages", type=int, default=2000, help="measured messages per mode (default 2000)"
    )
    parser.add_argument(
        "--block", type=int, default=100, help="messages per block; modes alternate (default 100)"
    )
    parser.add_argument("--profile", action="store_true", help="profile the nimbus pipeline even under 2x")
    parser.add_argument(
        "--store",
        choices=["memory", "sqlite"],
        default="sqlite",
        help="the store the durable `nimbus` mode commits to: SqliteStore in a temp dir (default, as "
        "the client) or MemoryStore (copies all its data per write: for tests, not for speed)",
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.block < 1:
        parser.error("--messages and --block must be positive")
    with tempfile.TemporaryDirectory(prefix="nimbus-bench-crypto-") as tmp:
        return run(args, Path(tmp) if args.store == "sqlite" else None)


def run(args: argparse.Namespace, sqlite_dir: Path | None) -> int:
    print(
        f"crypto bench: {args.messages} messages per mode, blocks of {args.block}, {args.store} store",
        file=sys.stderr,
    )
    samples, nimbus, alice, bob = asyncio.run(measure(args.messages, args.block, sqlite_dir))
    figures = {name: summary(s) for name, s in samples.items()}
    ratio_mean = figures["pipeline"]["mean_us"] / figures["raw"]["mean_us"]
    ratio_p50 = figures["pipeline"]["p50_us"] / figures["raw"]["p50_us"]
    durable_mean = figures["nimbus"]["mean_us"] / figures["raw"]["mean_us"]
    phases_us = {k: round(v / 1000 / args.messages, 2) for k, v in nimbus.phases.items()}

    print(f"{'mode':<8}{'mean µs':>10}{'p50 µs':>10}{'p99 µs':>10}{'total ms':>11}{'n':>7}")
    for name, f in figures.items():
        print(
            f"{name:<8}{f['mean_us']:>10.1f}{f['p50_us']:>10.1f}{f['p99_us']:>10.1f}{f['total_ms']:>11.1f}{f['n']:>7}"
        )
    print("nimbus per message by phase (µs): " + ", ".join(f"{k} {v}" for k, v in phases_us.items()))
    verdict = "within" if ratio_mean < TARGET else "OVER"
    print(
        f"ratio pipeline/raw: mean {ratio_mean:.2f}x, p50 {ratio_p50:.2f}x ({verdict} the {TARGET:g}x target)"
    )
    print(f"ratio nimbus (with {args.store} commits)/raw: mean {durable_mean:.2f}x")

    profile: list[dict[str, Any]] | None = None
    if ratio_mean >= TARGET or args.profile:
        print("profiling the nimbus pipeline (cProfile, top by own time):", file=sys.stderr)
        profile = profile_nimbus(alice, bob, min(args.messages, 500))
    result = {
        "bench": "crypto",
        "messages": args.messages,
        "block": args.block,
        "store": args.store,
        "warmup": WARMUP,
        "pipeline": figures["pipeline"],
        "nimbus": figures["nimbus"],
        "raw": figures["raw"],
        "ratio_durable_mean": round(durable_mean, 3),
        "nimbus_phases_us": phases_us,
        "ratio_mean": round(ratio_mean, 3),
        "ratio_p50": round(ratio_p50, 3),
        "target": TARGET,
        "profile_top": profile,
    }
    print(json.dumps(result))
    asyncio.run(close(alice, bob))
    return 0


async def close(*sides: Side) -> None:
    for side in sides:
        await side.store.close()


if __name__ == "__main__":
    sys.exit(main())
