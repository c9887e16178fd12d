#!/usr/bin/env bash
# bench/decode_peer.sh: decode speed of the default model (SmolLM2-135M-Instruct) with f16 and
# q8_0 weights, ours beside llama.cpp's llama-bench on the same weights, at THREADS (2)
# threads, with an empty context and after DEPTH (4096) tokens.
#
#   make all && bench/decode_peer.sh        # THREADS=2 STEPS=32 DEPTHS="0 4096" ROUNDS=3
#
# Both sides read the same weights: llama.cpp's GGUFs (the shipped Q4_1 GGUF -> F16 with
# llama-quantize --allow-requantize, F16 -> Q8_0), and ours exported from those GGUFs (its
# Q8_0 tensors are copied block for block, so the q8_0 weights are identical).
#   llama.cpp: llama-bench -t THREADS -p 0 -n STEPS -d 0,DEPTH -r ROUNDS (its tg figure).
#   ours:      run -n STEPS greedy tokens after a prompt of DEPTH tokens of Tiny Shakespeare
#              (1 token for depth 0); decode tok/s is run's tok_per_s (prefill excluded).
# Rounds alternate between the programs, so a change in machine load hits both alike; the
# table gives each side's best and median round. Run it on a quiet machine: other load on the
# cores changes everything.
#
# Threads: llama.cpp's workers poll (spin) between steps by default; ours are OpenMP threads,
# and OMP_WAIT_POLICY=active (the default here) makes them spin likewise. With other jobs on
# the cores use OMP_WAIT_POLICY=passive (a spinning team waits whole scheduler slices for a
# descheduled thread).
#
# The llama.cpp tools come from LLAMA_BIN (default bench/out/llamacpp/build/bin, where
# `bench/llamacpp.sh build` puts them), the GGUFs from GGUF_DIR (bench/out/llamacpp, where
# `bench/llamacpp.sh gguf` writes them; made here the same way if missing). Writes
# bench/out/decode_peer/decode_peer.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-active}

THREADS=${THREADS:-2}
STEPS=${STEPS:-32}
DEPTHS=${DEPTHS:-"0 4096"}
ROUNDS=${ROUNDS:-3}
DTYPES=${DTYPES:-"f16 q8_0"}
LLAMA_BIN=${LLAMA_BIN:-bench/out/llamacpp/build/bin}
GGUF_DIR=${GGUF_DIR:-bench/out/llamacpp}
TEXT=data/tinyshakespeare.txt
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=bench/out/decode_peer
RUN=${RUN:-./run}

for t in llama-quantize llama-bench; do
  [ -x "$LLAMA_BIN/$t" ] || { echo "error: $LLAMA_BIN/$t missing (build llama.cpp, or set LLAMA_BIN)" >&2; exit 1; }
done
[ -x "$RUN" ] && [ -x export/export ] || { echo "error: build first (make)" >&2; exit 1; }
[ -f "$SRC" ] || { echo "error: $SRC missing (make model)" >&2; exit 1; }
mkdir -p "$OUT" "$GGUF_DIR"

# ---- the weights (the GGUFs as bench/llamacpp.sh gguf makes them) -------------------------
gguf() { echo "$GGUF_DIR/smollm2-$1.gguf"; }
[ -f "$(gguf f16)" ] || "$LLAMA_BIN/llama-quantize" --allow-requantize "$SRC" "$(gguf f16)" F16 >"$OUT/quantize-f16.log" 2>&1
[ -f "$(gguf q8_0)" ] || "$LLAMA_BIN/llama-quantize" --allow-requantize "$(gguf f16)" "$(gguf q8_0)" Q8_0 >"$OUT/quantize-q8_0.log" 2>&1
for dt in $DTYPES; do
  [ -f "$OUT/smollm2-$dt.bin" ] || ./export/export "$(gguf "$dt")" "$OUT/smollm2-$dt.bin" --dtype "$dt" >/dev/null
done

# ---- prompts: DEPTH tokens of Tiny Shakespeare -------------------------------------------
ntok() { "$RUN" "$OUT/smollm2-f16.bin" -m tokenize -f "$1" | wc -w; }
for depth in $DEPTHS; do
  p="$OUT/prompt-$depth.txt"
  if [ "$depth" -eq 0 ]; then printf 'The' >"$p"; continue; fi
  chars=$(( depth * 4 ))
  for _ in 1 2 3 4 5 6; do       # cut the text until it is DEPTH tokens, give or take 8
    head -c "$chars" "$TEXT" >"$p"
    n=$(ntok "$p")
    [ "$n" -le "$depth" ] && [ "$n" -ge $(( depth - 8 )) ] && break
    chars=$(( chars * depth / n - 2 ))
  done
done

# ---- rounds --------------------------------------------------------------------------------
results="$OUT/rounds.txt"
: >"$results"
dlist=$(tr ' ' ',' <<<"$DEPTHS")
for r in $(seq "$ROUNDS"); do
  for dt in $DTYPES; do
    for depth in $DEPTHS; do
      p="$OUT/prompt-$depth.txt"
      "$RUN" "$OUT/smollm2-$dt.bin" -f "$p" -n "$STEPS" -t 0 --threads "$THREADS" --ctx $(( depth + STEPS + 64 )) \
        >/dev/null 2>"$OUT/run.err"
      tps=$(awk '/^tokens [0-9]+ tok_per_s/ {print $4}' "$OUT/run.err" | tail -n 1)
      echo "ours $dt $depth $tps" >>"$results"
    done
    # one llama-bench call per round and dtype: every depth, one repetition
    "$LLAMA_BIN/llama-bench" -m "$(gguf "$dt")" -t "$THREADS" -p 0 -n "$STEPS" -d "$dlist" -r 1 -o csv \
      >"$OUT/llama-bench.csv" 2>"$OUT/llama-bench.err"
    python3 - "$OUT/llama-bench.csv" "$dt" >>"$results" <<'EOF'
import csv, sys
for row in csv.DictReader(open(sys.argv[1])):
    if int(row.get("n_gen", 0) or 0) > 0:
        print("llama.cpp", sys.argv[2], row.get("n_depth", "0"), row["avg_ts"])
EOF
  done
done

# ---- the table -------------------------------------------------------------------------------
table="$OUT/decode_peer.md"
{
  echo "Decode tok/s, SmolLM2-135M-Instruct, $THREADS threads, $STEPS tokens, best (median) of $ROUNDS alternating rounds; OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
  echo
  echo "| weights | context | kvtuner.c | llama.cpp | ratio (best) |"
  echo "|---|---|---|---|---|"
  python3 - "$results" "$DTYPES" "$DEPTHS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def pick(prog, dt, depth):
    v = sorted(float(r[3]) for r in rows if r[0] == prog and r[1] == dt and r[2] == depth and r[3] not in ("", "nan"))
    return (max(v), statistics.median(v)) if v else (float("nan"), float("nan"))
for dt in sys.argv[2].split():
    for depth in sys.argv[3].split():
        ob, om = pick("ours", dt, depth)
        lb, lm = pick("llama.cpp", dt, depth)
        print(f"| {dt} | {depth} | {ob:.1f} ({om:.1f}) | {lb:.1f} ({lm:.1f}) | {ob / lb:.2f} |")
EOF
} >"$table"
cat "$table"
