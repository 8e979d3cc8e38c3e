"""Python side of the interop harness: drives Element's crypto (interop/driver.mjs) as a peer.

Owns: starting the Node driver (`interop/node_modules/.bin/node interop/driver.mjs`) as an asyncio
subprocess, the JSON-lines request/response protocol with a timeout per call, collecting the events
the driver pushes, and always ending the process it started (by its own PID, never by name).
Rules: a command's arguments (which may hold a password) are never logged or put in an exception;
when the driver dies every pending call fails with `JsPeerDied` carrying the tail of its stderr;
waits are on conditions with deadlines, never fixed sleeps. Install the Node side with
`scripts/setup_node.sh`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INTEROP_DIR = REPO / "interop"
NODE = INTEROP_DIR / "node_modules" / ".bin" / "node"
DRIVER = INTEROP_DIR / "driver.mjs"
STDERR_TAIL_LINES = 200
LINE_LIMIT = 64 * 1024 * 1024  # attachments travel base64 inside one line

Json = dict[str, Any]


class JsPeerError(RuntimeError):
    """The driver answered a command with an error."""


class JsPeerDied(JsPeerError):
    """The driver process exited (or could not start); the message carries its stderr tail."""


class JsPeer:
    """One matrix-js-sdk client (Rust crypto, in-memory stores) in its own Node process."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, log_path: Path | None) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.events: list[Json] = []  # everything the driver pushed, in order
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.login_seconds: float | None = None
        self._log_path = log_path
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._pending: dict[int, asyncio.Future[Json]] = {}
        self._next_id = 0
        self._event_seen = asyncio.Event()
        self._dead: str | None = None
        self._ready: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._stdout_task = asyncio.create_task(self._read_stdout())
        self._stderr_task = asyncio.create_task(self._read_stderr())

    # ---- life cycle -------------------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        name: str = "jspeer",
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> JsPeer:
        """Start the driver and wait for its `ready` line."""
        if not NODE.exists():
            raise JsPeerDied(f"{NODE} is missing: run scripts/setup_node.sh (installs interop/node_modules)")
        proc = await asyncio.create_subprocess_exec(
            str(NODE),
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(INTEROP_DIR),
            env=env,
            limit=LINE_LIMIT,
        )
        peer = cls(proc, name, log_path)
        try:
            await asyncio.wait_for(asyncio.shield(peer._ready), timeout)
        except BaseException:
            await peer.close()
            raise
        return peer

    async def close(self, timeout: float = 5.0) -> None:
        """Ask the driver to stop; terminate, then kill, the process (by its PID) if it lingers."""
        if self.proc.returncode is None and self._dead is None:
            with contextlib.suppress(JsPeerError, TimeoutError, ConnectionError):
                await self.call("stop", timeout=timeout)
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        for signal_process in (self.proc.terminate, self.proc.kill):
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                signal_process()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
        for task in (self._stdout_task, self._stderr_task):
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout)

    async def __aenter__(self) -> JsPeer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # ---- protocol ---------------------------------------------------------------------------------
    async def call(self, cmd: str, timeout: float = 60.0, **args: Any) -> Json:
        """Send one command and return its `result`; JsPeerError on a driver error, TimeoutError."""
        if self._dead is not None:
            raise JsPeerDied(self._death_message())
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"id": rid, "cmd": cmd, **args}) + "\n").encode())
            await self.proc.stdin.drain()
            reply = await asyncio.wait_for(fut, timeout)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise JsPeerDied(self._death_message()) from e
        except TimeoutError:
            raise TimeoutError(f"{self.name}: `{cmd}` got no answer in {timeout:.0f} s") from None
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise JsPeerError(f"{self.name}: {reply.get('error')}")
        result: Json = reply.get("result") or {}
        return result

    async def wait_event(self, predicate: Callable[[Json], bool], timeout: float = 30.0) -> Json:
        """The first pushed event (already seen or arriving) for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if predicate(ev):
                    return ev
            seen = len(self.events)
            if self._dead is not None:
                raise JsPeerDied(self._death_message())
            self._event_seen.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no matching pushed event in {timeout:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event_seen.wait(), left)

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def _death_message(self) -> str:
        return (
            f"{self.name} (pid {self.pid}) is gone: {self._dead}; exit code {self.proc.returncode}\n"
            f"--- stderr tail ---\n{self.stderr_tail()}"
        )

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    self._stderr.append(f"(non-JSON on stdout) {line[:200]!r}")
                    continue
                if "event" in msg:
                    if msg["event"] == "ready" and not self._ready.done():
                        self._ready.set_result(msg)
                    self.events.append(msg)
                    self._event_seen.set()
                elif (fut := self._pending.get(msg.get("id"))) is not None and not fut.done():
                    fut.set_result(msg)
        finally:
            await self._on_exit()

    async def _on_exit(self) -> None:
        with contextlib.suppress(TimeoutError):  # let the stderr reader catch the last words
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 2.0)
        self._dead = "stdout closed"
        err = JsPeerDied(self._death_message())
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        if not self._ready.done():
            self._ready.set_exception(err)
        self._event_seen.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        log = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        try:
            while line := await self.proc.stderr.readline():
                text = line.decode(errors="replace").rstrip("\n")
                self._stderr.append(text)
                if log is not None:
                    log.write(text + "\n")
                    log.flush()
        finally:
            if log is not None:
                log.close()

    # ---- typed conveniences (each is one driver command; see interop/driver.mjs) --------------------
    async def login(self, base_url: str, user_id: str, password: str, device_id: str | None = None) -> Json:
        started = time.monotonic()
        args: Json = {"baseUrl": base_url, "userId": user_id, "password": password}
        if device_id is not None:
            args["deviceId"] = device_id
        result = await self.call("login", timeout=90.0, **args)
        self.login_seconds = time.monotonic() - started
        self.user_id, self.device_id = result["userId"], result["deviceId"]
        return result

    async def create_room(
        self, invite: list[str] | None = None, name: str | None = None, encrypted: bool = True, **extra: Any
    ) -> str:
        res = await self.call("create_room", name=name, invite=invite or [], encrypted=encrypted, **extra)
        return str(res["roomId"])

    async def join(self, room_id: str, wait_invite: bool = True, timeout: float = 30.0) -> None:
        if wait_invite:
            await self.call(
                "wait_for_invite", roomId=room_id, timeoutMs=int(timeout * 1000), timeout=timeout + 5
            )
        await self.call("join", roomId=room_id, timeoutMs=int(timeout * 1000), timeout=timeout + 5)

    async def leave(self, room_id: str) -> None:
        await self.call("leave", roomId=room_id)

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.call("invite", roomId=room_id, userId=user_id)

    async def wait_for_member(
        self, room_id: str, user_id: str, membership: str = "join", timeout: float = 30.0
    ) -> None:
        await self.call(
            "wait_for_member",
            roomId=room_id,
            userId=user_id,
            membership=membership,
            timeoutMs=int(timeout * 1000),
            timeout=timeout + 5,
        )

    async def send_text(self, room_id: str, body: str) -> str:
        return str((await self.call("send_text", roomId=room_id, body=body))["eventId"])

    async def wait_for_message(
        self, room_id: str, body: str | None = None, sender: str | None = None, timeout: float = 30.0
    ) -> Json:
        args: Json = {"roomId": room_id, "timeoutMs": int(timeout * 1000)}
        if body is not None:
            args["body"] = body
        if sender is not None:
            args["sender"] = sender
        return await self.call("wait_for_message", timeout=timeout + 5, **args)

    async def messages(self, room_id: str) -> list[Json]:
        events: list[Json] = (await self.call("messages", roomId=room_id))["events"]
        return events

    async def session_id_of(self, room_id: str, event_id: str, timeout: float = 30.0) -> str | None:
        res = await self.call(
            "session_id_of",
            roomId=room_id,
            eventId=event_id,
            timeoutMs=int(timeout * 1000),
            timeout=timeout + 5,
        )
        session_id = res["sessionId"]
        return None if session_id is None else str(session_id)

    async def send_attachment(
        self, room_id: str, data: bytes, name: str, mimetype: str = "application/octet-stream"
    ) -> str:
        res = await self.call(
            "send_attachment",
            roomId=room_id,
            name=name,
            mimetype=mimetype,
            dataBase64=base64.b64encode(data).decode(),
        )
        return str(res["eventId"])

    async def download_attachment(
        self, room_id: str, event_id: str, timeout: float = 30.0, raw: bool = False
    ) -> bytes:
        """The attachment's plaintext (hash checked), or with `raw` the stored ciphertext."""
        res = await self.call(
            "download_attachment",
            roomId=room_id,
            eventId=event_id,
            raw=raw,
            timeoutMs=int(timeout * 1000),
            timeout=timeout + 5,
        )
        return base64.b64decode(res["dataBase64"])

    async def device_keys(self, user_id: str) -> list[Json]:
        devices: list[Json] = (await self.call("device_keys", userId=user_id))["devices"]
        return devices

    async def wait_for_devices(
        self, user_id: str, count: int = 1, device_ids: list[str] | None = None, timeout: float = 30.0
    ) -> list[Json]:
        res = await self.call(
            "wait_for_devices",
            userId=user_id,
            count=count,
            deviceIds=device_ids or [],
            timeoutMs=int(timeout * 1000),
            timeout=timeout + 5,
        )
        devices: list[Json] = res["devices"]
        return devices

    async def send_to_device(
        self, event_type: str, devices: list[tuple[str, str]], content: Json, encrypted: bool = True
    ) -> int:
        """Send `content` to (user_id, device_id) pairs, Olm-encrypted by default; returns how many went."""
        res = await self.call(
            "send_to_device",
            eventType=event_type,
            devices=[{"userId": u, "deviceId": d} for u, d in devices],
            content=content,
            encrypted=encrypted,
        )
        return int(res["count"])

    # ---- cross-signing and key-sharing policy (see interop/driver.mjs for each command's result) ------
    async def bootstrap_cross_signing(self, password: str) -> Json:
        """Give this user cross-signing keys and sign this device: {masterKey, selfSigningKey,
        userSigningKey, uia ("none" | "password"), deviceSigned}."""
        return await self.call("bootstrap_cross_signing", timeout=60.0, password=password)

    async def reset_identity(self, password: str) -> Json:
        """Replace this user's cross-signing identity: {masterKey (new), previousMasterKey, ..., uia}."""
        return await self.call("reset_identity", timeout=60.0, password=password)

    async def cross_signing_status(self) -> Json:
        return await self.call("cross_signing_status")

    async def device_verification(self, user_id: str, device_id: str, download: bool = True) -> Json:
        """{known: False} or {known: True, signedByOwner, crossSigningVerified, localVerified, isVerified}."""
        return await self.call("device_verification", userId=user_id, deviceId=device_id, download=download)

    async def user_verification(
        self, user_id: str, until: Json | None = None, download: bool = True, timeout: float = 30.0
    ) -> Json:
        """{known, isCrossSigningVerified, wasCrossSigningVerified, needsUserApproval, isVerified,
        masterKey}; with `until` (e.g. {"needsUserApproval": True}) waits for those values first."""
        args: Json = {"userId": user_id, "download": download, "timeoutMs": int(timeout * 1000)}
        if until is not None:
            args["until"] = until
        return await self.call("user_verification", timeout=timeout + 5, **args)

    async def pin_identity(self, user_id: str) -> None:
        await self.call("pin_identity", userId=user_id)

    async def set_isolation(self, mode: str, error_on_verified_user_problems: bool = False) -> None:
        """mode "all" (AllDevicesIsolationMode) or "only_signed" (OnlySignedDevicesIsolationMode)."""
        await self.call(
            "set_isolation", mode=mode, errorOnVerifiedUserProblems=error_on_verified_user_problems
        )

    async def wait_for_undecryptable(
        self,
        room_id: str,
        event_id: str | None = None,
        sender: str | None = None,
        codes: list[str] | None = None,
        timeout: float = 30.0,
    ) -> Json:
        """The described event once it settled as a decryption failure (its `decryption_failure` is
        the DecryptionFailureCode string), with one of `codes` if given; JsPeerError if it decrypts."""
        args: Json = {"roomId": room_id, "timeoutMs": int(timeout * 1000)}
        if event_id is not None:
            args["eventId"] = event_id
        if sender is not None:
            args["sender"] = sender
        if codes is not None:
            args["codes"] = codes
        return await self.call("wait_for_undecryptable", timeout=timeout + 5, **args)
