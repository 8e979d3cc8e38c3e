"""Encryption at rest, end to end: what the `nimbus` CLI leaves on disk holds no plaintext and no secret.

Issue 3, "Everything secret is encrypted at rest". Two CLI profiles exchange canary strings (texts
both ways and an attachment whose content and file name are canaries) in an encrypted room, against
real Synapse, every command run with -v and its log (stderr) kept in a file inside the profile. Then
every file under both profile directories (store.db, -wal, -shm, lock, the logs) is read as raw bytes:
no canary, no password, no store passphrase, no access token, no vodozemac pickle key (derived the way
the client derives it), in raw, base64 or hex form. Repeated after a `nimbus tail` that was receiving
is SIGKILLed (its WAL is left as it was). A wrong passphrase is a clear error and changes no byte.
Rules: the canaries are checked to have really been received and decrypted (else the scan proves
nothing); waits poll a condition with a deadline; processes are killed by their PID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from nimbus.homeserver import Homeserver
from nimbus.store import SqliteStore
from tests.integration.cli import PASSPHRASE, NewUser, Result, command, env_with

pytestmark = pytest.mark.integration

LOG = "nimbus-cli.log"


def run(profile: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> Result:
    """`nimbus ARGS -v --json --profile PROFILE`, its stderr (the log) appended to PROFILE/nimbus-cli.log."""
    profile.mkdir(mode=0o700, exist_ok=True)
    with open(profile / LOG, "ab") as log:
        proc = subprocess.run(
            command(profile, *args, "-v", "--json"),
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env=env or env_with(),
        )
    stdout = proc.stdout.decode()
    return Result(proc.returncode, stdout, (profile / LOG).read_text(errors="replace")[-2000:])


def ok(result: Result) -> list[dict[str, Any]]:
    assert result.code == 0, result.stderr
    return result.objects


def variants(secret: bytes) -> dict[str, bytes]:
    """The forms a leaked secret could take in a file."""
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "base64": base64.b64encode(secret),
        "base64-unpadded": base64.b64encode(secret).rstrip(b"="),
        "urlsafe-base64": base64.urlsafe_b64encode(secret).rstrip(b"="),
    }
    return {k: v for k, v in forms.items() if len(v) >= 8}


def files_under(*dirs: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def assert_nothing_leaks(
    dirs: tuple[Path, ...], secrets_: dict[str, bytes], echoed: dict[Path, str] | None = None
) -> dict[Path, bytes]:
    """No secret in any form in any file. `echoed`: a file -> the one needle allowed in it because the
    user typed it on that command line and the CLI repeats it on stderr (our log file), e.g. the path
    given to `send-file` ("uploading NAME…"); the stores and every other file are still checked."""
    found = files_under(*dirs)
    assert any(p.name == "store.db" for p in found) and any(p.name == LOG for p in found)
    allowed = echoed or {}
    leaks = [
        f"{name} ({form}) in {path.relative_to(path.parent.parent)}"
        for path, data in found.items()
        for name, secret in secrets_.items()
        for form, needle in variants(secret).items()
        if needle in data and allowed.get(path) != name
    ]
    assert leaks == [], leaks
    return found


def stored_secrets(profile: Path) -> tuple[str, bytes]:
    """(access token, vodozemac pickle key) as the client derives it from the store's passphrase."""

    async def read() -> tuple[str, bytes]:
        store = await SqliteStore.open(profile / "store.db", passphrase=PASSPHRASE)
        try:
            session = await store.load_session()
            assert session is not None
            return session.access_token, store.derive_key("vodozemac-pickle")
        finally:
            await store.close()

    return asyncio.run(read())


def wait_until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_lines(stream: IO[bytes], into: list[str]) -> None:
    for line in stream:
        into.append(line.decode(errors="replace"))


