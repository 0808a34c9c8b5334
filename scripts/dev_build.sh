#!/usr/bin/env bash
# Developer build: compile the extensions into build/dev-<tag> and copy them into python/rnnfast/, so that
# `PYTHONPATH=python pytest` runs against the working tree without reinstalling. Not the install path
# (that is `pip install .`, see README). Usage: scripts/dev_build.sh [tag] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-default}"; shift || true
bdir="build/dev-$tag"
mkdir -p "$bdir"
if [ ! -f "$bdir/build.ninja" ]; then
  cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKBUILD_PROJECT_VERSION=dev "$@" >"$bdir/cmake.log"
fi
ninja -C "$bdir" >"$bdir/ninja.log" 2>&1 || { tail -40 "$bdir/ninja.log"; exit 1; }
for f in "$bdir"/_C*.so; do cp "$f" "python/rnnfast/.$(basename "$f").tmp" && mv -f "python/rnnfast/.$(basename "$f").tmp" "python/rnnfast/$(basename "$f")"; done  # rename: running processes keep their mapping
echo "built: $(ls "$bdir"/_C*.so | xargs -n1 basename | tr '\n' ' ')"
