#!/usr/bin/env bash
# The main job (README): make a virtual environment, install rnnfast as the README says (reusing an install
# built from the same sources), and run `rnnfast demo` (a char-level RNN trained for about a minute on the
# Python standard library's own sources, then sampled and timed against the NumPy reference and PyTorch if
# installed). Extra args go to the demo.
set -euo pipefail
EXTRAS="bench"
REUSE=1
source "$(dirname "$0")/_venv.sh"
exec "$VENV/bin/rnnfast" demo "$@"
