#!/usr/bin/env bash
# The test command (README): make a virtual environment, install rnnfast exactly as the README says with the
# test extras (h5py included, so the HDF5-loader tests run), add torch==2.13.0 (the CPU-only wheel from
# PyTorch's CPU index, not the multi-GB CUDA build) as the external oracle when it can be installed, and run
# the whole suite. Not a developer shortcut: it always rebuilds from source. Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
EXTRAS="test,bench,hdf5"
source "$(dirname "$0")/_venv.sh"
# "+cpu" names the CPU-only build, so the configured indexes (a local wheel where the machine has one) can
# never hand over the CUDA build; PyTorch's CPU index is the fallback (it needs the network).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    || echo "note: torch==2.13.0 not installable here; its oracle tests will skip"
fi
cd tests   # run against the installed package, never the source tree
if [ $# -eq 0 ]; then set -- .; fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
