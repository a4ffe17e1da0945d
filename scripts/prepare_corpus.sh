#!/usr/bin/env bash
# Build the offline default training corpus for elman-train.
#
# Usage: scripts/prepare_corpus.sh [--force] [OUT_FILE] [MAX_MB]
#   OUT_FILE  default: data/default_corpus.bin (relative to the current dir)
#   MAX_MB    default: 64 (the corpus is cut to exactly MAX_MB MiB)
#   --force   rebuild even if OUT_FILE already exists and is non-empty
#
# The corpus is made deterministically from text every Linux machine already
# has (man pages, /usr/share/doc, common-licenses, /usr/include headers and
# Python sources), with documents separated by the byte 0x1e.  No network is
# needed.  The work is done by prepare_corpus.py (python3 stdlib only); see
# its header for the exact rules.
set -euo pipefail

if ! command -v python3 >/dev/null 2>&1; then
    echo "prepare_corpus.sh: error: python3 is required but was not found" >&2
    exit 1
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$script_dir/prepare_corpus.py" "$@"
