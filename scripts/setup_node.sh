#!/usr/bin/env bash
# Install the interop test peer's Node dependencies (interop/: matrix-js-sdk 43 with the Rust crypto
# wasm, and Node 22 itself as the `node` npm package, so the machine's older Node/npm only installs).
# Idempotent: `npm ci` runs only when interop/node_modules is missing or package-lock.json changed
# (stamp file inside node_modules). On a fresh Debian without npm it apt-get installs nodejs + npm.
set -euo pipefail
cd "$(dirname "$0")/../interop"

if ! command -v npm >/dev/null; then
  echo "setup_node: installing Debian packages: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends nodejs npm
fi

stamp="node_modules/.nimbus-installed"
digest=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ] || [ ! -x node_modules/.bin/node ]; then
  echo "setup_node: npm ci in interop/ (pinned by package-lock.json)"
  # matrix-js-sdk declares node >= 22 while the installing npm may run on an older Node: the peer
  # itself runs on node_modules/.bin/node (Node 22), so the engine warning is expected.
  npm ci --no-audit --no-fund --loglevel=error
  version=$(node_modules/.bin/node --version)
  case "$version" in
    v22.*) ;;
    *) echo "setup_node: node_modules/.bin/node is $version, expected v22" >&2; exit 1 ;;
  esac
  echo "$digest" > "$stamp"
fi
