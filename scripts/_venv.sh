# Sourced by scripts/test.sh and scripts/demo.sh: makes (or reuses) the virtual environment $VENV
# (RNNFAST_VENV, default .venv, relative to the repository root) and installs rnnfast into it with the
# extras given in $EXTRAS. With REUSE=1 (demo.sh) an install built from the same sources and extras is kept
# (a hash of every tracked source file, stored in the venv), so only a changed tree is rebuilt.
# Not meant to be run on its own.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${RNNFAST_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
_src_hash() {   # the sources the wheel is built from, and the extras asked for
  { echo "$EXTRAS"; find CMakeLists.txt pyproject.toml README.md LICENSE csrc python -type f \
      ! -name '*.so' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum; } \
    | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.rnnfast-source-hash"
HASH="$(_src_hash)"
if [ "${REUSE:-0}" = 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] \
   && "$VENV/bin/python" -c "import rnnfast" 2>/dev/null; then
  echo "rnnfast: reusing the install in $VENV (sources unchanged)" >&2
else
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install -q --upgrade pip     # pip >= 23.1 for -C / --config-settings
  "$VENV/bin/python" -m pip install ".[$EXTRAS]"
  echo "$HASH" > "$STAMP"
fi
