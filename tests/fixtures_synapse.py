"""Shared fixtures for integration tests: real Synapse servers started by the homeserver kit.

- `synapse_env` (session): extra environment for every Synapse process; override it in a nearer
  conftest to inject e.g. a PYTHONPATH with an audit hook.
- `homeserver` (session): one dev-profile server on SQLite.
- `lab2` (session): a federation of two dev-profile servers (`lab2.servers[0]`, `[1]`).
- `new_user` (function): `new_user(server, prefix="user") -> (user_id, password)` registers a fresh
  user with a random password on a `Homeserver` (e.g. `homeserver` or `lab2.servers[1]`).

Everything lives under a tmp dir from `tmp_path_factory`; servers are stopped at session end, also
when a test or the start-up failed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from nimbus.homeserver import Homeserver, Lab

NewUser = Callable[..., tuple[str, str]]


@pytest.fixture(scope="session")
def synapse_env() -> dict[str, str]:
    """Extra environment variables for the Synapse processes of the session fixtures."""
    return {}


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory, synapse_env: dict[str, str]) -> Iterator[Homeserver]:
    hs = Homeserver.configure(tmp_path_factory.mktemp("homeserver") / "hs", env=synapse_env)
    try:
        hs.launch()
        yield hs
    finally:
        hs.stop()


@pytest.fixture(scope="session")
def lab2(tmp_path_factory: pytest.TempPathFactory, synapse_env: dict[str, str]) -> Iterator[Lab]:
    lab = Lab.configure(tmp_path_factory.mktemp("lab2") / "lab", 2, env=synapse_env)
    try:
        lab.start_all()
        yield lab
    finally:
        lab.stop()


def register_new_user(server: Homeserver, prefix: str = "user") -> tuple[str, str]:
    """Register `<prefix>-<random>` with a random password; returns (user_id, password)."""
    password = secrets.token_urlsafe(16)
    user = server.create_user(f"{prefix.lower()}-{secrets.token_hex(4)}", password)
    return user.user_id, password


@pytest.fixture
def new_user() -> NewUser:
    return register_new_user
