#!/usr/bin/env bash
# Lints charts/upgrade-guard and renders it with real Helm for every values
# file in charts/test-values/, into tests/fixtures/chart/ (see render.py).
# CI runs it and fails if the committed renders differ.
#
# Helm is Helm's own Go library, shipped in the PyPI wheel helm-python-sdk
# (pinned by hash in requirements.txt), installed into a venv of its own
# outside the work tree. Needs python3 with venv and network access to PyPI
# the first time (Debian: apt-get install -y python3-venv).
set -euo pipefail
cd "$(dirname "$0")"
venv="${UPGRADE_GUARD_HELM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/upgrade-guard/helm-venv}"
# The venv is rebuilt whenever requirements.txt changes.
if ! cmp -s requirements.txt "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --require-hashes --only-binary :all: -r requirements.txt
  cp requirements.txt "$venv/requirements.txt"
fi
exec "$venv/bin/python" render.py "$@"
