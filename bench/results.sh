#!/usr/bin/env bash
# bench/results.sh: the KV-cache quality results for the default model, in one
# command: bench/results/RESULTS.md and the SVG plots bench/results/results_kl.svg, bench/results/results_passkey_*.svg.
#
#   make results                                   # full size (the default; see the time below)
#   make results RESULTS_FLAGS="--tokens 512 --lengths 1024,2048 --depths 0.5 --long-lengths none --problems 4 --gen-problems 2"
#   bench/results.sh [flags]                       # the same, after `make all build/passkey build/gsm8k build/bench_report`
#
# Flags (defaults = the full protocol):
#   --tokens N          tokens of Shakespeare per `run -m compare` (1024)
#   --lengths LIST      passkey prompt lengths (1024,2048,4096) ...
#   --depths LIST       ... with the needle at these depths (0.1,0.3,0.5,0.7,0.9)
#   --long-lengths LIST passkey lengths run at fewer depths (8192; `none`: no such run) ...
#   --long-depths LIST  ... these (0.1,0.5,0.9): an 8k prompt costs ~9 times a 1k one, because
#                       attention grows with the context, so the longest prompts get 3 depths
#                       spanning the haystack instead of 5
#   --problems N        GSM8K problems scored teacher-forced (200)
#   --gen-problems N    of them, greedy-decoded for accuracy (200)
#   --max-new N         GSM8K greedy token limit (192)
#   --kv LIST           configurations (fp16,kv8,k8v4,k4v8,kv4,k4v2,kv2), each in --presets (pertoken,kivi)
#   --report-only       only rebuild RESULTS.md and the plots from the rows of an earlier run
#   --no-report         only run the benchmarks
#
# The three parts run side by side (three processes; OMP_WAIT_POLICY=passive keeps them from
# spinning against each other). Raw rows go to bench/out/results/*.tsv; build/bench_report
# turns them into RESULTS.md and the plots.
#
# Time (SmolLM2-135M, the 2-core development machine, nothing else running; run of
# 2026-11-29, block prefill attention and batched greedy decoding):
#   - compare: 13 configurations x 1,024 tokens, 5.6 min (~25 s each, sharing the cores);
#   - GSM8K: 200 problems, all greedy-decoded, 80 min for the 13 configurations (5.5-7 min each);
#   - passkey 1k/2k/4k at 5 depths: 71 min (7 / 15 / 49 min by length); 8k at 3 depths:
#     1 h 16 min.
# The parts run side by side, so the whole is about 2 h 30 min of wall time; the time of the run in
# bench/results/RESULTS.md is stated there.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2-135m-instruct.bin}
BUILD=${BUILD:-build}
TOKENS=1024 LENGTHS=1024,2048,4096 DEPTHS=0.1,0.3,0.5,0.7,0.9 LONG_LENGTHS=8192 LONG_DEPTHS=0.1,0.5,0.9
PROBLEMS=200 GEN=200 MAXNEW=192 KVS=fp16,kv8,k8v4,k4v8,kv4,k4v2,kv2 PRESETS=pertoken,kivi
RUN=${RUN:-./run} DO_RUN=1 DO_REPORT=1
ARGS=$(printf ' %s' "$@" | sed -e 's/ --report-only//; s/ --no-report//')   # the sizes, for RESULTS.md
while [ $# -gt 0 ]; do
  case "$1" in
    --report-only) DO_RUN=0; shift; continue;;
    --no-report) DO_REPORT=0; shift; continue;;
    --tokens) TOKENS=$2;; --lengths) LENGTHS=$2;; --depths) DEPTHS=$2;;
    --long-lengths) LONG_LENGTHS=$2;; --long-depths) LONG_DEPTHS=$2;;
    --problems) PROBLEMS=$2;; --gen-problems) GEN=$2;; --max-new) MAXNEW=$2;;
    --kv) KVS=$2;; --presets) PRESETS=$2;;
    *) echo "error: bench/results.sh: unknown flag $1" >&2; exit 1;;
  esac
  shift 2
done
for b in "$RUN" "$BUILD/passkey" "$BUILD/gsm8k" $([ $DO_REPORT = 1 ] && echo "$BUILD/bench_report"); do
  [ -x "$b" ] || { echo "error: $b missing (make all $BUILD/passkey $BUILD/gsm8k $BUILD/bench_report)" >&2; exit 1; }
