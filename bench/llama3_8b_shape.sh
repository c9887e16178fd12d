#!/usr/bin/env bash
# bench/llama3_8b_shape.sh: the full Llama-3-8B shape on this machine: export, load, decode.
# The real weights are not reachable here, so `export --random llama3-8b` writes a random-weight
# model of exactly that shape (32 layers, dim 4096, 32 heads / 8 KV heads, FFN 14336, vocab
# 128256, rope theta 500000, Llama-3.1 scaling) with DTYPE weights (bf16: 16.1 GB; q8_0: 8.5 GB)
# and the real Llama-3 tokenizer; then `run` generates a few tokens at context 8192. Not part of
# `make test`: a file of many GB.
#
#   bench/llama3_8b_shape.sh                  # DTYPE=bf16 STEPS=8 THREADS=2 CTX=8192 by default
#   DTYPE=q8_0 STEPS=16 bench/llama3_8b_shape.sh
#
# Reports: file size, export time, a first run's wall time (the mmap is touched lazily: it pages
# the weights in, from disk unless they are in the page cache), then a second run's decode tok/s
# and peak RSS (weights are mmap'd, so RSS counts the pages touched: all of them), the bytes one
# decode step reads (every matrix, the classifier, the KV cache so far; the embedding table is
# not read, only one row of it), this machine's read bandwidth with THREADS threads
# (bench/membw.c, 1 GiB buffers) and the share of it that decode reaches. With the page cache
# too small for the weights, decode reads from disk and the share is meaningless: the script
# says so. Writes bench/out/llama3_8b_shape-DTYPE.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."

DTYPE=${DTYPE:-bf16}
STEPS=${STEPS:-8}
THREADS=${THREADS:-2}
CTX=${CTX:-8192}
SHAPE=${SHAPE:-llama3-8b}
MODEL=${MODEL:-models/${SHAPE/llama3-8b/llama3-8b-random}-$DTYPE.bin}
TOK=data/llama3/tokenizer.json
RUN=${RUN:-./run}
EXPORT=${EXPORT:-./export/export}
PROMPT="The capital of France is"
OUT=bench/out
mkdir -p "$OUT"
[ -x "$RUN" ] && [ -x "$EXPORT" ] || { echo "error: build first (make)" >&2; exit 1; }

export_s="(already there)"
if [ ! -f "$MODEL" ]; then
  t0=$(date +%s.%N)
  "$EXPORT" --random "$SHAPE" --dtype "$DTYPE" --tokenizer "$TOK" "$MODEL"
  export_s=$(printf %.0f "$(echo "$(date +%s.%N) - $t0" | bc)")
fi
size=$(stat -c %s "$MODEL")

# ---- bandwidth ----------------------------------------------------------------------------
cc -O2 -fopenmp bench/membw.c -o "$OUT/membw"
bw_line=$("$OUT/membw" 1024 "$THREADS" | tail -n 1)     # read_gbs R copy_gbs C write_gbs W
read_gbs=$(awk '{print $2}' <<<"$bw_line")

# ---- runs: the first pages the weights in, the second is measured -------------------------
log="$OUT/llama3_8b_shape-$DTYPE.log"
t0=$(date +%s.%N)
"$RUN" "$MODEL" -i "$PROMPT" -n 1 -t 0 --ctx "$CTX" --threads "$THREADS" >/dev/null 2>"$log.first"
first=$(echo "$(date +%s.%N) - $t0" | bc)
/usr/bin/time -v "$RUN" "$MODEL" -i "$PROMPT" -n "$STEPS" -t 0 --ctx "$CTX" --threads "$THREADS" \
  >"$OUT/llama3_8b_shape-$DTYPE.out" 2>"$log"

last=$(grep -E '^tokens [0-9]+ tok_per_s' "$log" | tail -n 1)       # docs/DESIGN.md §4 machine-readable line
toks=$(awk '{print $2}' <<<"$last"); tps=$(awk '{print $4}' <<<"$last"); kvb=$(awk '{print $6}' <<<"$last")
rss_kb=$(grep 'Maximum resident set size' "$log" | awk '{print $NF}')
major=$(grep 'Major (requiring I/O) page faults' "$log" | awk '{print $NF}')
prompt_tokens=$(sed -nE 's/^prompt ([0-9]+) tokens.*/\1/p' "$log" | head -n 1)

# Bytes one decode step reads, from the file's header (model/modelbin.h): every matrix and the
# classifier, in the file's dtype, and the fp16 KV cache at the mean decode position.
read -r wbytes kv_ctx < <(python3 - "$MODEL" "${prompt_tokens:-6}" "$STEPS" "$CTX" <<'EOF'
import struct, sys
h = open(sys.argv[1], "rb").read(80)
dim, hidden, layers, heads, kv_heads, hd, vocab = struct.unpack_from("<7i", h, 8)
wdtype = struct.unpack_from("<i", h, 72)[0]
def row(n): return n // 32 * 34 if wdtype == 3 else n * (4 if wdtype == 0 else 2)
per_layer = (heads * hd + 2 * kv_heads * hd + dim) * row(dim) + 2 * hidden * row(dim) + dim * row(hidden)
w = layers * per_layer + vocab * row(dim)
kv_pos = layers * kv_heads * hd * 2 * 2               # K and V, fp16
ctx = int(sys.argv[4])
print(w + kv_pos * (int(sys.argv[2]) + int(sys.argv[3]) // 2), kv_pos * ctx)
EOF
)
mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
eff=$(awk -v b="$wbytes" -v t="$tps" 'BEGIN{printf "%.2f", b * t / 1e9}')
share=$(awk -v e="$eff" -v r="$read_gbs" 'BEGIN{printf "%.0f%%", 100 * e / r}')
note=""
[ "${major:-0}" -gt 1000 ] && note=" (the measured run had $major major page faults: weights were read from disk, not memory)"

{
  echo "## Llama-3-8B shape, random $DTYPE weights ($(date -u +%Y-%m-%d), $(nproc) cores, $THREADS threads, $(awk -v k="$mem_kb" 'BEGIN{printf "%.0f", k / 1048576}') GiB RAM, load average at the end $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "| what | value |"
  echo "|---|---|"
  echo "| file | $MODEL, $(awk -v b="$size" 'BEGIN{printf "%.2f", b / 1e9}') GB |"
  echo "| export time | ${export_s} s |"
  echo "| first run (pages the weights in; load + prefill + 1 token) | $(printf %.1f "$first") s |"
  echo "| decode, second run ($toks tokens) | $tps tok/s |"
  echo "| peak RSS | $(awk -v k="$rss_kb" 'BEGIN{printf "%.2f", k / 1048576}') GiB |"
  echo "| bytes read per decoded token (matrices + classifier + KV) | $(awk -v b="$wbytes" 'BEGIN{printf "%.2f GB", b / 1e9}') |"
  echo "| read bandwidth, $THREADS threads (bench/membw.c) | $read_gbs GB/s ($bw_line) |"
  echo "| decode's share of it | $eff GB/s = $share$note |"
  echo "| KV cache bytes in use after the run (run's accounting) | $kvb |"
  echo "| fp16 KV cache at context $CTX (formula) | $kv_ctx ($(awk -v b="$kv_ctx" 'BEGIN{printf "%.2f", b / 1073741824}') GiB) |"
  echo
  echo "run's own stderr lines:"
  echo '```'
  grep -v -E '^[[:space:]]' "$log" | grep -v '^Command being timed' || true
  echo '```'
} | tee "$OUT/llama3_8b_shape-$DTYPE.md"
