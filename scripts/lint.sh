#!/usr/bin/env bash
# Lint: ruff check (Python, rules in pyproject.toml) and clang-format --dry-run --Werror (C++/CUDA, style in
# .clang-format; every tracked file under csrc/). Fails on any finding. Not a formatter
# run unless --fix is given (then ruff fixes what it safely can and clang-format rewrites the checked files).
set -euo pipefail
cd "$(dirname "$0")/.."
fix=0
[ "${1:-}" = "--fix" ] && fix=1
for tool in ruff clang-format; do
  command -v "$tool" >/dev/null || { echo "lint: $tool not found (pip install ruff clang-format)" >&2; exit 1; }
done
mapfile -t cfiles < <(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh')
if [ "$fix" = 1 ]; then
  ruff check --fix .
  clang-format -i "${cfiles[@]}"
else
  ruff check .
  clang-format --dry-run --Werror "${cfiles[@]}"
fi
echo "lint: ok (ruff check, clang-format on ${#cfiles[@]} C++/CUDA files)"
