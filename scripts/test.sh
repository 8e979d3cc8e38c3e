#!/usr/bin/env bash
# Install what the tests need, then run the whole suite: lint, types, layer contracts, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/setup_node.sh   # Node 22 + matrix-js-sdk (Element's crypto) for the interop tests
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";        ruff check src tests bench
echo "== mypy";        mypy
echo "== import-linter"; lint-imports
echo "== pytest";      pytest "$@"