done
[ -f "$MODEL" ] || { echo "error: $MODEL missing (make model)" >&2; exit 1; }
OUT=bench/out/results
mkdir -p "$OUT"
export OMP_WAIT_POLICY=passive
start=$(date +%s)
if [ $DO_RUN = 1 ]; then

# Compare text: Shakespeare from 500,000 bytes in (the passkey haystack is the file's start).
head -c 560000 data/tinyshakespeare.txt | tail -c 60000 > "$OUT/compare_text.txt"

compare_all() {
  echo "#preset kv tokens seconds | run's last line" > "$OUT/compare.tsv"
  IFS=, read -ra kvs <<<"$KVS"; IFS=, read -ra presets <<<"$PRESETS"
  for p in "${presets[@]}"; do
    for kv in "${kvs[@]}"; do
      [ "$kv" = fp16 ] && [ "$p" != "${presets[0]}" ] && continue
      t0=$(date +%s.%N)
      line=$("$RUN" "$MODEL" -m compare -f "$OUT/compare_text.txt" --tokens "$TOKENS" --kv "$kv" --kv-preset "$p" 2>"$OUT/compare_${p}_${kv}.err" | tail -n 1)
      t1=$(date +%s.%N)
      [ "$kv" = fp16 ] && pn=- || pn=$p
      printf '%s\t%s\t%s\t%.1f\t%s\n' "$pn" "$kv" "$TOKENS" "$(echo "$t1 - $t0" | bc)" "$line" >> "$OUT/compare.tsv"
      echo "compare $pn $kv: $line" >&2
    done
  done
}

compare_all &
pid_c=$!
# passkey: the lengths at all depths, then the long lengths at fewer depths, one table
passkey_all() {
  "$BUILD/passkey" "$MODEL" --kv "$KVS" --presets "$PRESETS" --lengths "$LENGTHS" --depths "$DEPTHS" \
      --out "$OUT/passkey.tsv" 2> "$OUT/passkey.log" || return 1
  [ "$LONG_LENGTHS" = none ] && return 0
  "$BUILD/passkey" "$MODEL" --kv "$KVS" --presets "$PRESETS" --lengths "$LONG_LENGTHS" --depths "$LONG_DEPTHS" \
      --out "$OUT/passkey_long.tsv" 2> "$OUT/passkey_long.log" || return 1
  tail -n +2 "$OUT/passkey_long.tsv" >> "$OUT/passkey.tsv"
}

passkey_all &
pid_p=$!
"$BUILD/gsm8k" "$MODEL" --kv "$KVS" --presets "$PRESETS" --problems "$PROBLEMS" --gen-problems "$GEN" \
    --max-new "$MAXNEW" --out "$OUT/gsm8k.tsv" 2> "$OUT/gsm8k.log" &
pid_g=$!
fail=0
wait $pid_c || fail=1
wait $pid_p || { fail=1; tail -n 3 "$OUT"/passkey*.log >&2; }
wait $pid_g || { fail=1; tail -n 3 "$OUT/gsm8k.log" >&2; }
[ $fail = 0 ] || { echo "error: bench/results.sh: a benchmark failed (logs in $OUT)" >&2; exit 1; }
secs=$(( $(date +%s) - start ))
echo "$secs" > "$OUT/seconds"
fi
[ $DO_REPORT = 1 ] || exit 0
secs=$(cat "$OUT/seconds" 2>/dev/null || echo 0)
LONG_SIZES=$([ "$LONG_LENGTHS" = none ] || echo ", lengths $LONG_LENGTHS at depths $LONG_DEPTHS")

"$BUILD/bench_report" --dir "$OUT" --md bench/results/RESULTS.md --svg-prefix bench/results/results \
    --seconds "$secs" --command "bench/results.sh$ARGS" \
    --sizes "compare $TOKENS tokens; passkey lengths $LENGTHS at depths $DEPTHS$LONG_SIZES; GSM8K $PROBLEMS problems scored, $GEN generated (max $MAXNEW tokens)"
# The weight-quantization section (bench/peer_weights.sh writes it) stays at the end.
for part in bench/results/RESULTS_weights.md bench/results/RESULTS_kv_peer.md; do
  if [ -f "$part" ]; then { echo; cat "$part"; } >> bench/results/RESULTS.md; fi
done
echo "bench/results/RESULTS.md written ($secs s)"
