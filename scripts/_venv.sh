# Sourced by scripts/test.sh and scripts/demo.sh: makes (or reuses) the virtual environment $VENV
# (RNNFAST_VENV, default .venv, relative to the repository root) and installs rnnfast into it with the
# extras given in $EXTRAS. Not meant to be run on its own.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${RNNFAST_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install ".[$EXTRAS]"
