#!/usr/bin/env bash
# CTest (CPU): a sweep over configs/tiny is interrupted after its first finished run, resumed without redoing
# finished runs, records the diverging config as such, and renders its report (Markdown, CSV, plot).
# Usage: tests/sweep_test.sh PATH/TO/elman-train
set -euo pipefail
exe="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py=python3
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "sweep_test: FAILED: $*" >&2; exit 1; }

# Real text for training: the project's sources, repeated to 300 KB.
find "$root/app" "$root/models" "$root/ops" -type f | LC_ALL=C sort | xargs cat > "$tmp/src.txt"
while [ "$(stat -c %s "$tmp/src.txt")" -lt 300000 ]; do cat "$tmp/src.txt" "$tmp/src.txt" > "$tmp/x" && mv "$tmp/x" "$tmp/src.txt"; done
export ELMAN_TRAIN="$exe"
sweep=(bash "$root/scripts/sweep.sh" "$root/configs/tiny" --gpus cpu --data "$tmp/src.txt" --out "$tmp/sweep")
n_configs=$(ls "$root/configs/tiny"/*.yaml | wc -l)

# 1. Start the sweep in its own process group and interrupt it (as Ctrl-C would) once a run has finished.
setsid "${sweep[@]}" > "$tmp/first.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  ls "$tmp"/sweep/*/results.json >/dev/null 2>&1 && break
  sleep 0.1
done
first="$(ls "$tmp"/sweep/*/results.json | head -n 1)"
[ -n "$first" ] || fail "no run finished within 60 s"
sleep 0.3
kill -INT -- "-$pid" 2>/dev/null || true
wait "$pid" || true
stamp="$(stat -c %Y.%s "$first")"

# 2. Resume: finished runs are skipped, the rest complete.
"${sweep[@]}" > "$tmp/second.log" 2>&1 || { cat "$tmp/second.log"; fail "resumed sweep exited non-zero"; }
grep -q "done before" "$tmp/second.log" || { cat "$tmp/first.log" "$tmp/second.log"; fail "resumed sweep redid finished runs"; }
[ "$(stat -c %Y.%s "$first")" = "$stamp" ] || fail "a finished run was rewritten"
for cfg in "$root"/configs/tiny/*.yaml; do
  name="$(basename "$cfg" .yaml)"
  [ -f "$tmp/sweep/$name/results.json" ] || fail "$name has no results.json"
done
grep -q '"status": "diverged: non-finite' "$tmp/sweep/diverge/results.json" || fail "the diverging config is not recorded as diverged"
grep -q '"status": "ok"' "$tmp/sweep/e61/results.json" || fail "e61 did not finish ok"

# 3. Report.
"$py" "$root/scripts/report.py" "$tmp/sweep" --elman-train "$exe" || fail "report.py failed"
for section in "## Best models" "### Gated-diagonal Elman" "### Dense-recurrence Elman" "### Baselines" "## Failed / unstable" "## Throughput vs quality"; do
  grep -q "$section" "$tmp/sweep/report.md" || fail "report.md lacks '$section'"
done
grep -q "| diverge |" "$tmp/sweep/report.md" || fail "report.md does not list the diverged run"
[ "$(wc -l < "$tmp/sweep/report.csv")" -eq $((n_configs + 1)) ] || fail "report.csv does not have one row per run"
[ -s "$tmp/sweep/report.png" ] || fail "no report.png"
echo "sweep_test: interrupted, resumed and reported $n_configs runs"
