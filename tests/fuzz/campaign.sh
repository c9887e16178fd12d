#!/usr/bin/env bash
# campaign.sh: the long fuzzing run behind the README's table. One harness at a time (the
# machine is shared), at the lowest priority, each until RUNS executions or SECONDS_CAP
# seconds, whichever comes first; logs and the working corpus under build-fuzz/.
#   bash tests/fuzz/campaign.sh [NAME...]        (default: every harness; `make fuzz-build` first)
#   RUNS=10000000 SECONDS_CAP=86400 TIMEOUT=60 are the defaults (TIMEOUT: seconds of wall time
#   before an input counts as a hang; generous, because at nice 19 on a shared machine the
#   process can wait tens of seconds for a core).
# Prints one line per harness: executions, seconds, exec/s, corpus files and bytes, result.
set -u
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-10000000}
SECONDS_CAP=${SECONDS_CAP:-86400}
TIMEOUT=${TIMEOUT:-60}
names=${*:-gguf safetensors modelbin tokblob tokenizer_json tiktoken kvconfig prompt quantize}
mkdir -p build-fuzz/campaign
export KVT_FUZZ_SMOLLM2=${KVT_FUZZ_SMOLLM2:-models/tiny.bin}
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=10}
for t in $names; do
  mkdir -p build-fuzz/corpus/"$t"
  log=build-fuzz/campaign/$t.log
  start=$(date +%s)
  nice -n 19 ./build-fuzz/fuzz_"$t" -runs="$RUNS" -max_total_time="$SECONDS_CAP" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -print_final_stats=1 -artifact_prefix=build-fuzz/campaign/"$t"- \
    build-fuzz/corpus/"$t" tests/fuzz/corpus/"$t" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  files=$(find build-fuzz/corpus/"$t" -type f | wc -l)
  bytes=$(du -sb build-fuzz/corpus/"$t" | cut -f1)
  result=$([ "$rc" = 0 ] && echo ok || echo "FAILED rc=$rc: $(grep -m1 -E 'ERROR|property broken' "$log")")
  echo "$t execs ${execs:-?} seconds $secs exec_per_s $(( ${execs:-0} / (secs > 0 ? secs : 1) )) corpus_files $files corpus_bytes $bytes $result" \
    | tee -a build-fuzz/campaign/summary.txt
done
