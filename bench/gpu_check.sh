#!/usr/bin/env bash
# gpu_check.sh: the CUDA path's whole check on a GPU machine, in one run of about 5-8 minutes:
#   1. build with nvcc (make cuda) and the CUDA test, harness and benchmark binaries;
#   2. the kernel harness (make cuda-check): every kernel against the CPU code, with GB/s
#      (and make cuda-emulate, the cache kernels' per-thread code on the CPU);
#   3. the parity suite (tests/test_cuda): CUDA vs CPU logits, greedy tokens, cache bytes;
#   4. decode benchmark on the Llama-3-8B shape in bf16 at contexts 1k, 8k, 32k, 128k for
#      fp16, K8V4, KV4 and KV2 caches: tok/s and the fraction of the bandwidth roofline;
#   5. the per-kernel GPU time of one decode step (ncu), to separate kernel time from launches;
#   6. compute-sanitizer's memcheck and racecheck over `run --device cuda` on a tiny model
#      (KVT_SANITIZE=0 skips them).
# The log goes to $OUT/gpu_check.log when OUT is set (else bench/out/), the benchmark lines
# also to cuda_decode.txt beside it. Exit status: non-zero if any step failed.
#
# tests/test_cuda needs the check library. On a GPU machine that cannot install it (no
# network), bring it: `apt-get download check libsubunit-dev libsubunit0` and `dpkg-deb -x` each
# into one folder, and run with DEPS_DIR=that-folder (the Makefile links its static libraries).
#
# The 8B model: random weights of export's llama3-8b shape in bf16, generated on the GPU
# (build_cuda_model_random), because decode speed depends on the shape and dtype only and
# writing then uploading 16 GB costs minutes of GPU time. KVT_EXPORT_8B=1 runs
# `export --random llama3-8b --dtype bf16` instead (needs a Llama-3 tokenizer:
# data/llama3/tokenizer.json or $KVT_LLAMA3_TOKENIZER, and 20 GB of disk).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-bench/out}
mkdir -p "$out"
log="$out/gpu_check.log"
exec > >(tee "$log") 2>&1
status=0
step() { echo; echo "== $*"; date +%T; }
fail() { echo "FAILED: $*"; status=1; }
jobs=$(nproc 2>/dev/null || echo 8)
b=${BUILD:-build}       # the build folder (make's BUILD)

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv 2>/dev/null ||
  echo "(no nvidia-smi)"
nproc
nvcc --version | tail -n 2

step "build (make cuda)"
timeout 300 make -j"$jobs" BUILD="$b" cuda >"$out/build.log" 2>&1 || { tail -n 30 "$out/build.log"; fail "build"; }
grep -E "building with|nvcc not found" "$out/build.log"
grep -iE "warning" "$out/build.log" | head -n 20
timeout 200 make -j"$jobs" BUILD="$b" "$b/cuda_check" "$b/cuda_decode" "$b/tests/test_cuda" >>"$out/build.log" 2>&1 || {
  tail -n 30 "$out/build.log"; fail "build of the CUDA test binaries"; }

step "cache kernels emulated on the CPU (make cuda-emulate)"
timeout 120 make BUILD="$b" cuda-emulate || fail "cuda-emulate"

step "kernel harness (make cuda-check)"
timeout 120 "./$b/cuda_check" || fail "cuda-check"

step "parity suite (tests/test_cuda)"
KVT_BIN_DIR="$b" timeout 300 "./$b/tests/test_cuda" || fail "test_cuda"

step "decode benchmark, Llama-3-8B shape, bf16"
tok=${KVT_LLAMA3_TOKENIZER:-data/llama3/tokenizer.json}
model=""
free_gb=$(df -BG --output=avail "$out" 2>/dev/null | tail -n 1 | tr -dc 0-9)
if [ "${KVT_EXPORT_8B:-0}" = 1 ] && [ -f "$tok" ] && [ "${free_gb:-0}" -gt 20 ]; then
  model="$out/llama3-8b-bf16.bin"
  echo "export --random llama3-8b --dtype bf16 --tokenizer $tok $model"
  timeout 240 "./$b/export" --random llama3-8b --dtype bf16 --tokenizer "$tok" "$model" || { fail "export"; rm -f "$model" "$model.tmp"; model=""; }
fi
args=(--random-shape llama3-8b --dtype bf16)
[ -n "$model" ] && args=("$model") || echo "(weights of the llama3-8b shape generated on the GPU in bf16; KVT_EXPORT_8B=1 exports them with export --random instead)"
timeout 300 "./$b/cuda_decode" "${args[@]}" --ctx 1024,8192,32768,131072 --kv fp16,k8v4,kv4,kv2 --kv-preset kivi \
  --steps 16 | tee "$out/cuda_decode.txt" || fail "cuda_decode"
[ -n "$model" ] && rm -f "$model"

