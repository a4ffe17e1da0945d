#!/usr/bin/env python3
"""Build the offline default training corpus for elman-train.

Usage:
    python3 scripts/prepare_corpus.py [--force] [OUT_FILE] [MAX_MB]

    OUT_FILE  output path (default: data/default_corpus.bin)
    MAX_MB    size cap in MiB (default: 64)
    --force   rebuild even if OUT_FILE already exists and is non-empty

Normally called through scripts/prepare_corpus.sh.

The corpus is made only from text that ships with a Linux system, so it
needs no network access:

    man        man pages under /usr/share/man (.gz decompressed)
    doc        README*, *.txt, *.md and copyright files under /usr/share/doc
               (each of those may also be gzip-compressed, e.g. README.gz)
    licenses   everything under /usr/share/common-licenses
    include    C/C++ headers under /usr/include
    python     .py files under /usr/lib/python3* and the stdlib of the
               running interpreter

Determinism: every source root is listed with `find ROOT -type f` (so
symlinks are skipped) and the resulting paths are sorted as raw bytes,
which is the same order as `LC_ALL=C sort`.  Each source's sorted list is
then shuffled with a fixed seed, so that the size cap takes a sample spread
over the whole source rather than its alphabetical prefix (which for man
pages would be nearly all Czech and Danish translations).  Sources are
interleaved round-robin, one document at a time, in the fixed order above.
The output therefore only depends on the files present on the machine.

Filters: files over 1 MiB (on disk, or after decompression) are skipped,
as are empty files and binary files (a NUL byte within the first 4 KiB
after decompression).

Layout: the documents' raw bytes, with a single 0x1e byte (ASCII record
separator) between consecutive documents.  Writing stops at exactly
MAX_MB MiB (the last document is cut), or earlier if the sources run out.
The file is written to OUT_FILE.tmp and renamed into place at the end.
Python standard library only.
"""

import argparse
import fnmatch
import glob
import gzip
import os
import random
import subprocess
import sys
import sysconfig
import zlib

MIB = 1 << 20
MAX_DOC_BYTES = 1 * MIB        # skip any document larger than this
MIN_CORPUS_BYTES = 2 * MIB     # fail if less text than this is found
BINARY_PROBE = 4096            # bytes inspected for a NUL byte
SEPARATOR = b"\x1e"            # ASCII record separator between documents
SHUFFLE_SEED = 20240101        # fixed: same files in, same corpus out

# Compressed formats we do not decode; reading them raw would only add noise.
OTHER_COMPRESSED = (b".bz2", b".xz", b".lzma", b".zst", b".Z", b".lz")


