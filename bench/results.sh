#!/usr/bin/env bash
# bench/results.sh: the KV-cache quality results of issue 5 for the default model, in one
# command: bench/RESULTS.md and the SVG plots bench/results_kl.svg, bench/results_passkey_*.svg.
#
#   make results                                   # full size (the default; see the time below)
#   make results RESULTS_FLAGS="--tokens 512 --lengths 1024,2048 --depths 0.5 --problems 4 --gen-problems 2"
#   bench/results.sh [flags]                       # the same, after `make all build/passkey build/gsm8k build/bench_report`
#
# Flags (defaults = the full protocol):
#   --tokens N          tokens of Shakespeare per `run -m compare` (1024)
#   --lengths LIST      passkey prompt lengths (1024,2048,4096,8192)
#   --depths LIST       passkey needle depths (0.1,0.3,0.5,0.7,0.9)
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
# Time: the full size is about 1.2M token forward passes (passkey 13 configurations x 3.4 x
# 15k tokens: per length the prefix up to the deepest needle, 0.9, shared by the 5 depths, and
# their tails, 2.5; GSM8K 13 x 200 x (~150 scored + ~40 greedy, up to 192); compare 13 x 2 x
# 1024).
# Measured on the 2-core development machine (idle apart from this run, three processes side
# by side), with block prefill attention (kernels/attention.c) and batched greedy decoding:
#   - one passkey prompt of 1k / 2k / 4k / 8k tokens takes ~11 / 19 / 60 / 115 s per
#     configuration (prefill, key scoring and greedy together); with 5 depths sharing the
#     haystack prefix a length costs ~3.4 prompts;
#   - GSM8K: 40 problems (all greedy-decoded, 16 per step) take 66-78 s per configuration;
#   - compare: 13 configurations x 1,024 tokens take ~2 minutes.
# So the full size is about 3 hours on 2 idle cores: passkey ~2 h (8k prompts ~85 min),
# GSM8K ~1 h, compare a few minutes. The run in bench/RESULTS.md (one depth, 40 problems)
# took the time it states there.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/smollm2-135m-instruct.bin}
BUILD=${BUILD:-build}
TOKENS=1024 LENGTHS=1024,2048,4096,8192 DEPTHS=0.1,0.3,0.5,0.7,0.9
PROBLEMS=200 GEN=200 MAXNEW=192 KVS=fp16,kv8,k8v4,k4v8,kv4,k4v2,kv2 PRESETS=pertoken,kivi
RUN=${RUN:-./run} DO_RUN=1 DO_REPORT=1
ARGS=$(printf ' %s' "$@" | sed -e 's/ --report-only//; s/ --no-report//')   # the sizes, for RESULTS.md
while [ $# -gt 0 ]; do
  case "$1" in
    --report-only) DO_RUN=0; shift; continue;;
    --no-report) DO_REPORT=0; shift; continue;;
    --tokens) TOKENS=$2;; --lengths) LENGTHS=$2;; --depths) DEPTHS=$2;;
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
head -c 560000 ../shared/data/tinyshakespeare.txt | tail -c 60000 > "$OUT/compare_text.txt"

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
"$BUILD/passkey" "$MODEL" --kv "$KVS" --presets "$PRESETS" --lengths "$LENGTHS" --depths "$DEPTHS" \
    --out "$OUT/passkey.tsv" 2> "$OUT/passkey.log" &
pid_p=$!
"$BUILD/gsm8k" "$MODEL" --kv "$KVS" --presets "$PRESETS" --problems "$PROBLEMS" --gen-problems "$GEN" \
    --max-new "$MAXNEW" --out "$OUT/gsm8k.tsv" 2> "$OUT/gsm8k.log" &
pid_g=$!
fail=0
wait $pid_c || fail=1
wait $pid_p || { fail=1; tail -n 3 "$OUT/passkey.log" >&2; }
wait $pid_g || { fail=1; tail -n 3 "$OUT/gsm8k.log" >&2; }
[ $fail = 0 ] || { echo "error: bench/results.sh: a benchmark failed (logs in $OUT)" >&2; exit 1; }
secs=$(( $(date +%s) - start ))
echo "$secs" > "$OUT/seconds"
fi
[ $DO_REPORT = 1 ] || exit 0
secs=$(cat "$OUT/seconds" 2>/dev/null || echo 0)

"$BUILD/bench_report" --dir "$OUT" --md bench/RESULTS.md --svg-prefix bench/results \
    --seconds "$secs" --command "bench/results.sh$ARGS" \
    --sizes "compare $TOKENS tokens; passkey lengths $LENGTHS, depths $DEPTHS; GSM8K $PROBLEMS problems scored, $GEN generated (max $MAXNEW tokens)"
echo "bench/RESULTS.md written ($secs s)"
