#!/usr/bin/env bash
# Install edgeagent with its test extras into a virtual environment and run lint, types and tests.
# VENV picks the environment (default .venv); .ci/run points it at a fresh temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
. scripts/pip-quiet.sh
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "edgeagent: installing edgeagent with its test extras into $VENV" >&2
pip_quiet install --upgrade pip
pip_quiet install -e '.[test]'
# A real pretrained model for the numerical tests: PP-OCRv4 det ships inside rapidocr-openvino.
# --no-deps: we only need its ONNX files, not its pinned old OpenVINO or OpenCV.
pip_quiet install --no-deps rapidocr-openvino==1.4.4
# A real trained YOLOv8n-format detector inside a PyPI wheel (the model file only: no onnxruntime/OpenCV).
pip_quiet install --no-deps nudenet==3.4.2
"$VENV/bin/ruff" check edgeagent tests
"$VENV/bin/ruff" format --check edgeagent tests
"$VENV/bin/mypy" edgeagent
"$VENV/bin/python" -m pytest -q "$@"
