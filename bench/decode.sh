#!/usr/bin/env bash
# bench/decode.sh: decode speed of the default model (SmolLM2-135M-Instruct) with f32, f16
# and bf16 weights, after a prompt filling the context to ~512 and ~4096 tokens, plus peak RSS
# and this machine's memory bandwidth (bench/membw.c), to say how close decode comes to the
# bound: every decoded token reads all the weights once, plus the KV cache so far.
#
#   bench/decode.sh                 # THREADS=2 STEPS=64 by default; run `make model` first
#   THREADS=1 STEPS=32 bench/decode.sh
#
# Writes bench/out/decode.md (a markdown table) and prints it. Decode tok/s is the run's
# machine-readable tok_per_s: single-token forward passes per second after the prompt, timed
# apart from the prefill. Run it on a quiet machine: the figures are memory-bound and any
# other load on the cores changes them. With more busy threads than cores, OpenMP's default
# spinning barriers slow decoding down ~50x, so this script sets OMP_WAIT_POLICY=passive
# unless the environment already chooses (on an idle machine `active` may be a little faster).
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
STEPS=${STEPS:-64}
CTXS=${CTXS:-"512 4096"}
DTYPES=${DTYPES:-"f32 f16 bf16"}
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=bench/out
RUN=${RUN:-./run}
EXPORT=${EXPORT:-./export/export}
TEXT=data/tinyshakespeare.txt

[ -x "$RUN" ] && [ -x "$EXPORT" ] || { echo "error: build first (make)" >&2; exit 1; }
[ -f "$GGUF" ] || { echo "error: $GGUF missing (make model)" >&2; exit 1; }
mkdir -p "$OUT"

# ---- memory bandwidth -------------------------------------------------------------------
cc -O2 -fopenmp bench/membw.c -o "$OUT/membw"
bw_line=$("$OUT/membw" 1024 "$THREADS" | tail -n 1)     # read_gbs R copy_gbs C write_gbs W
read_gbs=$(awk '{print $2}' <<<"$bw_line")
echo "memory bandwidth, $THREADS threads: $bw_line"

# ---- models -----------------------------------------------------------------------------
for dt in $DTYPES; do
  m="$OUT/smollm2-135m-$dt.bin"
  [ -f "$m" ] || "$EXPORT" "$GGUF" "$m" --dtype "$dt" >/dev/null
done

# ---- prompts: Tiny Shakespeare cut to ctx - STEPS - 8 tokens ------------------------------
ntok() { "$RUN" "$OUT/smollm2-135m-f16.bin" -m tokenize -f "$1" | wc -w; }
make_prompt() {   # make_prompt TARGET_TOKENS FILE
  local target=$1 file=$2 chars=$(( $1 * 4 )) n
  for _ in 1 2 3 4; do
    head -c "$chars" "$TEXT" >"$file"
    n=$(ntok "$file")
    [ "$n" -le "$target" ] && [ "$n" -ge $(( target - 24 )) ] && break
    chars=$(( chars * target / n - 8 ))
  done
  ntok "$file"
}

declare -A prompt_tokens
for ctx in $CTXS; do
  prompt_tokens[$ctx]=$(make_prompt $(( ctx - STEPS - 8 )) "$OUT/prompt-$ctx.txt")
done

# ---- runs ---------------------------------------------------------------------------------
# KV bytes read per decoded token at context L (fp16 cache): layers * 2 (K,V) * kv_heads * head_dim * 2 B * L
kv_per_tok=$(( 30 * 2 * 3 * 64 * 2 ))
table="$OUT/decode.md"
{
  echo "Decode speed, SmolLM2-135M-Instruct, $THREADS threads, $STEPS greedy tokens after the prompt, fp16 KV cache, OMP_WAIT_POLICY=$OMP_WAIT_POLICY, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Memory bandwidth (bench/membw.c, $THREADS threads, 1 GiB buffers): $bw_line."
  echo
  echo "| weights | context | prompt tokens | prefill tok/s | decode tok/s | bytes read / token | effective GB/s | % of read bandwidth | peak RSS |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >"$table"

for dt in $DTYPES; do
  m="$OUT/smollm2-135m-$dt.bin"
  wbytes=$(stat -c %s "$m")
  for ctx in $CTXS; do
    err="$OUT/run-$dt-$ctx.err"
    /usr/bin/time -v "$RUN" "$m" -f "$OUT/prompt-$ctx.txt" -n "$STEPS" -t 0 --threads "$THREADS" --ctx "$ctx" \
      >/dev/null 2>"$err"
    human=$(grep '^prompt ' "$err")
    machine=$(grep '^tokens ' "$err")
    tps=$(awk '{print $4}' <<<"$machine")
    ptps=$(sed -E 's/.*s \(([0-9.]+) tok\/s\);.*/\1/' <<<"$human")
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$err")
    pt=${prompt_tokens[$ctx]}
    # mean context during decode: prompt + STEPS/2
    bytes=$(( wbytes + kv_per_tok * (pt + STEPS / 2) ))
    eff=$(awk -v b="$bytes" -v t="$tps" 'BEGIN{printf "%.2f", b * t / 1e9}')
    pct=$(awk -v e="$eff" -v r="$read_gbs" 'BEGIN{printf "%.0f", 100 * e / r}')
    printf '| %s | %s | %s | %s | %s | %.1f MB | %s | %s%% | %.0f MB |\n' "$dt" "$ctx" "$pt" "$ptps" "$tps" \
      "$(awk -v b="$bytes" 'BEGIN{print b / 1e6}')" "$eff" "$pct" "$(awk -v k="$rss_kb" 'BEGIN{print k / 1024}')" >>"$table"
    echo "$dt ctx $ctx: $human" >&2
  done
done
cat "$table"
