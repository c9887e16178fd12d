#!/usr/bin/env bash
# bench/peer_kv_kl.sh: quality per bit of a quantized KV cache, ours beside llama.cpp's, on the
# same tokens and the same predictions. Both run the default model's f16 weights (ours exported
# from llama.cpp's F16 GGUF) over the first TOKENS tokens of TEXT; llama-perplexity scores the
# second half of its chunk (positions TOKENS/2 .. TOKENS-2), so ours is read over the same
# window (`run -m compare --kl-from TOKENS/2`). KL(p_fp16-cache || p_quantized-cache), natural
# log, mean over those predictions.
#
#   make all && bench/llamacpp.sh build && bench/llamacpp.sh gguf
#   bench/peer_kv_kl.sh            # ~10 min on 2 cores; TEXT=..., TOKENS=..., THREADS=...
#
# llama.cpp rotates a quantized cache with a Hadamard transform by default (K and Q with
# head_dim-sized blocks, V with 64-blocks, the output rotated back); LLAMA_ATTN_ROT_DISABLE=1
# turns that off, and both are measured. Prints a markdown table; raw logs in bench/out/peer_kv_kl/.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-1024}
TEXT=${TEXT:-data/tinyshakespeare.txt}
OUT=bench/out/peer_kv_kl
F16=bench/out/llamacpp/smollm2-f16.gguf
PPL=$(bench/llamacpp.sh path llama-perplexity)
[ -f "$F16" ] || { echo "error: $F16 missing (bench/llamacpp.sh gguf)" >&2; exit 1; }
[ -x ./run ] && [ -x export/export ] || { echo "error: build first (make all)" >&2; exit 1; }
mkdir -p "$OUT"
[ -f "$OUT/ours-f16.bin" ] || ./export/export "$F16" "$OUT/ours-f16.bin" --dtype f16 >/dev/null
from=$((TOKENS / 2))

"$PPL" -m "$F16" -f "$TEXT" -c "$TOKENS" --chunks 1 -t "$THREADS" -fa on \
  --kl-divergence-base "$OUT/base.kld" >"$OUT/llama-base.log" 2>&1
llama() {   # llama K V ROT -> mean KL
  local log="$OUT/llama-$1-$2-rot$3.log"
  if [ "$3" = 1 ]; then env -u LLAMA_ATTN_ROT_DISABLE "$PPL" -m "$F16" -c "$TOKENS" --chunks 1 -t "$THREADS" -fa on \
      -ctk "$1" -ctv "$2" --kl-divergence-base "$OUT/base.kld" --kl-divergence >"$log" 2>&1
  else LLAMA_ATTN_ROT_DISABLE=1 "$PPL" -m "$F16" -c "$TOKENS" --chunks 1 -t "$THREADS" -fa on \
      -ctk "$1" -ctv "$2" --kl-divergence-base "$OUT/base.kld" --kl-divergence >"$log" 2>&1
  fi
  awk '/^Mean +KLD:/ {print $3}' "$log"
}
ours() {    # ours NAME ARGS... -> "KL bits"
  local name=$1; shift
  ./run "$OUT/ours-f16.bin" -m compare -f "$TEXT" --tokens "$TOKENS" --kl-from "$from" --threads "$THREADS" "$@" \
    >"$OUT/ours-$name.log" 2>&1
  awk '$1 == "kl_from" {kl = $4} $1 == "kl" && $3 == "top1" {for (i = 1; i < NF; i++) if ($i == "kv_bits_per_elem") b = $(i + 1)}
       END {print kl, b}' "$OUT/ours-$name.log"
}

echo "| bits/elem | llama.cpp, rotated | llama.cpp, not rotated | ours, plain | ours, rotated (--kv-rotate) |"
echo "|---|---:|---:|---:|---:|"
row() {   # row LABEL K V OURS-ARGS...
  local label=$1 k=$2 v=$3; shift 3
  local lr lp op orot
  lr=$(llama "$k" "$v" 1); lp=$(llama "$k" "$v" 0)
  op=$(ours "$label-plain" "$@"); orot=$(ours "$label-rot" "$@" --kv-rotate)
  echo "| $label ($k/$v; ours: $*) | $lr | $lp | ${op% *} (${op#* } b) | ${orot% *} |"
}
row 8.5 q8_0 q8_0 --kv kv8 --kv-preset pertoken
row 6.5 q8_0 q4_0 --kv k8v4 --kv-preset pertoken
row 5.0 q4_1 q4_1 --kv kv4 --kv-preset pertoken --kv-group 32
row 4.5 q4_0 q4_0 --kv kv4 --kv-preset pertoken
k=$(ours kivi-kv4 --kv kv4); echo "| KIVI kv4, ours | | | ${k% *} (${k#* } b) | $(ours kivi-kv4-rot --kv kv4 --kv-rotate | cut -d' ' -f1) |"
k=$(ours kivi-k4v2 --kv k4v2); echo "| KIVI k4v2, ours | | | ${k% *} (${k#* } b) | $(ours kivi-k4v2-rot --kv k4v2 --kv-rotate | cut -d' ' -f1) |"
# The tuner's KIVI configs (bench/results/tune/smollm2-kivi-kinds). Of this text they were
# calibrated on its first 256 tokens only: context here, never a scored position.
for b in 3.5 4.5 5.0; do
  k=$(ours "kivi-tuned-$b" --kv-config "bench/results/tune/smollm2-kivi-kinds/kivi-$b.yaml")
  echo "| KIVI tuned $b, ours | | | ${k% *} (${k#* } b) | |"
done
