#!/usr/bin/env bash
# Sets up and builds elman-train on a fresh machine; skips whatever is already there.
#
# Usage: scripts/setup.sh            (build directory: $ELMAN_BUILD_DIR, default build/)
#
#  1. Debian/Ubuntu packages: cmake, ninja, g++, Catch2, cxxopts, spdlog, yaml-cpp (apt-get, only if missing);
#     gloo's headers (libgloo-dev) for data-parallel CPU runs if they can be had (optional: CUDA runs use NCCL).
#  2. LibTorch 2.11.0: the system python3's torch if it is 2.11.0 (the GPU machine), else a project
#     venv (.venv) with PyPI's torch==2.11.0.
#  3. matplotlib for the sweep report's plot (system python3's, else installed into .venv).
#  4. CMake configure and build. CUDA kernels are built when nvcc is on PATH (for sm_90a).
# Machines without network (the GPU machine) must already have everything; nothing is downloaded there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ELMAN_BUILD_DIR:-$root/build}"
torch_version="2.11.0"

say() { echo "setup: $*"; }

# 1. System packages.
need_pkgs=()
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v ninja >/dev/null || need_pkgs+=(ninja-build)
command -v g++ >/dev/null || need_pkgs+=(g++)
[ -d /usr/include/catch2 ] || need_pkgs+=(catch2)
[ -f /usr/include/cxxopts.hpp ] || need_pkgs+=(libcxxopts-dev)
[ -d /usr/include/spdlog ] || need_pkgs+=(libspdlog-dev)
[ -d /usr/include/yaml-cpp ] || need_pkgs+=(libyaml-cpp-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# gloo's headers (CPU data-parallel runs; the PyPI LibTorch lacks them). Offline machines go without, unless
# ELMAN_REQUIRE_GLOO=1 (CI sets it, so that the data-parallel tests cannot silently drop out).
if [ ! -f /usr/include/gloo/algorithm.h ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  if { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libgloo-dev; } >/dev/null 2>&1; then
    say "installed libgloo-dev (gloo headers for data-parallel CPU runs)"
  elif [ "${ELMAN_REQUIRE_GLOO:-0}" = 1 ]; then
    echo "setup: error: could not install libgloo-dev, which ELMAN_REQUIRE_GLOO=1 requires (apt-get install libgloo-dev)" >&2
    exit 1
  else
    say "no gloo headers (libgloo-dev): data-parallel CPU runs are left out of this build; CUDA ones use NCCL"
  fi
fi

# 2. LibTorch from a Python torch install.
torch_prefix() { "$1" -c "import torch, torch.utils; assert torch.__version__.split('+')[0] == '$torch_version'; print(torch.utils.cmake_prefix_path)" 2>/dev/null; }
prefix=""
for py in "$root/.venv/bin/python" python3; do
  if command -v "$py" >/dev/null && prefix="$(torch_prefix "$py")"; then break; fi
  prefix=""
done
if [ -z "$prefix" ]; then
  say "creating $root/.venv with torch==$torch_version (LibTorch for CMake)"
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --upgrade pip
  "$root/.venv/bin/pip" install -q "torch==$torch_version"
  prefix="$(torch_prefix "$root/.venv/bin/python")"
fi
say "LibTorch $torch_version from $prefix"
# 3. matplotlib draws the sweep report's plot (scripts/report.py runs on the project venv's python if there is
#    one, else python3); install it into the venv when that python lacks it.
report_py=python3
[ -x "$root/.venv/bin/python" ] && report_py="$root/.venv/bin/python"
if ! "$report_py" -c "import matplotlib" 2>/dev/null; then
  [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
  say "installing matplotlib into $root/.venv (for report plots)"
  "$root/.venv/bin/pip" install -q matplotlib
fi

# 4. Configure and build.
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
  # CMAKE_POLICY_VERSION_MINIMUM lets CMake 4 read package configs written for older CMake.
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5 >/dev/null
fi
cmake --build "$build" -j "$(nproc)"
say "built $build/elman-train and $build/elman-tests"
