#!/usr/bin/env bash
# Set up nimbus on a fresh Debian 12 machine (as root): system packages, the virtualenv at .venv,
# and nimbus with its pinned dependencies. Idempotent and quick when nothing changed.
#   scripts/setup.sh          what nimbus and its demo need
#   scripts/setup.sh --test   also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# --- system packages (Debian) -------------------------------------------------------------------
apt_pkgs=()
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_pkgs+=(python3-venv)
command -v gcc >/dev/null || apt_pkgs+=(gcc)
command -v openssl >/dev/null || apt_pkgs+=(openssl)
# On-device translation: Apertium's rule-based engine and the pairs nimbus offers by default
# (a user adds a pair by installing its Debian package, e.g. apertium-en-gl).
for pkg in apertium apertium-eng-spa apertium-eng-cat apertium-spa-cat; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_pkgs+=("$pkg")
done
if [ "$want_test" = 1 ]; then
  # PostgreSQL (the homeserver kit's --database postgres); iproute2/util-linux for the
  # loopback-only network namespace tests.
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_pkgs+=(postgresql)
  command -v ip >/dev/null || apt_pkgs+=(iproute2)
  command -v unshare >/dev/null || apt_pkgs+=(util-linux)
  # the optional LLM backend's tests: llama-cpp-python compiles llama.cpp (C++, CMake)
  command -v g++ >/dev/null || apt_pkgs+=(g++)
  command -v cmake >/dev/null || apt_pkgs+=(cmake)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}"
fi

# --- Python virtualenv -----------------------------------------------------------------------------
[ -x .venv/bin/python ] || python3 -m venv .venv
extras="homeserver,ai"
[ "$want_test" = 1 ] && extras="homeserver,ai,llm,dev"
stamp=".venv/.nimbus-installed-$extras"
digest=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: installing nimbus[$extras] into .venv (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # llama.cpp must be built portable: the native build crashes on these CPUs (AMX path). pip keeps
  # the built wheel in its cache, so the ~10-minute compile happens once per machine.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[$extras]"
  echo "$digest" > "$stamp"
fi
