"""Room-key fan-out: time to send the FIRST message in an encrypted room with N devices, nimbus against
Element's crypto (matrix-js-sdk + matrix-sdk-crypto-wasm in Node) measured in the same run.

What it measures, per room size N (default 10, 100, 500, 1000 recipient devices): a fresh sender device
sends one m.text message into an encrypted room whose other members have N devices in all. A first
message costs /keys/query of the members, /keys/claim of one-time keys, an Olm session and an
Olm-encrypted m.room_key per device, the /sendToDevice requests, then the Megolm-encrypted event.

- `nimbus`: `Client.send_text` + `flush_outbox()` on a freshly logged-in nimbus device (its profile's
  SQLite store encrypted at rest) that has synced the room once; timed until the PUT /send is answered.
  The setup sync runs without the client's after-batch hook, so the members' /keys/query happens inside
  the timed send, as on a device that has not queried them yet.
- `js`: `client.sendMessage(...)` in interop/bench_fanout.mjs (Rust crypto, all-devices sharing), on a
  fresh device that has done its initial sync; a /keys/query naming the members is held until the timer
  starts (the SDK would otherwise run it in the background during setup). Timed until the promise resolves.
- Both share with all devices (the recipients are not cross-signed). Each side has its own room with the
  same recipients (nimbus's room and js's room), so neither sees the other's traffic. The two sides run
  back to back per size, the order alternating per size.

The recipients: `N / devices_per_user` users (nested: size 100 uses the first 10 users of size 1000),
each with `devices_per_user` devices logged in with raw HTTP, each device publishing signed device keys,
signed one-time keys and a fallback key made with a plain vodozemac.Account. The room is created by the
first recipient user (encrypted, public join rule); everyone joins with raw HTTP.

Reported per size: seconds for each side, `ratio` = nimbus / js (1.0 = as fast as Element's crypto,
above 1 = slower), the to-device message counts (both should be N) and a per-phase breakdown: for nimbus
the time in each HTTP endpoint, in the machine's `share_room_key` calls (planning + Olm encryption),
in handling the /keys/query and /keys/claim answers, in committing crypto changes, and the rest; for js
the time in each HTTP endpoint. `--profile` adds one extra, unmeasured nimbus send at the largest size
under cProfile (top entries to stderr). Progress goes to stderr; a table and, as the LAST line, one JSON
object go to stdout. Run: `.venv/bin/python bench/fanout.py [--sizes 10,100] [--dir D] [--profile]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import vodozemac

from nimbus.api.request import Request
from nimbus.client.client import Client
from nimbus.client.profile import Profile
from nimbus.crypto.canonical_json import sign_json
from nimbus.crypto.machine import SharingMode
from nimbus.homeserver import Homeserver, RegisteredUser

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "interop" / "node_modules" / ".bin" / "node"
HELPER = ROOT / "interop" / "bench_fanout.mjs"
CLIENT_API = "/_matrix/client/v3"
PASSPHRASE = "fanout bench store passphrase"  # throwaway profiles in the bench's own directory
SETUP_CONCURRENCY = 12  # requests in flight while building the recipients
OTKS_PER_DEVICE = 12  # each size claims one per device on each side (+1 for --profile); fallback too
SEND_TIMEOUT_S = 300.0
OLM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"
ELEMENT_REFERENCE_S = {100: 0.39, 500: 1.5, 1000: 2.8}  # from the issue, for scale only


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class BenchError(Exception):
    """The setup or a send did not happen as it should."""


# --- recipients ---------------------------------------------------------------------------------------


def device_upload(user_id: str, device_id: str) -> dict[str, Any]:
    """POST /keys/upload body for a new device: signed device keys, signed one-time keys and a signed
    fallback key (spec: https://spec.matrix.org/v1.12/client-server-api/#post_matrixclientv3keysupload)."""
    account = vodozemac.Account()

    def sign(obj: dict[str, Any]) -> dict[str, Any]:
        return sign_json(obj, lambda m: account.sign(m).to_base64(), user_id, f"ed25519:{device_id}")

    device_keys = sign(
        {
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": [OLM, MEGOLM],
            "keys": {
                f"curve25519:{device_id}": account.curve25519_key.to_base64(),
                f"ed25519:{device_id}": account.ed25519_key.to_base64(),
            },
        }
    )
    account.generate_one_time_keys(OTKS_PER_DEVICE)
    otks = {f"signed_curve25519:{k}": sign({"key": v.to_base64()}) for k, v in account.one_time_keys.items()}
    account.generate_fallback_key()  # type: ignore[attr-defined]  # in vodozemac 0.10, not its stubs
    fallback = {
        f"signed_curve25519:{k}": sign({"key": v.to_base64(), "fallback": True})
        for k, v in account.fallback_key.items()  # type: ignore[attr-defined]
    }
    account.mark_keys_as_published()
    return {"device_keys": device_keys, "one_time_keys": otks, "fallback_keys": fallback}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    response = await http.post(CLIENT_API + path, json=body, headers=auth(token) if token else None)
    if response.status_code != 200:
        errcode = response.json().get("errcode") if response.content else None
        raise BenchError(f"POST {path.split('?')[0]}: HTTP {response.status_code} {errcode}")
    return response.json()


async def add_device(http: httpx.AsyncClient, user: RegisteredUser, device_id: str) -> None:
    """Log a new device in (spec: POST /login, m.login.password with a chosen device_id) and publish its
    keys. The device's access token stays here and is dropped."""
    login = await post(
        http,
        "/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": user.password,
            "device_id": device_id,
            "initial_device_display_name": "fanout recipient",
        },
    )
    await post(http, "/keys/upload", device_upload(user.user_id, device_id), login["access_token"])


