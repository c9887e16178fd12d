#!/usr/bin/env bash
# Run every check suite in $1 (a build/tests folder) and close with one summary line:
# "tests: N passed, N failed" counted over all suites' checks.
set -u
# Passive OpenMP waiting: busy-waiting threads make suites many times slower on a shared machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
dir=${1:-build/tests}
checks=0; bad=0; failed=()
log=$(mktemp)
for t in "$dir"/test_*; do
  [ -x "$t" ] || continue
  case "$t" in *.o|*.d) continue;; esac
  echo "== $(basename "$t")"
  "$t" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    n=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
    f=$(sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1+\2/' <<<"$line")
    checks=$((checks + n)); bad=$((bad + f))
  fi
  if [ "$rc" -ne 0 ]; then
    failed+=("$(basename "$t")")
    [ -z "$line" ] && bad=$((bad + 1))        # crashed before check could report
  fi
done
rm -f "$log"
[ ${#failed[@]} -gt 0 ] && echo "failing suites: ${failed[*]}"
echo "tests: $((checks - bad)) passed, ${bad} failed"
[ ${#failed[@]} -eq 0 ] && [ "$bad" -eq 0 ]
