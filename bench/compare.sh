#!/usr/bin/env bash
# Runs benches on two checkouts back to back, one bench at a time, so both see the same machine.
#   bench/compare.sh OLD_DIR NEW_DIR [bench ...]      (default: every bench/*.py)
# Prints each run's closing name=value lines; full output goes to $OUT (default /tmp/bench-compare).
set -uo pipefail
old=$1 new=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$here/.venv/bin/python}
OUT=${OUT:-/tmp/bench-compare}; mkdir -p "$OUT"
benches=${*:-$(cd "$here/bench" && ls *.py | sed 's/\.py$//')}
for b in $benches; do
  for side in old new; do
    dir=$old; [ "$side" = new ] && dir=$new
    start=$(date +%s)
    (cd "$dir" && timeout 900 "$PY" "bench/$b.py") > "$OUT/$side-$b.log" 2>&1
    rc=$?
    echo "$b $side rc=$rc $(( $(date +%s) - start ))s: $(grep -E '^[a-z_0-9]+=[-0-9.]+$' "$OUT/$side-$b.log" | tr '\n' ' ')"
  done
done