async def bounded(sem: asyncio.Semaphore, work: Awaitable[Any]) -> Any:
    async with sem:
        return await work


async def make_users(hs: Homeserver, count: int, prefix: str, sem: asyncio.Semaphore) -> list[RegisteredUser]:
    async def one(i: int) -> RegisteredUser:
        user: RegisteredUser = await asyncio.to_thread(
            hs.create_user, f"{prefix}-{i:04d}", secrets.token_urlsafe(12)
        )
        return user

    return list(await asyncio.gather(*(bounded(sem, one(i)) for i in range(count))))


async def make_recipients(
    hs: Homeserver, http: httpx.AsyncClient, users: int, per_user: int, tag: str
) -> list[RegisteredUser]:
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)
    t0 = time.perf_counter()
    people = await make_users(hs, users, f"fan-{tag}", asyncio.Semaphore(4))
    progress(f"  {users} users registered in {time.perf_counter() - t0:.1f}s; logging in their devices…")
    jobs = [
        bounded(sem, add_device(http, user, f"FAN{u:04d}D{d:02d}"))
        for u, user in enumerate(people)
        for d in range(per_user)
    ]
    done = 0
    for finished in asyncio.as_completed(jobs):
        await finished
        done += 1
        if done % 200 == 0:
            progress(f"  {done}/{len(jobs)} devices published")
    return people


async def create_room(http: httpx.AsyncClient, creator: RegisteredUser, name: str) -> str:
    """An encrypted room anyone on the server may join (spec: POST /createRoom with initial_state)."""
    body = {
        "name": name,
        "preset": "public_chat",
        "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}],
    }
    room_id: str = (await post(http, "/createRoom", body, creator.access_token))["room_id"]
    return room_id


async def join_all(http: httpx.AsyncClient, room_id: str, users: list[RegisteredUser]) -> None:
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)
    path = f"/rooms/{quote(room_id, safe='')}/join"
    await asyncio.gather(*(bounded(sem, post(http, path, {}, u.access_token)) for u in users))


# --- nimbus -------------------------------------------------------------------------------------------


@dataclass
class Phases:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    to_device: dict[str, int] = field(default_factory=dict)  # event type -> messages sent
    recording: bool = False

    def add(self, name: str, dt: float) -> None:
        if self.recording:
            self.seconds[name] += dt
            self.counts[name] += 1

    def report(self, total: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: {"n": self.counts[k], "seconds": round(v, 4)} for k, v in sorted(self.seconds.items())
        }
        rest = total - sum(self.seconds.values())
        if rest >= 0:
            out["rest"] = {"seconds": round(rest, 4)}
        else:  # requests that overlap (nimbus sends its /keys/claim chunks together) sum past the wall
            out["overlap"] = {"seconds": round(-rest, 4)}
        return out


