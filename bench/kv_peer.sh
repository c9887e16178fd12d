#!/usr/bin/env bash
# bench/kv_peer.sh: decode speed with a quantized KV cache, ours beside llama.cpp's, on the
# default model's f16 weights, at THREADS (2) threads: at a context of DEPTH (8192) tokens
# and at a short one. For each row: tok/s, the ratio to the same program's f16 cache, the
# bytes one decoded token reads (weights + the whole cache) and the fraction of this
# machine's measured read bandwidth that makes.
#
#   make all bench && bench/llamacpp.sh build && bench/llamacpp.sh gguf
#   bench/kv_peer.sh            # THREADS=2 STEPS=32 DEPTH=8192; ~15 min on 2 quiet cores
#
#   llama.cpp: llama-bench -t THREADS -fa 1 -p 0 -n STEPS -d 0,DEPTH -ctk T -ctv T -r 1, for
#              T in f16, q8_0, q4_0 (its default Hadamard rotation is on for the quantized caches)
#   ours:      build/kv_decode (bench/kv_decode.c) at DEPTH: every preset and spec, the cache
#              filled with the model's own K/V rows, STEPS greedy steps, best of 3 rounds;
#              short context: `run -i The -n STEPS`, fp16 cache.
# llama-bench reaches DEPTH by a real prefill; kv_decode fills the cache with real rows instead
# (decode reads the same bytes either way). Rounds alternate between the programs. Run it on
# a quiet machine: the load average at the end is printed with the table.
#
# Bytes per token: weights as kv_decode counts them (every matrix, one embedding row) plus
# DEPTH cached tokens at each cache's exact bytes per token (ours: kvcache_memory; llama.cpp:
# f16 2, q8_0 34/32, q4_0 18/32 bytes per element). Bandwidth: build/membw's read figure at
# THREADS threads. Writes bench/out/kv_peer/kv_peer.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-active}
THREADS=${THREADS:-2}
STEPS=${STEPS:-32}
DEPTH=${DEPTH:-8192}
ROUNDS=${ROUNDS:-2}
MODEL=models/smollm2-135m-instruct.bin
F16=bench/out/llamacpp/smollm2-f16.gguf
OUT=bench/out/kv_peer
BENCH=$(bench/llamacpp.sh path llama-bench)
for f in build/kv_decode build/membw ./run; do
  [ -x "$f" ] || { echo "error: $f missing (make all bench)" >&2; exit 1; }
done
[ -f "$F16" ] || { echo "error: $F16 missing (bench/llamacpp.sh gguf)" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "error: $MODEL missing (make model)" >&2; exit 1; }
mkdir -p "$OUT"
rows="$OUT/rows.txt"
: >"$rows"

bw=$(build/membw 1024 "$THREADS" | awk '$1 == "read_gbs" {print $2}')      # GB/s
for r in $(seq "$ROUNDS"); do
  for t in f16 q8_0 q4_0; do
    "$BENCH" -m "$F16" -t "$THREADS" -fa 1 -p 0 -n "$STEPS" -d "0,$DEPTH" -ctk "$t" -ctv "$t" -r 1 -o csv \
      >"$OUT/llama-$t.csv" 2>"$OUT/llama-$t.err"
    python3 - "$OUT/llama-$t.csv" "$t" >>"$rows" <<'EOF'
import csv, sys
for row in csv.DictReader(open(sys.argv[1])):
    print("llama.cpp", "-", sys.argv[2], row["n_depth"], row["avg_ts"])
EOF
  done
  OMP_NUM_THREADS=$THREADS build/kv_decode "$MODEL" data/tinyshakespeare.txt "$STEPS" "$DEPTH" >"$OUT/kv_decode.txt"
  awk '/^# weights read per token:/ {print "weights", $6} $3 ~ /^[0-9]+$/ {print "ours", $1, $2, $3, $4, $6}' \
    "$OUT/kv_decode.txt" >>"$rows"
  ./run "$MODEL" -i The -n "$STEPS" -t 0 --threads "$THREADS" 2>&1 >/dev/null |
    awk '/^tokens [0-9]+ tok_per_s/ {print "ours", "-", "fp16", 0, $4}' >>"$rows"
done

python3 - "$rows" "$bw" "$DEPTH" "$THREADS" "$STEPS" "$ROUNDS" >"$OUT/kv_peer.md" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
bw, depth = float(sys.argv[2]) * 1e9, int(sys.argv[3])
wbytes = float(next(r[1] for r in rows if r[0] == "weights"))
elems = None   # K/V elements per cached token: from our fp16 row (2 bytes each)
best, kvb = {}, {}
for r in rows:
    if r[0] == "weights":
        continue
    key = (r[0], r[1], r[2], int(r[3]))
    best[key] = max(best.get(key, 0.0), float(r[4]))
    if len(r) > 5:
        kvb[key] = int(r[5])
fp16_kvb = kvb[("ours", "pertoken", "fp16", depth)]
per_elem = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
for t, b in per_elem.items():
    kvb[("llama.cpp", "-", t, depth)] = int(fp16_kvb / 2 * b)
print(f"Decode at {sys.argv[4]} threads, {sys.argv[5]} steps, best of {sys.argv[6]} alternating rounds; "
      f"read bandwidth {bw / 1e9:.1f} GB/s (build/membw); weights {wbytes / 1e6:.1f} MB read per token.\n")
print("| program | cache | context | tok/s | vs its f16 cache | MB read per token | of read bandwidth |")
print("|---|---|---:|---:|---:|---:|---:|")
order = [("llama.cpp", "-", t) for t in ("f16", "q8_0", "q4_0")] + \
        [("ours", p, k) for p in ("pertoken", "kivi") for k in ("fp16", "kv8", "k8v4", "kv4", "k4v2", "kv2")] + \
        [("ours", "-", "fp16")]
for prog, preset, kv in order:
    for d in (depth, 0):
        key = (prog, preset, kv, d)
        if key not in best:
            continue
        base = best.get((prog, preset if prog == "ours" else "-", "fp16" if prog == "ours" else "f16", d))
        mb = (wbytes + kvb.get(key, 0) * d) / 1e6
        name = kv if preset == "-" else f"{preset} {kv}"
        print(f"| {prog} | {name} | {d} | {best[key]:.1f} | {best[key] / base:.2f}× | {mb:.1f} | "
              f"{best[key] * mb * 1e6 / bw:.0%} |")
EOF
{ cat "$OUT/kv_peer.md"; echo; echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."; } | tee "$OUT/kv_peer.full.md"
