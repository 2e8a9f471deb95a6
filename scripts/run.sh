#!/usr/bin/env bash
# Install edgeagent into .venv (once) and run the agent; extra arguments go to `edgeagent run`.
# With no arguments it serves the built-in model: imagezmq REQ/REP on tcp://*:5555, native PUSH on
# tcp://*:5557, results on tcp://127.0.0.1:5556, Prometheus metrics on http://127.0.0.1:9110/metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
. scripts/pip-quiet.sh
if [ ! -x "$VENV/bin/edgeagent" ]; then
  echo "edgeagent: first run: installing edgeagent and its dependencies into $VENV (about a minute)" >&2
  "$PYTHON" -m venv "$VENV"
  pip_quiet install --upgrade pip
  pip_quiet install -e .
fi
exec "$VENV/bin/edgeagent" run "$@"
