"""Root conftest: the real-Synapse fixtures (tests/fixtures_synapse.py) are loaded once for the whole
session, so `homeserver` and `lab2` start one time even when several folders use them."""

pytest_plugins = ["tests.fixtures_synapse"]
