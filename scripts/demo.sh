#!/usr/bin/env bash
# The main job (README): make a virtual environment, install rnnfast as the README says, and run
# `rnnfast demo` (a char-level RNN trained for about a minute on the Python standard library's own sources,
# then sampled and timed against the NumPy reference and PyTorch if installed). Extra args go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RNNFAST_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[bench]"
exec "$VENV/bin/rnnfast" demo "$@"