step "per-kernel GPU time of one decode step (ncu), Llama-3-8B shape at 8192, fp16 and kv4"
# Each kernel's own duration (ncu serialises them): their sum against the step's wall time
# above says how much of a step is spent between kernels (launches) rather than in them.
if command -v ncu >/dev/null; then
  for kv in fp16 kv4; do
    timeout 100 ncu --clock-control none --cache-control none --print-units base --launch-skip 250 \
      --metrics gpu__time_duration.sum --csv --page raw \
      "./$b/cuda_decode" --random-shape llama3-8b --dtype bf16 --ctx 8192 --kv $kv --steps 1 >"$out/ncu-$kv.csv" 2>"$out/ncu.err" ||
      { tail -n 5 "$out/ncu.err"; fail "ncu ($kv)"; }
    # the last decode step: the kernels from its embedding lookup on
    python3 - "$out/ncu-$kv.csv" "$kv" <<'PY' || fail "ncu summary"
import csv, sys, re, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
head = rows[0]; ki = head.index("Kernel Name"); ti = head.index("gpu__time_duration.sum")
ks = [(r[ki], float(r[ti].replace(",", ""))) for r in rows[1:] if len(r) == len(head) and re.match(r"[0-9.,]+$", r[ti])]
starts = [i for i, (n, _) in enumerate(ks) if "embed_kernel" in n]
step = ks[starts[-1]:]
tot = collections.Counter(); cnt = collections.Counter()
for n, t in step:
    key = re.split(r"[<(]", n)[0]; tot[key] += t; cnt[key] += 1
unit = 1e-3
print(f"{sys.argv[2]}: {len(step)} kernels, {sum(t for _, t in step) * unit / 1e3:.3f} ms of GPU time in the last step")
for key, t in tot.most_common(14): print(f"  {key:40s} {cnt[key]:4d} launches {t * unit:9.1f} us")
PY
  done
else
  echo "(ncu not on PATH: per-kernel times not measured)"
fi

step "memory and race checks (compute-sanitizer) on a tiny random model"
if [ "${KVT_SANITIZE:-1}" = 0 ]; then
  echo "(KVT_SANITIZE=0: not run)"
elif command -v compute-sanitizer >/dev/null; then
  tiny="$out/tiny-f16.bin"
  timeout 60 "./$b/export" --random tiny --dtype f16 --tokenizer data/llama3/tokenizer.json "$tiny" >/dev/null || fail "export tiny"
  # head_dim 16: groups of 16; 48 steps wrap the fp16 window (R = 32) so blocks get quantized
  for kv in "--kv fp16" "--kv kv4 --kv-preset pertoken --kv-group 16" \
            "--kv k4v2 --kv-group 16 --kv-residual 32 --kv-key-axis channel --kv-sink 3"; do
    echo "memcheck: run $kv"
    timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
      "./$b/run" "$tiny" --device cuda -i "The cat sat on the mat" -n 48 -t 0 $kv >"$out/memcheck.txt" 2>&1 ||
      { tail -n 25 "$out/memcheck.txt"; fail "memcheck ($kv)"; }
    grep -E "ERROR SUMMARY" "$out/memcheck.txt"
  done
  echo "racecheck: run --kv k4v2 kivi"
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 5 \
    "./$b/run" "$tiny" --device cuda -i "The cat sat on the mat" -n 40 -t 0 --kv k4v2 --kv-group 16 --kv-residual 32 \
    --kv-key-axis channel >"$out/racecheck.txt" 2>&1 || { tail -n 25 "$out/racecheck.txt"; fail "racecheck"; }
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$out/racecheck.txt"
  rm -f "$tiny"
else
  echo "(compute-sanitizer not on PATH: memory and race checks not run)"
fi

step "summary"
awk '/^ctx / { printf "ctx %7s %-5s %5s bits  %8s tok/s  roofline %8s tok/s  %5.1f%%\n", $2, $4, $6, $8, $16, 100*$18 }' \
  "$out/cuda_decode.txt" 2>/dev/null
# speedup of each cache over fp16 at the same context, against its bandwidth bound
awk '/^ctx / { t[$2","$4]=$8; r[$2","$4]=$16; c[$2]=1; k[$4]=1 }
     END { for (x in c) for (y in k) if (y != "fp16" && t[x",fp16"] > 0)
             printf "ctx %7s %-5s speedup %.2fx  bound %.2fx  (%.0f%% of the bound)\n", x, y, t[x","y]/t[x",fp16"],
                    r[x","y]/r[x",fp16"], 100*(t[x","y]/t[x",fp16"])/(r[x","y]/r[x",fp16"]) }' "$out/cuda_decode.txt" 2>/dev/null | sort -n -k2
echo
[ $status -eq 0 ] && echo "gpu_check: all steps passed" || echo "gpu_check: some steps FAILED"
exit $status
