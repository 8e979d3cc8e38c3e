#!/usr/bin/env bash
# Set up nimbus, then run its main job: a two-server local federation where two people talk.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nimbus demo "$@"
