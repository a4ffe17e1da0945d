#!/usr/bin/env bash
# Download the peer Python implementations of the Mamba2 and GatedDeltaNet baselines, for
# scripts/bench_torch_peers.py (and scripts/bench.sh --peers): mamba_ssm's Triton Mamba2 and
# flash-linear-attention (FLA) 0.4.2's GatedDeltaNet layer. Their code is never committed: it goes into an
# ignored folder that a GPU machine without network can take along (PYTHONPATH root, pure Python).
#
# Usage: scripts/get_peers.sh [DIR]      (PYTHON=... picks the interpreter whose pip downloads; default python3)
#   DIR  default: .peers at the repository root (ignored by git)
#
# Result: DIR/fla, DIR/einops (from the wheels fla-core==0.4.2, flash-linear-attention==0.4.2 and einops,
# unpacked as they are) and DIR/mamba_ssm (the python package of mamba_ssm's sdist 2.3.2.post1, fetched from
# PyPI by URL and checked against the index's sha256: `pip download` of that sdist tries to build it). Three
# edits make them import with only torch, triton and packaging (no CUDA extension, no transformers):
#   - mamba_ssm/__init__.py is replaced by a stub: the original imports the selective-scan CUDA extension.
#     Without causal_conv1d, Mamba2 then runs with use_mem_eff_path=False (the unfused path).
#   - mamba_ssm/modules/mamba2.py: `from huggingface_hub import PyTorchModelHubMixin` (hub save/load only)
#     falls back to an empty mixin class where huggingface_hub is not installed.
#   - fla/layers/__init__.py is replaced by one that imports only GatedDeltaNet: the original imports every
#     layer, and some (attn, mamba2, ...) import transformers. fla/__init__.py imports nothing.
# Re-running replaces those three packages in DIR. Needs curl, tar, sha256sum and pip (network access).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/.peers}"
python="${PYTHON:-python3}"

MAMBA_VERSION="2.3.2.post1"
MAMBA_SDIST="mamba_ssm-$MAMBA_VERSION.tar.gz"
MAMBA_INDEX="https://pypi.org/simple/mamba-ssm/"
WHEELS=(fla-core==0.4.2 flash-linear-attention==0.4.2 einops)

die() { echo "get_peers.sh: error: $*" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || die "curl is not installed"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed"
"$python" -m pip --version >/dev/null 2>&1 || die "no pip for $python (set PYTHON=/path/to/python)"

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. FLA and einops: pure-Python wheels, unpacked into DIR.
echo "get_peers.sh: downloading ${WHEELS[*]}" >&2
"$python" -m pip download -q --no-deps --only-binary=:all: -d "$tmp/wheels" "${WHEELS[@]}" \
  || die "pip download failed: ${WHEELS[*]}"

# 2. mamba_ssm: the sdist's URL (and sha256) from PyPI's simple index.
echo "get_peers.sh: downloading $MAMBA_SDIST" >&2
pattern="href=\"[^\"]*/${MAMBA_SDIST//./\\.}[^\"]*\""
href="$(curl -fsSL --retry 3 "$MAMBA_INDEX" | grep -o "$pattern" | head -n 1 || true)"
[ -n "$href" ] || die "no $MAMBA_SDIST on $MAMBA_INDEX"
url="${href#href=\"}"
url="${url%\"}"
sha="${url##*#sha256=}"
url="${url%%#*}"
curl -fsSL --retry 3 -o "$tmp/$MAMBA_SDIST" "$url" || die "download failed: $url"
if [ "$sha" != "$url" ] && [ -n "$sha" ]; then
  echo "$sha  $tmp/$MAMBA_SDIST" | sha256sum -c --quiet - || die "$MAMBA_SDIST: sha256 mismatch"
fi

# 3. Replace what an earlier run left, then unpack.
rm -rf "$dir/fla" "$dir/einops" "$dir/mamba_ssm" "$dir"/fla_core-*.dist-info \
  "$dir"/flash_linear_attention-*.dist-info "$dir"/einops-*.dist-info
for whl in "$tmp"/wheels/*.whl; do
  "$python" -m zipfile -e "$whl" "$dir" || die "could not unpack $whl"
done
tar -xzf "$tmp/$MAMBA_SDIST" -C "$dir" --strip-components=1 "mamba_ssm-$MAMBA_VERSION/mamba_ssm" \
  || die "could not unpack mamba_ssm/ from $MAMBA_SDIST"

# 4. The three edits (see the header).
cat >"$dir/mamba_ssm/__init__.py" <<EOF
# Stub written by elman-train's scripts/get_peers.sh: the original imports mamba_ssm's CUDA extensions
# (selective_scan, causal_conv1d), which are not built here. Import the modules directly, e.g.
# mamba_ssm.modules.mamba2.Mamba2 (with use_mem_eff_path=False).
__version__ = "$MAMBA_VERSION"
EOF
"$python" - "$dir/mamba_ssm/modules/mamba2.py" <<'EOF' || die "could not patch mamba_ssm/modules/mamba2.py"
import sys
path = sys.argv[1]
src = open(path).read()
old = "from huggingface_hub import PyTorchModelHubMixin\n"
new = ("try:\n"
       "    from huggingface_hub import PyTorchModelHubMixin\n"
       "except ImportError:  # patched by elman-train's scripts/get_peers.sh: the mixin only saves/loads\n"
       "    class PyTorchModelHubMixin:\n"
       "        pass\n")
if src.count(old) != 1:
    sys.exit(f"{path}: expected one line {old.strip()!r}")
open(path, "w").write(src.replace(old, new))
EOF
if grep -rqs --include='*.py' -e '^from transformers' -e '^import transformers' "$dir/fla/layers"; then
  cat >"$dir/fla/layers/__init__.py" <<'EOF'
# Stub written by elman-train's scripts/get_peers.sh: the original imports every FLA layer, and some of them
# import transformers at module level. Only GatedDeltaNet is needed (it imports no transformers).
from .gated_deltanet import GatedDeltaNet

__all__ = ['GatedDeltaNet']
EOF
fi

# 5. Check that both layers import, where this interpreter has torch and triton.
if "$python" -c 'import torch, triton' >/dev/null 2>&1; then
  PYTHONPATH="$dir" "$python" -W ignore -c \
    'from mamba_ssm.modules.mamba2 import Mamba2; from fla.layers import GatedDeltaNet' \
    || die "the peer layers do not import from $dir (see above)"
  echo "get_peers.sh: mamba_ssm Mamba2 and fla GatedDeltaNet import from $dir" >&2
else
  echo "get_peers.sh: $python has no torch/triton; import check skipped" >&2
fi
echo "$dir"
