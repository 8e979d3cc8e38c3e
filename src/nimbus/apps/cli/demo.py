"""`nimbus demo`: the README's first command.

Starts a two-server local federation (real Synapse, TLS federation with a private CA, loopback only),
creates alice on the first server and bob on the second, puts them in a room, and has them exchange
messages both ways through nimbus's client core. Then it prints how to log in as either with the CLI
and keeps the servers running until Ctrl-C (or stops them at once with --exit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import time
from pathlib import Path

from nimbus.apps.cli.output import EXIT_OK, Printer
from nimbus.client.client import Client
from nimbus.client.profile import Profile
from nimbus.homeserver.lab import Lab
from nimbus.types.errors import NimbusError


async def _wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    """Poll an async predicate until it holds (never a fixed sleep without a condition)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise NimbusError(f"demo: timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _secret_file(path: Path) -> str:
    """A demo secret kept in a 0600 file (demo only: real users type theirs or use a keyring)."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _make_users(lab: Lab, base: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """alice on server 0, bob on server 1; passwords and store passphrases in 0600 files (demo only)."""
    users, passwords, passphrases = {}, {}, {}
    for name, srv in (("alice", lab.servers[0]), ("bob", lab.servers[1])):
        known = (base / f"{name}.password").exists()
        passwords[name] = _secret_file(base / f"{name}.password")
        passphrases[name] = _secret_file(base / f"{name}.passphrase")
        if not known:
            srv.create_user(name, passwords[name])
        users[name] = f"@{name}:{srv.server_name}"
    return users, passwords, passphrases


async def _exchange(lab: Lab, base: Path, out: Printer) -> dict[str, str]:
    a_srv, b_srv = lab.servers[0], lab.servers[1]
    users, passwords, passphrases = await asyncio.to_thread(_make_users, lab, base)
    out.progress(f"users: {users['alice']} and {users['bob']}")

    alice_profile, bob_profile = Profile(base / "profiles" / "alice"), Profile(base / "profiles" / "bob")
    alice = await _client(
        alice_profile, a_srv.client_url, users["alice"], passwords["alice"], passphrases["alice"]
    )
    bob = await _client(bob_profile, b_srv.client_url, users["bob"], passwords["bob"], passphrases["bob"])
    try:
        t0 = time.monotonic()
        room_id = await alice.create_room(name="nimbus demo", invite=[users["bob"]])
        out.progress(
            f"alice created the end-to-end encrypted room {room_id} and invited bob across the federation"
        )

        async def bob_invited() -> bool:
            await bob.sync_once(0)
            return room_id in await bob.room_ids("invite")

        await _wait_for("bob's invite", bob_invited)
        await bob.join(room_id)
        out.progress(f"bob joined ({time.monotonic() - t0:.2f}s after the room was created)")

        await _say(alice, bob, room_id, "Hello Bob, this crossed two homeservers.", out, "alice", "bob")
        await _say(bob, alice, room_id, "Hi Alice! Received loud and clear.", out, "bob", "alice")
        return {"room_id": room_id, **users}
    finally:
        await alice.close()
        await bob.close()


async def _client(profile: Profile, url: str, user: str, password: str, passphrase: str) -> Client:
    if profile.exists():
        return await Client.open(profile, passphrase=passphrase)
    return await Client.login(profile, url, user, password, passphrase=passphrase, device_name="nimbus demo")


async def _say(
    sender: Client, receiver: Client, room_id: str, text: str, out: Printer, s: str, r: str
) -> None:
    t0 = time.monotonic()
    entry = await sender.send_text(room_id, text)
    result = await sender.flush_outbox(timeout=30)
    if result.pending:
        raise NimbusError(f"demo: {s}'s message was not delivered ({result.last_error})")
    event_id = next(e.event_id for e in result.sent if e.txn_id == entry.txn_id)

    async def arrived() -> bool:
        await receiver.sync_once(0)
        room = await receiver.room(room_id, limit=20)
        return any(m.event_id == event_id and (m.e2ee or {}).get("decrypted") for m in room.timeline)

    await _wait_for(f"{r} to receive {s}'s message", arrived)
    out.result(
        {
            "type": "demo_message",
            "from": str(sender.user_id),
            "to": str(receiver.user_id),
            "event_id": event_id,
            "body": text,
            "seconds": round(time.monotonic() - t0, 3),
        },
        f"{s} → {r}: {text!r}  (received in {time.monotonic() - t0:.2f}s)",
    )


async def run(args: argparse.Namespace, out: Printer) -> int:
    base = Path(os.path.abspath(args.dir or ".nimbus-demo"))  # noqa: ASYNC240 (instant, no I/O)
    await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True, mode=0o700)
    out.progress(f"starting a two-server federation in {base}/lab (real Synapse on loopback)…")
    t0 = time.monotonic()
    lab = await asyncio.to_thread(Lab.start, base / "lab", 2)
    try:
        out.progress(
            f"servers up in {time.monotonic() - t0:.1f}s: "
            + ", ".join(f"{s.server_name} (client API {s.client_url})" for s in lab.servers)
        )
        info = await _exchange(lab, base, out)
        hint = (
            "\nTry it yourself with the CLI:\n"
            f"  .venv/bin/nimbus login {lab.servers[0].client_url} {info['alice']} "
            f"--password-file {base}/alice.password --passphrase-file {base}/alice.passphrase "
            "--profile /tmp/nimbus-alice\n"
            f"  export NIMBUS_PASSPHRASE=$(cat {base}/alice.passphrase)\n"
            f"  .venv/bin/nimbus send '{info['room_id']}' 'hello' --profile /tmp/nimbus-alice\n"
            f"  .venv/bin/nimbus tail '{info['room_id']}' --profile /tmp/nimbus-alice\n"
            f"(bob: {lab.servers[1].client_url} {info['bob']} --password-file {base}/bob.password)"
        )
        out.progress(hint)
        stop = asyncio.Event()
        if not args.exit:
            # Handlers first, then "done": a Ctrl-C right after "done" must find them in place.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        out.result(
            {"type": "demo_done", **info, "servers": [s.client_url for s in lab.servers]}, "demo: done"
        )
        if not args.exit:
            out.progress("\nThe servers keep running; press Ctrl-C to stop them.")
            await stop.wait()
    finally:
        out.progress("stopping the servers…")
        await asyncio.to_thread(lab.stop)
        out.progress("stopped.")
    return EXIT_OK
