"""Fixtures for interop tests: Element's crypto peers (interop/driver.mjs) against real Synapse.

- `jspeer_factory` (function): `await jspeer_factory(name="js")` starts a `JsPeer` (one Node
  process, not yet logged in); every peer it started is closed at teardown (its own PID only), and
  its stderr is kept in `tmp_path/<name>-<n>.stderr`.
- `homeserver`, `lab2`, `new_user`, `synapse_env` come from tests/fixtures_synapse.py (root conftest).
Also registers the `interop` marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.interop.jspeer import JsPeer

JsPeerFactory = Callable[..., Awaitable[JsPeer]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: drives Element's crypto (matrix-js-sdk in Node 22, scripts/setup_node.sh)"
    )


@pytest.fixture
async def jspeer_factory(tmp_path: Path) -> AsyncIterator[JsPeerFactory]:
    peers: list[JsPeer] = []

    async def start(name: str = "js") -> JsPeer:
        peer = await JsPeer.start(f"{name}-{len(peers)}", log_path=tmp_path / f"{name}-{len(peers)}.stderr")
        peers.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in peers:
            await peer.close()
