"""Run the `nimbus` CLI as a subprocess, as scripts and people do (helpers for integration tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimbus.homeserver import Homeserver


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def objects(self) -> list[dict[str, Any]]:
        """The --json output: one object per line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


PASSPHRASE = "test store passphrase"
"""The store passphrase of every test profile (tests only; nimbus itself has no default)."""


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["NIMBUS_PASSPHRASE"] = PASSPHRASE
    env.update(extra)
    return env


def command(profile: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "nimbus.apps.cli.main", *args, "--profile", str(profile)]


def nimbus(
    profile: Path,
    *args: str,
    input: str | None = None,
    timeout: float = 90,
    env: dict[str, str] | None = None,
) -> Result:
    proc = subprocess.run(
        command(profile, *args),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or env_with(),
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def login(profile: Path, url: str, user_id: str, password: str, *extra: str) -> Result:
    result = nimbus(
        profile,
        "login",
        url,
        user_id,
        "--password-env",
        "NIMBUS_TEST_PASSWORD",
        "--json",
        *extra,
        env=env_with(NIMBUS_TEST_PASSWORD=password),
    )
    assert result.code == 0, result.stderr
    return result


NewUser = Callable[..., tuple[str, str]]
"""The `new_user` fixture: `new_user(server, prefix) -> (user_id, password)`."""


def two_in_a_room(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> tuple[Path, str, Path, str, str]:
    """alice and bob logged in with the CLI, both in a new (encrypted) room alice created."""
    alice_id, alice_pw = new_user(homeserver, "alice")
    bob_id, bob_pw = new_user(homeserver, "bob")
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    login(alice, homeserver.client_url, alice_id, alice_pw)
    login(bob, homeserver.client_url, bob_id, bob_pw)
    room = nimbus(alice, "create-room", "--invite", bob_id, "--json").objects[0]["room_id"]
    assert nimbus(bob, "join", room).code == 0
    return alice, alice_id, bob, bob_id, room
