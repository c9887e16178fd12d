#!/usr/bin/env bash
# bench/llama3_8b_shape.sh: the full Llama-3-8B shape on this machine: export, load, decode.
# The real weights are not reachable here, so `export --random llama3-8b` writes a random-weight
# model of exactly that shape (32 layers, dim 4096, 32 heads / 8 KV heads, FFN 14336, vocab
# 128256, rope theta 500000, Llama-3.1 scaling) with bf16 weights and the real Llama-3 tokenizer;
# then `run` generates a few tokens at context 8192. Not part of `make test`: a 16 GB file.
#
#   bench/llama3_8b_shape.sh            # STEPS=8 THREADS=2 CTX=8192 by default
#
# Reports: file size, export time, the whole run's wall time (the mmap is touched lazily, so
# the prefill pages the weights in), decode tok/s, peak RSS (must fit in 24 GB with the cache),
# and the KV-cache bytes: run sizes its cache for prompt + steps, so the figure at context 8192
# comes from the shape (32 x 8 x 128 x 2 x 2 bytes per token), beside run's own accounting.
# Writes bench/out/llama3_8b_shape.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-8}
THREADS=${THREADS:-2}
CTX=${CTX:-8192}
MODEL=${MODEL:-models/llama3-8b-random-bf16.bin}
TOK=data/llama3/tokenizer.json
RUN=${RUN:-./run}
EXPORT=${EXPORT:-./export/export}
OUT=bench/out
mkdir -p "$OUT"
[ -x "$RUN" ] && [ -x "$EXPORT" ] || { echo "error: build first (make)" >&2; exit 1; }

export_s="(already there)"
if [ ! -f "$MODEL" ]; then
  t0=$(date +%s.%N)
  "$EXPORT" --random llama3-8b --dtype bf16 --tokenizer "$TOK" "$MODEL"
  export_s=$(echo "$(date +%s.%N) - $t0" | bc)
fi
size=$(stat -c %s "$MODEL")

log="$OUT/llama3_8b_shape.log"
t0=$(date +%s.%N)
/usr/bin/time -v "$RUN" "$MODEL" -i "The capital of France is" -n "$STEPS" -t 0 --ctx "$CTX" --threads "$THREADS" \
  >"$OUT/llama3_8b_shape.out" 2>"$log"
wall=$(echo "$(date +%s.%N) - $t0" | bc)

last=$(grep -E '^tokens [0-9]+ tok_per_s' "$log" | tail -n 1)       # docs/DESIGN.md §4 machine-readable line
toks=$(awk '{print $2}' <<<"$last"); tps=$(awk '{print $4}' <<<"$last"); kvb=$(awk '{print $6}' <<<"$last")
rss_kb=$(grep 'Maximum resident set size' "$log" | awk '{print $NF}')
# The cache is allocated for the whole context: its bytes at CTX follow from the shape
# (32 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes x CTX), next to what run printed.
kv_formula=$(( 32 * 8 * 128 * 2 * 2 * CTX ))

{
  echo "## Llama-3-8B shape, random bf16 weights ($(date -u +%Y-%m-%d), $(nproc) cores, $THREADS threads)"
  echo
  echo "| what | value |"
  echo "|---|---|"
  echo "| file | $MODEL, $(echo "scale=2; $size / 1000000000" | bc) GB |"
  echo "| export time | ${export_s} s |"
  echo "| whole run (load + prefill + $toks tokens) | $(printf %.1f "$wall") s |"
  echo "| decode | $tps tok/s |"
  echo "| peak RSS | $(echo "scale=2; $rss_kb / 1048576" | bc) GiB |"
  echo "| KV cache bytes in use after the run (run's accounting) | $kvb |"
  echo "| fp16 KV cache at context $CTX (formula) | $kv_formula ($(echo "scale=2; $kv_formula / 1073741824" | bc) GiB) |"
  echo
  echo "run's own stderr lines:"
  echo '```'
  grep -v -E '^[[:space:]]' "$log" | grep -v '^Command being timed' || true
  echo '```'
} | tee "$OUT/llama3_8b_shape.md"
