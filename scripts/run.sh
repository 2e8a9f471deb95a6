#!/usr/bin/env bash
# Install edgeagent into .venv (once) and run the agent; extra arguments go to `edgeagent run`.
# With no arguments it serves the built-in model: imagezmq REQ/REP on tcp://*:5555, native PUSH on
# tcp://*:5557, results on tcp://127.0.0.1:5556, Prometheus metrics on http://127.0.0.1:9110/metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/edgeagent" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e .
fi
exec "$VENV/bin/edgeagent" run "$@"
