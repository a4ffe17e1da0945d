#!/usr/bin/env python3
"""Convert Pile shards (JSON lines) into a raw byte corpus for elman-train.

Usage:
    python3 scripts/pile_to_bytes.py INPUT [INPUT ...] -o OUT [--max-bytes N]

    INPUT        a .jsonl or .jsonl.zst shard; several are concatenated in
                 the order given
    -o OUT       output file (written as OUT.tmp, renamed when complete)
    --max-bytes  stop once the output holds N bytes (cut to exactly N)

Every JSON line's "text" field is encoded as UTF-8 and written out, with a
single 0x1e byte (ASCII record separator) between consecutive documents,
which is the format the reference runs were trained on.

Input is streamed line by line, so a shard is never held in memory.
.zst shards are decoded with the `zstandard` Python module when it is
importable, otherwise by piping through `zstd -dc`.  A line that is not
valid JSON, or has no string "text" field, is reported on stderr with its
file and line number and skipped; the total is printed at the end.
Progress is reported on stderr every 100 MB of output.
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys

SEPARATOR = b"\x1e"
PROGRESS_EVERY = 100 * 1000 * 1000  # bytes of output between progress lines
WRITE_BUFFER = 8 << 20


def log(msg):
    print(f"pile_to_bytes: {msg}", file=sys.stderr, flush=True)


def zstd_backend():
    """Return 'module', 'command' or None, whichever way .zst can be read."""
    try:
        import zstandard  # noqa: F401  (optional dependency)
        return "module"
    except ImportError:
        pass
    if shutil.which("zstd"):
        return "command"
    return None


class LineSource:
    """Context manager yielding the raw (bytes) lines of one input file."""

    def __init__(self, path, backend):
        self.path = path
        self.backend = backend
        self._files = []
        self._proc = None
        self.stopped_early = False  # set when --max-bytes ends the read early

    def __enter__(self):
        raw = open(self.path, "rb")
        self._files.append(raw)
        if not self.path.endswith(".zst"):
            return raw
        if self.backend == "module":
            import zstandard
            # Pile shards may use long-distance matching windows; allow them.
            dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
            reader = dctx.stream_reader(raw)
            buffered = io.BufferedReader(reader, buffer_size=1 << 20)
            self._files.append(buffered)
            return buffered
        # 'command': let zstd decompress in a child process.
        self._proc = subprocess.Popen(
            ["zstd", "-dc", "--long=31", "-q"], stdin=raw,
            stdout=subprocess.PIPE, bufsize=1 << 20)
        self._files.append(self._proc.stdout)
        return self._proc.stdout

    def __exit__(self, exc_type, exc, tb):
        for f in reversed(self._files):
            f.close()
        if self._proc is not None:
            rc = self._proc.wait()
            # A non-zero status after we stopped reading early (--max-bytes)
            # is just a broken pipe; only complain on a normal finish.
            if rc != 0 and exc_type is None and not self.stopped_early:
                raise SystemExit(
                    f"pile_to_bytes: error: zstd -dc failed on {self.path} "
                    f"(exit status {rc})")
        return False


def convert(inputs, out_path, max_bytes, backend):
    tmp_path = out_path + ".tmp"
    written = 0
    docs = 0
    bad = 0
    encode_fixed = 0
    next_report = PROGRESS_EVERY
    done = False
    try:
        with open(tmp_path, "wb", buffering=WRITE_BUFFER) as out:
            for path in inputs:
                if done:
                    break
                src = LineSource(path, backend)
                with src as lines:
                    for lineno, line in enumerate(lines, start=1):
                        if not line.strip():
                            continue
                        try:
                            text = json.loads(line)["text"]
                            if not isinstance(text, str):
                                raise TypeError("'text' is not a string")
                        except (ValueError, KeyError, TypeError) as e:
                            bad += 1
                            log(f"{path}:{lineno}: malformed line skipped "
                                f"({type(e).__name__}: {str(e)[:80]})")
                            continue
                        try:
                            data = text.encode("utf-8")
                        except UnicodeEncodeError:
                            # Lone surrogates (legal in JSON, not in UTF-8).
                            data = text.encode("utf-8", errors="replace")
                            encode_fixed += 1
                        if docs:
                            data = SEPARATOR + data
                        if max_bytes is not None and written + len(data) >= max_bytes:
                            data = data[: max_bytes - written]
                            done = True
                        out.write(data)
                        written += len(data)
                        docs += 1
                        while written >= next_report:
                            log(f"{written / 1e6:,.0f} MB written, {docs} documents "
                                f"(at {path}:{lineno})")
                            next_report += PROGRESS_EVERY
                        if done:
                            src.stopped_early = True
                            break
        os.replace(tmp_path, out_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return written, docs, bad, encode_fixed


def main():
    ap = argparse.ArgumentParser(
        description="Convert Pile .jsonl/.jsonl.zst shards to raw bytes "
                    "(UTF-8 text, documents separated by 0x1e).")
    ap.add_argument("inputs", nargs="+", metavar="INPUT")
    ap.add_argument("-o", "--output", required=True, metavar="OUT")
    ap.add_argument("--max-bytes", type=int, default=None, metavar="N",
                    help="stop after N bytes of output")
    args = ap.parse_args()
    if args.max_bytes is not None and args.max_bytes <= 0:
        ap.error("--max-bytes must be positive")

    for path in args.inputs:
        if not os.path.isfile(path):
            ap.error(f"no such file: {path}")
    backend = None
    if any(p.endswith(".zst") for p in args.inputs):
        backend = zstd_backend()
        if backend is None:
            print("pile_to_bytes: error: cannot read .zst input: install the "
                  "Python module (pip install zstandard) or the zstd tool "
                  "(apt-get install zstd)", file=sys.stderr)
            return 1

    out_dir = os.path.dirname(args.output)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    written, docs, bad, fixed = convert(args.inputs, args.output,
                                        args.max_bytes, backend)
    if fixed:
        log(f"{fixed} documents had unencodable characters replaced by '?'")
    log(f"{bad} malformed lines skipped")
    print(f"pile: {args.output}  {written} bytes  from {docs} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