def endpoint(path: str) -> str:
    for name, part in (
        ("keys_query", "/keys/query"),
        ("keys_claim", "/keys/claim"),
        ("keys_upload", "/keys/upload"),
        ("to_device", "/sendToDevice/"),
        ("members", "/members"),
        ("send", "/send/"),
        ("sync", "/sync"),
    ):
        if part in path:
            return name
    return "other"


def timed(phases: Phases, name: Callable[..., str], fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            phases.add(name(*args, **kwargs), time.perf_counter() - t0)

    return wrapper


def instrument(client: Client, phases: Phases) -> None:
    """Time nimbus's phases by wrapping instance attributes (nothing in src/ changes)."""
    transport, machine, store = client.transport, client.crypto.machine, client.store
    send = transport.send

    async def counting_send(request: Request) -> Any:
        if phases.recording and endpoint(request.path) == "to_device" and request.json:
            event_type = unquote(request.path.split("/sendToDevice/", 1)[1].split("/", 1)[0])
            count = sum(len(d) for d in request.json.get("messages", {}).values())
            phases.to_device[event_type] = phases.to_device.get(event_type, 0) + count
        return await send(request)

    transport.send = timed(phases, lambda r: "http_" + endpoint(r.path), counting_send)  # type: ignore[method-assign]

    def handled(request_id: str, *_: Any) -> str:
        kind = request_id.split("-", 1)[0]
        return f"handle_{kind}" if kind in ("keys_query", "keys_claim") else "handle_other"

    machine.mark_request_as_sent = timed(phases, handled, machine.mark_request_as_sent)  # type: ignore[method-assign]
    machine.share_room_key = timed(phases, lambda *a, **k: "machine_share_room_key", machine.share_room_key)  # type: ignore[method-assign]
    store.crypto_save = timed(phases, lambda *a, **k: "store_crypto_save", store.crypto_save)  # type: ignore[method-assign]


@dataclass
class Sender:
    user: RegisteredUser
    room_id: str


def nimbus_sharing_mode(client: Client) -> str:
    return str(client.crypto.machine.sharing_mode)


async def share_with_all_devices(client: Client) -> None:
    """Legacy sharing (every device of every member), as matrix-js-sdk's all-devices mode: the
    recipients are not cross-signed (nimbus's default policy would withhold the key from them)."""
    await client.crypto.machine.set_sharing_mode(SharingMode.LEGACY)
    await client.crypto.commit()


async def nimbus_prepare(hs: Homeserver, sender: Sender, profile_dir: Path, sharing: str) -> Client:
    """A fresh nimbus device that has synced the room once without querying the members' keys."""
    client = await Client.login(
        Profile(profile_dir),
        hs.client_url,
        sender.user.user_id,
        sender.user.password,
        passphrase=PASSPHRASE,
        device_name="fanout bench (nimbus)",
    )
    try:
        # The client's after-batch hook would send the members' /keys/query right after this sync; off
        # for the setup sync so the timed send starts from "members tracked, keys not yet queried".
        if sharing == "all":
            await share_with_all_devices(client)
        client.sync.listeners.remove(client._on_batch)
        await client.sync_once(0)
        client.sync.listeners.append(client._on_batch)
        if not await client.is_encrypted(sender.room_id):  # type: ignore[arg-type]
            raise BenchError("nimbus does not see the room as encrypted")
    except BaseException:
        await client.close()
        raise
    return client


async def nimbus_send(client: Client, room_id: str, profile: Path | None) -> tuple[float, Phases, str | None]:
    """Time the first send (send_text + flush_outbox); with `profile`, under cProfile, its stats
    dumped to that file (read it with pstats, e.g. for callers) and the top entries returned."""
    phases = Phases()
    instrument(client, phases)
    profiler = cProfile.Profile() if profile else None
    phases.recording = True
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    entry = await client.send_text(room_id, "fanout bench")
    result = await client.flush_outbox(timeout=SEND_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
    phases.recording = False
    if not any(sent.txn_id == entry.txn_id for sent in result.sent):
        raise BenchError(f"nimbus: the message was not delivered ({result.last_error})")
    text = None
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(20)
        text = out.getvalue()
        if profile is not None:
            profiler.dump_stats(profile)
    return seconds, phases, text


# --- js (interop/bench_fanout.mjs) ---------------------------------------------------------------------


class JsSender:
    """One Node process: a fresh matrix-js-sdk device, ready to send on `go`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, hs: Homeserver, sender: Sender) -> JsSender:
        if not NODE.exists():
            raise BenchError(f"no Node at {NODE}: install the interop peer (interop/package.json)")
        proc = await asyncio.create_subprocess_exec(
            str(NODE),
            str(HELPER),
            cwd=ROOT / "interop",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the helper logs to our stderr (never secrets or bodies)
            limit=1 << 20,
            env={**os.environ, "JSPEER_LOG_LEVEL": os.environ.get("JSPEER_LOG_LEVEL", "warn")},
        )
        self = cls(proc)
        try:  # the password goes over stdin, never argv
            await self._write(
                {
                    "baseUrl": hs.client_url,
                    "userId": sender.user.user_id,
                    "password": sender.user.password,
                    "roomId": sender.room_id,
                }
            )
            ready = await self._read(SEND_TIMEOUT_S)
            if not ready.get("ready"):
                raise BenchError(f"js helper not ready: {ready.get('error')}")
        except BaseException:
            await self.close()
            raise
        return self

    async def _write(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise BenchError("the js helper exited early (see its log above)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def send(self) -> dict[str, Any]:
        await self._write({"go": True})
        result = await self._read(SEND_TIMEOUT_S)
        if not result.get("ok"):
            raise BenchError(f"js send failed: {result.get('error')}")
        await asyncio.wait_for(self.proc.wait(), 30)
        return result

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()  # our own child, by its handle
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- one size ----------------------------------------------------------------------------------------


async def new_sender(hs: Homeserver, http: httpx.AsyncClient, room_id: str, localpart: str) -> Sender:
    user: RegisteredUser = await asyncio.to_thread(hs.create_user, localpart, secrets.token_urlsafe(12))
    await join_all(http, room_id, [user])
    return Sender(user, room_id)


async def measure_size(
    hs: Homeserver,
    http: httpx.AsyncClient,
    base: Path,
    recipients: list[RegisteredUser],
    size: int,
    tag: str,
    nimbus_first: bool,
    sharing: str,
) -> dict[str, Any]:
    progress(f"size {size}: rooms for {len(recipients)} users…")
    rooms = {}
    for side in ("nimbus", "js"):
        rooms[side] = await create_room(http, recipients[0], f"fanout {size} ({side})")
        await join_all(http, rooms[side], recipients[1:])
    n_sender = await new_sender(hs, http, rooms["nimbus"], f"fan-{tag}-nimbus-{size}")
    j_sender = await new_sender(hs, http, rooms["js"], f"fan-{tag}-js-{size}")
    progress(f"size {size}: preparing the senders (order: {'nimbus, js' if nimbus_first else 'js, nimbus'})…")
    js = await JsSender.start(hs, j_sender)
    try:
        client = await nimbus_prepare(hs, n_sender, base / "profiles" / f"nimbus-{size}", sharing)
        mode = nimbus_sharing_mode(client)
        try:
            js_result: dict[str, Any] = {}
            n_seconds, n_phases = 0.0, Phases()
            for side in ("nimbus", "js") if nimbus_first else ("js", "nimbus"):
                if side == "nimbus":
                    n_seconds, n_phases, _ = await nimbus_send(client, n_sender.room_id, None)
                    progress(f"size {size}: nimbus {n_seconds:.3f}s")
                else:
                    js_result = await js.send()
                    progress(f"size {size}: js {js_result['seconds']:.3f}s")
        finally:
            await client.close()
    finally:
        await js.close()
    return {
        "devices": size,
        "order": "nimbus,js" if nimbus_first else "js,nimbus",
        "nimbus_s": round(n_seconds, 4),
        "js_s": round(float(js_result["seconds"]), 4),
        "ratio": round(n_seconds / float(js_result["seconds"]), 3),
        "nimbus_sharing_mode": mode,
        "nimbus_to_device": n_phases.to_device,
        "js_to_device": js_result.get("to_device", {}),
        "nimbus_phases": n_phases.report(n_seconds),
        "js_phases": js_result.get("phases", {}),
    }


async def profile_size(
    hs: Homeserver,
    http: httpx.AsyncClient,
    base: Path,
    recipients: list[RegisteredUser],
    size: int,
    tag: str,
    sharing: str,
) -> float:
    """One extra nimbus send at `size` under cProfile (not part of the figures); top entries to stderr."""
    room_id = await create_room(http, recipients[0], f"fanout {size} (profile)")
    await join_all(http, room_id, recipients[1:])
    sender = await new_sender(hs, http, room_id, f"fan-{tag}-profile-{size}")
    client = await nimbus_prepare(hs, sender, base / "profiles" / f"nimbus-profile-{size}", sharing)
    try:
        seconds, phases, text = await nimbus_send(client, room_id, base / f"fanout-nimbus-{size}.prof")
    finally:
        await client.close()
    progress(f"--- cProfile of nimbus's first send at {size} devices ({seconds:.3f}s under the profiler) ---")
    progress(text or "")
    progress(json.dumps(phases.report(seconds)))
    progress(f"(stats saved in {base / f'fanout-nimbus-{size}.prof'}; kept with --dir)")
    return seconds


async def run(
    hs: Homeserver, base: Path, sizes: list[int], per_user: int, profile: bool, sharing: str
) -> dict[str, Any]:
    tag = secrets.token_hex(2)
    users_needed = max(sizes) // per_user
    async with httpx.AsyncClient(base_url=hs.client_url, timeout=120) as http:
        progress(f"building {users_needed * per_user} recipient devices ({users_needed} users x {per_user})…")
        t0 = time.perf_counter()
        recipients = await make_recipients(hs, http, users_needed, per_user, tag)
        setup_s = time.perf_counter() - t0
        progress(f"recipients ready in {setup_s:.1f}s")
        results = {}
        for i, size in enumerate(sizes):
            results[str(size)] = await measure_size(
                hs, http, base, recipients[: size // per_user], size, tag, i % 2 == 0, sharing
            )
            keys = results[str(size)]["nimbus_to_device"].get("m.room.encrypted", 0)
            if keys != size:
                progress(f"WARNING size {size}: nimbus sent {keys} Olm messages for {size} devices")
        profiled = None
        if profile:
            largest = max(sizes)
            profiled = await profile_size(
                hs, http, base, recipients[: largest // per_user], largest, tag, sharing
            )
    return {"results": results, "setup_s": round(setup_s, 2), "profiled_nimbus_s": profiled}


def table(results: dict[str, Any]) -> str:
    rows = [
        f"{'devices':>7} {'nimbus s':>9} {'js s':>9} {'nimbus/js':>9} {'Element s':>9}  nimbus phases (s)"
    ]
    for size, r in results.items():
        ref = ELEMENT_REFERENCE_S.get(int(size))
        phases = ", ".join(
            f"{k}={v['seconds']:.3f}" for k, v in r["nimbus_phases"].items() if v["seconds"] >= 0.005
        )
        rows.append(
            f"{size:>7} {r['nimbus_s']:>9.3f} {r['js_s']:>9.3f} {r['ratio']:>9.2f} "
            f"{(f'{ref:.2f}' if ref else '-'):>9}  {phases}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", default="10,100,500,1000", help="recipient devices per room (default 10,100,500,1000)"
    )
    parser.add_argument("--devices-per-user", type=int, default=10)
    parser.add_argument("--dir", help="working directory, kept afterwards (default: a temp dir, removed)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one extra nimbus send at the largest size"
    )
    parser.add_argument(
        "--sharing",
        choices=("all", "default"),
        default="all",
        help="nimbus's room-key sharing: 'all' devices (legacy, as js; default) or nimbus's default policy",
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes numbers separated by commas")
    per_user = args.devices_per_user
    if not sizes or per_user < 1 or any(s < per_user or s % per_user for s in sizes):
        parser.error("every size must be a positive multiple of --devices-per-user")

    base = Path(args.dir).absolute() if args.dir else Path(tempfile.mkdtemp(prefix="nimbus-fanout-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"starting Synapse in {base}…")
        t0 = time.perf_counter()
        hs = Homeserver.start(base / "hs")
        synapse_start_s = time.perf_counter() - t0
        try:
            figures = asyncio.run(run(hs, base, sizes, per_user, args.profile, args.sharing))
        finally:
            progress("stopping Synapse…")
            hs.stop()
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)

    print(table(figures["results"]))
    report = {
        "bench": "fanout",
        "sizes": sizes,
        "devices_per_user": per_user,
        "sharing": args.sharing,
        **figures,
        "element_reference_s": {str(k): v for k, v in ELEMENT_REFERENCE_S.items()},
        "synapse_start_s": round(synapse_start_s, 3),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
