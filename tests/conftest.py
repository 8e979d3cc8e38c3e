"""Root conftest: the real-Synapse fixtures (tests/fixtures_synapse.py) are loaded once for the whole
session, so `homeserver` and `lab2` start one time even when several folders use them.

AI models: the suite never reads the machine's own installed models (~/.local/share/nimbus/models):
`NIMBUS_MODELS_DIR` points at an empty folder of this session unless a test sets its own, so a test
behaves the same on a fresh CI machine and on a developer's."""

from __future__ import annotations

import os
import tempfile

import pytest

pytest_plugins = ["tests.fixtures_synapse"]


def pytest_configure(config: pytest.Config) -> None:
    os.environ["NIMBUS_MODELS_DIR"] = tempfile.mkdtemp(prefix="nimbus-test-models-")
