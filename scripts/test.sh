#!/usr/bin/env bash
# Sets up, builds and runs the tests. Usage: scripts/test.sh [--gpu]
#   default: the CPU tests (what CI runs); --gpu: every test, the GPU ones too (needs a CUDA device).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ELMAN_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
cd "$build"
if [ "${1:-}" = "--gpu" ]; then
  ctest --output-on-failure -j 1
else
  ctest --output-on-failure -LE gpu -j "$(nproc)"
fi
