#!/usr/bin/env bash
# Install edgeagent with its test extras into a virtual environment and run lint, types and tests.
# VENV picks the environment (default .venv); .ci/run points it at a fresh temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'
# A real pretrained model for the numerical tests: PP-OCRv4 det ships inside rapidocr-openvino.
# --no-deps: we only need its ONNX files, not its pinned old OpenVINO or OpenCV.
"$VENV/bin/python" -m pip install -q --no-deps rapidocr-openvino==1.4.4
"$VENV/bin/ruff" check edgeagent tests
"$VENV/bin/ruff" format --check edgeagent tests
"$VENV/bin/mypy" edgeagent
"$VENV/bin/python" -m pytest -q "$@"
