#!/usr/bin/env bash
# bench/peer_weights.sh: what Q8_0 weights do to SmolLM2-135M's predictions, ours beside
# llama.cpp's, on the same tokens: KL(p_f16 || p_q8_0) and top-1 agreement, f16 weights the
# baseline, teacher-forced over the first TOKENS (1,024) tokens of Tiny Shakespeare.
#
#   make all bench && bench/peer_weights.sh       # THREADS=2 TOKENS=1024 by default
#
# llama.cpp's side: llama-quantize (the default model's Q4_1 GGUF -> F16 -> Q8_0), then
# llama-perplexity -c TOKENS --chunks 1 --kl-divergence-base on the F16 GGUF and
# --kl-divergence on the Q8_0 one. llama-perplexity scores only the second half of its chunk
# (positions TOKENS/2 .. TOKENS-2), so build/weights_kl reports that window too, besides every
# position (the figure comparable with `run -m compare --tokens 1024` for KV caches).
# Ours runs on the same weights: f16 exported from the F16 GGUF, q8_0 two ways: quantized by
# export from the F16 GGUF, and copied block for block from llama.cpp's Q8_0 GGUF (so the two
# programs differ there only in their kernels).
#
# The llama.cpp tools come from LLAMA_BIN (default bench/out/llamacpp/build/bin, where the
# llama.cpp side-by-side script builds them). Writes bench/out/peer_weights/peer_weights.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

THREADS=${THREADS:-2}
TOKENS=${TOKENS:-1024}
LLAMA_BIN=${LLAMA_BIN:-bench/out/llamacpp/build/bin}
GGUF_DIR=${GGUF_DIR:-bench/out/llamacpp}
TEXT=${TEXT:-../shared/data/tinyshakespeare.txt}
SRC=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=bench/out/peer_weights
F16=$GGUF_DIR/smollm2-f16.gguf
Q8=$GGUF_DIR/smollm2-q8_0.gguf

for t in llama-quantize llama-perplexity; do
  [ -x "$LLAMA_BIN/$t" ] || { echo "error: $LLAMA_BIN/$t missing (build llama.cpp, or set LLAMA_BIN)" >&2; exit 1; }
done
[ -x build/weights_kl ] && [ -x export/export ] || { echo "error: build first (make all bench)" >&2; exit 1; }
[ -f "$SRC" ] || { echo "error: $SRC missing (make model)" >&2; exit 1; }
mkdir -p "$OUT" "$GGUF_DIR"

# ---- the GGUFs: F16 from the shipped Q4_1 one, Q8_0 from the F16 -------------------------
[ -f "$F16" ] || "$LLAMA_BIN/llama-quantize" --allow-requantize "$SRC" "$F16" F16 >"$OUT/quantize-f16.log" 2>&1
[ -f "$Q8" ] || "$LLAMA_BIN/llama-quantize" "$F16" "$Q8" Q8_0 >"$OUT/quantize-q8_0.log" 2>&1

# ---- ours ----------------------------------------------------------------------------------
./export/export "$F16" "$OUT/ours-f16.bin" --dtype f16 >/dev/null
./export/export "$F16" "$OUT/ours-q8_0.bin" --dtype q8_0 >/dev/null
./export/export "$Q8" "$OUT/ours-q8_0-copied.bin" --dtype q8_0 >/dev/null
ours=$(build/weights_kl "$OUT/ours-f16.bin" "$OUT/ours-q8_0.bin" "$TEXT" --tokens "$TOKENS" --threads "$THREADS" | tail -n 1)
copied=$(build/weights_kl "$OUT/ours-f16.bin" "$OUT/ours-q8_0-copied.bin" "$TEXT" --tokens "$TOKENS" --threads "$THREADS" | tail -n 1)
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' <<<"$2"; }

# ---- llama.cpp -----------------------------------------------------------------------------
"$LLAMA_BIN/llama-perplexity" -m "$F16" -f "$TEXT" -c "$TOKENS" --chunks 1 -t "$THREADS" \
  --kl-divergence-base "$OUT/base.kld" >"$OUT/llama-base.log" 2>&1
"$LLAMA_BIN/llama-perplexity" -m "$Q8" -f "$TEXT" -c "$TOKENS" --chunks 1 -t "$THREADS" \
  --kl-divergence-base "$OUT/base.kld" --kl-divergence >"$OUT/llama-kld.log" 2>&1
lkl=$(awk '/^Mean +KLD:/ {print $3}' "$OUT/llama-kld.log")
ltop=$(awk '/^Same top p:/ {print $4}' "$OUT/llama-kld.log")
[ -n "$lkl" ] || { echo "error: no 'Mean KLD' line in $OUT/llama-kld.log" >&2; exit 1; }

table="$OUT/peer_weights.md"
{
  echo "KL(f16 || q8_0) of SmolLM2-135M-Instruct weights, $TOKENS tokens of $(basename "$TEXT"), $THREADS threads, load at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| program | q8_0 weights | KL, positions $((TOKENS / 2))..$((TOKENS - 2)) | top-1 there | KL, every position | top-1 | ppl f16 -> q8_0 |"
  echo "|---|---|---|---|---|---|---|"
  echo "| kvtuner.c | export --dtype q8_0 of the F16 GGUF | $(field kl_half "$ours") | $(awk -v p="$(field top1_half "$ours")" 'BEGIN{printf "%.1f%%", 100 * p}') | $(field kl "$ours") | $(awk -v p="$(field top1 "$ours")" 'BEGIN{printf "%.1f%%", 100 * p}') | $(field ppl_base "$ours") -> $(field ppl_test "$ours") |"
  echo "| kvtuner.c | llama-quantize's Q8_0, copied | $(field kl_half "$copied") | $(awk -v p="$(field top1_half "$copied")" 'BEGIN{printf "%.1f%%", 100 * p}') | $(field kl "$copied") | $(awk -v p="$(field top1 "$copied")" 'BEGIN{printf "%.1f%%", 100 * p}') | $(field ppl_base "$copied") -> $(field ppl_test "$copied") |"
  echo "| llama.cpp (llama-perplexity --kl-divergence) | llama-quantize Q8_0 | $lkl | $ltop% | — | — | — |"
} >"$table"
cat "$table"
