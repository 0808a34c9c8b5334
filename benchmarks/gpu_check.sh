#!/usr/bin/env bash
# One GPU-machine check of the cuda backend: build (Hopper only, from this tree), run tests/test_cuda.py,
# run benchmarks/bench_gpu.py, and leave logs, JUnit XML, JSON, PNG and the markdown table in OUTDIR.
# Not for CI (CI has no GPU). Needs the scipy-openblas32 wheel in .whl/ (the GPU machine has no index).
# Usage: benchmarks/gpu_check.sh OUTDIR [bench budget seconds, default 170]
set -uo pipefail
OUTDIR="${1:?usage: benchmarks/gpu_check.sh OUTDIR [budget_s]}"
BUDGET="${2:-170}"
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "== $(( $(date +%s) - t0 ))s: $*"; }

stamp "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import sys, numpy, cupy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, torch.version.cuda)"
nvcc --version | tail -1

stamp "build"
BDIR=build/gpu-check
cmake -S . -B "$BDIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKBUILD_PROJECT_VERSION=dev -DRNNFAST_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DPython_EXECUTABLE="$(command -v python3)" >"$OUTDIR/build.log" 2>&1 \
  && ninja -C "$BDIR" _C_cuda >>"$OUTDIR/build.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then tail -60 "$OUTDIR/build.log"; stamp "BUILD FAILED"; exit 1; fi
# the CPU extension is not needed by the CUDA tests (they compare with the NumPy reference): not fatal
ninja -C "$BDIR" _C >>"$OUTDIR/build.log" 2>&1 || { tail -30 "$OUTDIR/build.log"; echo "CPU extension _C failed to build"; }
cp "$BDIR"/_C*.so python/rnnfast/
export PYTHONPATH="$PWD/python:$PYTHONPATH"
python3 -c "import rnnfast, json; print(json.dumps(rnnfast.backends())); from rnnfast import _cuda_backend as cb; print(cb.info())"

stamp "tests"
timeout 200 python3 -m pytest tests/test_cuda.py -q -rs --tb=short -p no:cacheprovider --timeout=60 --timeout_method=thread \
  --junitxml="$OUTDIR/junit_test_cuda.xml" 2>&1 | tee "$OUTDIR/test_cuda.log" | tail -40
stamp "tests done (exit ${PIPESTATUS[0]})"

stamp "benchmark"
timeout $(( BUDGET + 120 )) python3 benchmarks/bench_gpu.py --out "$OUTDIR" --budget "$BUDGET"
stamp "benchmark done (exit $?)"
