#!/usr/bin/env bash
# The sanitizer job (CI, after the main tests): builds rnnfast._C with -fsanitize=address,undefined
# (-fno-sanitize-recover: any undefined behaviour aborts) in build/sanitize, then runs the tests that reach
# every kernel path (vanilla/LSTM/GRU forward and backward, every recurrence path, stacked, bidirectional,
# lengths, bad inputs, odd layouts) against it with libasan preloaded. Fails on any report. Not the
# install path and not a benchmark: the sanitized build is slow. Usage: PYTHON=... bash scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
bdir="build/sanitize"
for mod in pybind11 cmake ninja; do
  "$PY" -c "import $mod" 2>/dev/null || "$PY" -m pip install -q "$mod"
done
bindir="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")"
export PATH="$bindir:$PATH"
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
if [ ! -f "$bdir/build.ninja" ]; then
  cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSKBUILD_PROJECT_VERSION=sanitize \
    -DRNNFAST_CUDA=OFF -DPython_EXECUTABLE="$("$PY" -c 'import sys; print(sys.executable)')" \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >"$bdir.cmake.log"
fi
ninja -C "$bdir" >"$bdir.ninja.log" 2>&1 || { tail -40 "$bdir.ninja.log"; exit 1; }

# A private copy of the package with the sanitized extension in it (the source tree is left alone).
pkg="$bdir/pkg"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r python/rnnfast "$pkg/"
find "$pkg/rnnfast" -name '_C*.so' -delete
cp "$bdir"/_C*.so "$pkg/rnnfast/"

libasan="$(${CXX:-c++} -print-file-name=libasan.so)"
[ -f "$libasan" ] || { echo "sanitize.sh: libasan.so not found ($libasan)"; exit 1; }
log="$bdir/reports"
rm -rf "$log" && mkdir -p "$log"
# detect_leaks=0: CPython and NumPy keep allocations alive until exit by design; they are not ours.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$PWD/$log/asan"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$PWD/$log/ubsan"
export PYTHONPATH="$PWD/$pkg"
tests=(test_backends.py test_gated.py test_bad_input.py test_bidir_lengths.py test_invariants.py test_layer.py
       test_reliability.py test_properties.py)
set +e
(cd tests && LD_PRELOAD="$libasan" "$PY" -m pytest -q -x -p no:cacheprovider \
   -k "not uncopyable_argument and not ctrl_c" "${tests[@]}")
rc=$?
set -e
if compgen -G "$log/*" >/dev/null; then
  echo "sanitize.sh: sanitizer reports:"
  cat "$log"/*
  exit 1
fi
[ "$rc" -eq 0 ] || { echo "sanitize.sh: the tests failed under the sanitizers (rc=$rc)"; exit "$rc"; }
echo "sanitize.sh: no AddressSanitizer/UBSan report"
