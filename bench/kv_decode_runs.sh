#!/usr/bin/env bash
# bench/kv_decode_runs.sh: build/kv_decode run RUNS times in a row, and for each cache the
# median and quartiles of its ratio to the fp16 cache of the same run. One run's ratio moves
# by ±10% on a shared 2-core machine; the median of many does not.
#
#   make bench
#   bench/kv_decode_runs.sh                 # RUNS=25 STEPS=16 DEPTH=8192 THREADS=2: ~15 min
#   BINS="old/kv_decode build/kv_decode" RUNS=10 bench/kv_decode_runs.sh
#                                           # two builds, run by turns, a table for each
#
# kv_decode itself (bench/kv_decode.c) fills the cache with the model's own K/V rows up to
# DEPTH, times STEPS greedy decode steps per cache, best of 3 interleaved rounds. Writes the
# runs' raw output and the table under bench/out/kv_decode_runs/ and prints the table with
# the load average at the end, so a reader knows how quiet the machine was.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-active}
RUNS=${RUNS:-25}
STEPS=${STEPS:-16}
DEPTH=${DEPTH:-8192}
THREADS=${THREADS:-2}
BINS=${BINS:-build/kv_decode}
MODEL=models/smollm2-135m-instruct.bin
OUT=bench/out/kv_decode_runs
for b in $BINS; do [ -x "$b" ] || { echo "error: $b missing (make bench)" >&2; exit 1; }; done
[ -f "$MODEL" ] || { echo "error: $MODEL missing (make model)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/run-*.txt

for r in $(seq "$RUNS"); do
  i=0
  for b in $BINS; do
    OMP_NUM_THREADS=$THREADS "$b" "$MODEL" data/tinyshakespeare.txt "$STEPS" "$DEPTH" >"$OUT/run-$i-$r.txt"
    i=$((i + 1))
  done
done

python3 - "$OUT" "$RUNS" "$DEPTH" "$THREADS" $BINS <<'EOF' | tee "$OUT/table.md"
import glob, statistics, sys
out, runs, depth, threads, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
def quartiles(v):
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], statistics.median(v), q[2]
for i, b in enumerate(bins):
    ratio, tps = {}, {}
    for f in sorted(glob.glob(f"{out}/run-{i}-*.txt")):
        for line in open(f):
            w = line.split()
            if len(w) >= 5 and w[2].isdigit():       # preset kv ctx tok/s ratio ...
                key = (w[0], w[1])
                ratio.setdefault(key, []).append(float(w[4].rstrip("x")))
                tps.setdefault(key, []).append(float(w[3]))
    print(f"\n{b}: {runs} runs of kv_decode, context {depth}, {threads} threads; median (quartiles)")
    print("| preset | cache | tok/s | vs fp16 |")
    print("|---|---|---:|---:|")
    for key in ratio:
        lo, med, hi = quartiles(ratio[key])
        print(f"| {key[0]} | {key[1]} | {statistics.median(tps[key]):.1f} | {med:.2f}× ({lo:.2f}–{hi:.2f}) |")
with open("/proc/loadavg") as f:
    print("\nload average at the end:", " ".join(f.read().split()[:3]))
EOF