def test_nothing_readable_at_rest_also_after_sigkill_and_wrong_passphrase(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    canary = {k: f"canary-{k}-{secrets.token_hex(8)}" for k in ("a2b", "b2a", "file", "name", "tail")}
    (alice_id, alice_pw), (bob_id, bob_pw) = new_user(homeserver, "alice"), new_user(homeserver, "bob")
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for profile, user, password in ((alice, alice_id, alice_pw), (bob, bob_id, bob_pw)):
        ok(
            run(
                profile,
                "login",
                homeserver.client_url,
                user,
                "--password-env",
                "NIMBUS_TEST_PASSWORD",
                env=env_with(NIMBUS_TEST_PASSWORD=password),
            )
        )
    room_id = ok(run(alice, "create-room", "--invite", bob_id))[0]["room_id"]
    ok(run(bob, "join", room_id))
    ok(run(alice, "send", room_id, canary["a2b"]))
    ok(run(bob, "send", room_id, canary["b2a"]))
    attachment = tmp_path / "outside" / f"{canary['name']}.txt"
    attachment.parent.mkdir()
    attachment.write_text(f"attachment with {canary['file']} inside\n" * 20)
    ok(run(bob, "send-file", room_id, str(attachment)))

    # Both sides really received and decrypted everything (the plaintexts are cached, encrypted).
    for profile, expected in ((alice, [canary["a2b"], canary["b2a"]]), (bob, [canary["a2b"], canary["b2a"]])):
        history = ok(run(profile, "history", room_id))
        assert [m["body"] for m in history if m["msgtype"] == "m.text"] == expected
        assert all(m["encrypted"] and m["decrypted"] for m in history if m["event_type"] == "m.room.message")
    file_msg = next(m for m in ok(run(alice, "history", room_id)) if m["msgtype"] == "m.file")
    assert file_msg["body"] == attachment.name
    out = tmp_path / "outside" / "downloaded.txt"
    ok(run(alice, "download", room_id, file_msg["event_id"], "--out", str(out)))
    assert out.read_bytes() == attachment.read_bytes()

    alice_token, alice_pickle = stored_secrets(alice)
    bob_token, bob_pickle = stored_secrets(bob)
    needles = {
        **{f"canary {k}": v.encode() for k, v in canary.items() if k != "tail"},
        "alice's password": alice_pw.encode(),
        "bob's password": bob_pw.encode(),
        "store passphrase": PASSPHRASE.encode(),
        "alice's access token": alice_token.encode(),
        "bob's access token": bob_token.encode(),
        "alice's pickle key": alice_pickle,
        "bob's pickle key": bob_pickle,
    }
    # `send-file` does not repeat the file's name in its progress line: no exception anywhere.
    echoed: dict[Path, str] = {}
    assert "canary name" in needles
    assert_nothing_leaks((alice, bob), needles, echoed)

    # A `tail` receiving in alice's profile is SIGKILLed right after it printed the new message.
    log = open(alice / LOG, "ab")  # kept open for the child's lifetime
    tail = subprocess.Popen(
        command(alice, "tail", room_id, "--json", "-v"),
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=env_with(),
    )
    lines: list[str] = []
    try:
        assert tail.stdout is not None
        threading.Thread(target=read_lines, args=(tail.stdout, lines), daemon=True).start()
        wait_until(
            lambda: f"following {room_id}" in (alice / LOG).read_text(errors="replace"), "tail to follow"
        )
        ok(run(bob, "send", room_id, canary["tail"]))
        wait_until(lambda: any(canary["tail"] in line for line in lines), "tail to print the canary")
        printed = json.loads(next(line for line in lines if canary["tail"] in line))
        assert printed["decrypted"] is True
        tail.send_signal(signal.SIGKILL)
        tail.wait(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
        log.close()
    assert (alice / "store.db-wal").stat().st_size > 0  # the killed writer's WAL is part of the scan
    needles["canary tail"] = canary["tail"].encode()
    assert_nothing_leaks((alice, bob), needles, echoed)

    # The store survived the kill (the received canary is there), then a wrong passphrase changes nothing.
    history = ok(run(alice, "history", room_id))
    assert canary["tail"] in [m["body"] for m in history]
    assert_nothing_leaks((alice, bob), needles, echoed)
    before = files_under(alice)
    wrong = subprocess.run(
        command(alice, "history", room_id, "--json"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**env_with(), "NIMBUS_PASSPHRASE": "not the passphrase"},
    )
    assert wrong.returncode == 1, wrong.stderr
    assert json.loads(wrong.stderr.strip().splitlines()[-1]) == {
        "error": "WrongPassphrase",
        "message": "wrong passphrase for this store",
    }
    assert wrong.stdout == ""
    assert files_under(alice) == before  # no byte of any file changed, no file added or removed
    assert os.stat(alice / "store.db").st_size > 0