def list_files(root):
    """Return regular files under root (no symlinks), sorted like LC_ALL=C sort.

    Paths are kept as bytes so that odd file names survive, and sorting
    bytes in Python is plain byte-wise comparison, i.e. the C locale order.
    """
    if not os.path.isdir(root):
        return []
    out = subprocess.run(
        ["find", root, "-type", "f", "-print0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # unreadable subdirectories are not fatal
        check=False,
    ).stdout
    return sorted(p for p in out.split(b"\0") if p)


# ---- per-source file filters (take a path as bytes, return bool) ----------

def _strip_gz(name):
    return name[:-3] if name.endswith(b".gz") else name


def want_man(path):
    return not path.endswith(OTHER_COMPRESSED)


DOC_PATTERNS = ("README*", "*.txt", "*.md", "copyright")


def want_doc(path):
    name = os.fsdecode(_strip_gz(os.path.basename(path)))
    return any(fnmatch.fnmatchcase(name, pat) for pat in DOC_PATTERNS)


def want_license(path):
    return not path.endswith(OTHER_COMPRESSED)


HEADER_EXTS = (b".h", b".hh", b".hpp", b".hxx", b".h++", b".tcc")


def want_header(path):
    if path.endswith(HEADER_EXTS):
        return True
    # The C++ standard library headers have no extension (<vector>, <map>).
    return b"/c++/" in path and b"." not in os.path.basename(path)


def want_python(path):
    return path.endswith(b".py")


def python_roots():
    """/usr/lib/python3* plus the running interpreter's stdlib, deduplicated."""
    roots = sorted(glob.glob("/usr/lib/python3*"))
    stdlib = sysconfig.get_paths().get("stdlib")
    if stdlib:
        roots.append(stdlib)
    seen, unique = set(), []
    for r in roots:
        real = os.path.realpath(r)
        if real not in seen and os.path.isdir(real):
            seen.add(real)
            unique.append(r)
    return unique


def source_files(roots, want):
    """Files of all roots that pass want, de-duplicated by real path, in a
    fixed pseudo-random order (C-locale sort, then a seeded shuffle)."""
    files, seen = [], set()
    for root in roots:
        for path in list_files(root):
            if not want(path):
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            files.append(path)
    files.sort()  # byte order == LC_ALL=C sort; makes the shuffle input fixed
    random.Random(SHUFFLE_SEED).shuffle(files)
    return files


def sources():
    """The corpus sources, in their fixed interleaving order."""
    return [
        ("man", source_files(["/usr/share/man"], want_man)),
        ("doc", source_files(["/usr/share/doc"], want_doc)),
        ("licenses", source_files(["/usr/share/common-licenses"], want_license)),
        ("include", source_files(["/usr/include"], want_header)),
        ("python", source_files(python_roots(), want_python)),
    ]


# ---- reading documents -----------------------------------------------------

def read_document(path):
    """Return the (decompressed) bytes of path, or None if it must be skipped."""
    try:
        if os.path.getsize(path) > MAX_DOC_BYTES:
            return None
        if path.endswith(b".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_DOC_BYTES + 1)  # bounded: no gzip bombs
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_DOC_BYTES + 1)
    except (OSError, EOFError, zlib.error):
        return None  # unreadable or corrupt: just skip it
    if not data or len(data) > MAX_DOC_BYTES:
        return None
    if b"\0" in data[:BINARY_PROBE]:
        return None
    return data


def documents(files):
    """Yield the readable text documents of a sorted file list, in order."""
    for path in files:
        data = read_document(path)
        if data is not None:
            yield data


def round_robin(named_iters):
    """Yield (source name, document), taking one from each live source in turn."""
    live = list(named_iters)
    while live:
        still_live = []
        for name, it in live:
            doc = next(it, None)
            if doc is not None:
                yield name, doc
                still_live.append((name, it))
        live = still_live


# ---- main ------------------------------------------------------------------

def build(out_path, max_bytes):
    """Write the corpus to out_path atomically; return (bytes, documents)."""
    tmp_path = out_path + ".tmp"
    srcs = sources()
    for name, files in srcs:
        print(f"prepare_corpus: {name}: {len(files)} candidate files",
              file=sys.stderr)
    written, ndocs = 0, 0
    per_source = {name: [0, 0] for name, _ in srcs}
    try:
        with open(tmp_path, "wb") as out:
            stream = round_robin((n, documents(f)) for n, f in srcs)
            for name, doc in stream:
                if written >= max_bytes:
                    break
                if ndocs:
                    out.write(SEPARATOR)
                    written += 1
                    if written >= max_bytes:
                        break
                piece = doc[: max_bytes - written]
                out.write(piece)
                written += len(piece)
                ndocs += 1
                per_source[name][0] += 1
                per_source[name][1] += len(piece)
        for name, (n, b) in per_source.items():
            print(f"prepare_corpus: {name}: {n} documents, {b} bytes",
                  file=sys.stderr)
        if written < min(MIN_CORPUS_BYTES, max_bytes):
            raise SystemExit(
                f"prepare_corpus: error: only {written} bytes of text found "
                f"(need at least {MIN_CORPUS_BYTES} bytes = 2 MiB)")
        os.replace(tmp_path, out_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return written, ndocs


def main():
    ap = argparse.ArgumentParser(
        description="Build the offline default corpus from local system text.")
    ap.add_argument("--force", action="store_true",
                    help="rebuild even if OUT_FILE exists")
    ap.add_argument("out", nargs="?", default="data/default_corpus.bin",
                    metavar="OUT_FILE")
    ap.add_argument("max_mb", nargs="?", type=int, default=64,
                    metavar="MAX_MB")
    args = ap.parse_args()
    if args.max_mb < 1:
        ap.error("MAX_MB must be a positive integer")

    if (not args.force and os.path.isfile(args.out)
            and os.path.getsize(args.out) > 0):
        print(f"corpus: {args.out} already exists "
              f"({os.path.getsize(args.out)} bytes); use --force to rebuild")
        return 0

    out_dir = os.path.dirname(args.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    nbytes, ndocs = build(args.out, args.max_mb * MIB)
    print(f"corpus: {args.out}  {nbytes} bytes  from {ndocs} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
