#!/usr/bin/env bash
# Download the enwik8 benchmark corpus (first 10^8 bytes of an English
# Wikipedia XML dump) for elman-train.
#
# Usage: scripts/get_enwik8.sh [OUT_DIR]
#   OUT_DIR  default: data/ (relative to the current dir)
#
# Result: OUT_DIR/enwik8, exactly 100,000,000 bytes.  Does nothing if that
# file is already present with the right size.  Needs curl or wget, and
# unzip (or python3 as a fallback for unpacking).  The archive is kept as
# OUT_DIR/enwik8.zip so a re-run does not download it again.
set -euo pipefail

URL="http://mattmahoney.net/dc/enwik8.zip"
EXPECTED_BYTES=100000000

out_dir="${1:-data}"
target="$out_dir/enwik8"
zip="$out_dir/enwik8.zip"

die() { echo "get_enwik8.sh: error: $*" >&2; exit 1; }
file_size() { wc -c <"$1" | tr -d ' '; }

if [[ -f "$target" ]]; then
    size="$(file_size "$target")"
    if [[ "$size" == "$EXPECTED_BYTES" ]]; then
        echo "enwik8: $target already present ($size bytes), skipping"
        exit 0
    fi
    echo "enwik8: $target has $size bytes, expected $EXPECTED_BYTES; fetching again" >&2
    rm -f "$target"
fi

mkdir -p "$out_dir"

# Download (to a temporary name, so an interrupted transfer is never mistaken
# for a complete archive).
if [[ ! -s "$zip" ]]; then
    echo "enwik8: downloading $URL" >&2
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$zip.tmp" "$URL" || die "download failed: $URL"
    elif command -v wget >/dev/null 2>&1; then
        wget -O "$zip.tmp" "$URL" || die "download failed: $URL"
    else
        die "neither curl nor wget is installed (e.g. apt-get install curl)"
    fi
    mv "$zip.tmp" "$zip"
fi

# Unpack into a scratch directory inside OUT_DIR, then move into place.
tmp_dir="$(mktemp -d "$out_dir/.enwik8.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$zip" enwik8 -d "$tmp_dir" \
        || { rm -f "$zip"; die "could not unzip $zip (removed it; re-run to fetch again)"; }
elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("enwik8", sys.argv[2])' \
        "$zip" "$tmp_dir" \
        || { rm -f "$zip"; die "could not unzip $zip (removed it; re-run to fetch again)"; }
else
    die "need unzip or python3 to unpack $zip (e.g. apt-get install unzip)"
fi

size="$(file_size "$tmp_dir/enwik8")"
if [[ "$size" != "$EXPECTED_BYTES" ]]; then
    rm -f "$zip"  # most likely a bad download; do not reuse it next time
    die "unpacked enwik8 has $size bytes, expected $EXPECTED_BYTES (removed $zip; re-run to fetch again)"
fi
mv "$tmp_dir/enwik8" "$target"
echo "enwik8: $target  $size bytes"
