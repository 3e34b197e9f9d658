#!/usr/bin/env bash
# fuzz/run.sh [--regress] NAME SECONDS [libFuzzer args...]
#
# Runs build/fuzz/fuzz_NAME for SECONDS over its seeds (fuzz/corpus/NAME,
# read only) and a working corpus that grows across runs
# (build/fuzz/corpus/NAME), with fuzz/dict/NAME.dict when there is one.
# --regress instead runs every seed and every saved reproducer
# (fuzz/crashes/NAME) once.
#
# Prints "ok fuzz NAME (N execs)" or "FAIL fuzz NAME ..." with the end of
# the log; exits non-zero on any crash, sanitizer report, leak, timeout or
# broken invariant.  The full log is build/fuzz/logs/NAME.log, crash inputs
# land in build/fuzz/artifacts/NAME/, and build/fuzz/summary.txt collects
# one line of libFuzzer's final stats per run.
#
# Environment: FUZZ_DIR (build/fuzz), FUZZ_MAX_LEN (8192), FUZZ_ALLOW and
# FUZZ_HARDENING (see fuzz/fuzz.h).
set -u
cd "$(dirname "$0")/.."

regress=0
if [ "${1:-}" = "--regress" ]; then regress=1; shift; fi
if [ $# -lt 2 ]; then
  echo "usage: fuzz/run.sh [--regress] NAME SECONDS [libFuzzer args...]" >&2
  exit 2
fi
name=$1 secs=$2
shift 2

dir=${FUZZ_DIR:-build/fuzz}
bin=$dir/fuzz_$name
work=$dir/corpus/$name
art=$dir/artifacts/$name
log=$dir/logs/$name${FUZZ_LOG_SUFFIX:-}.log
mkdir -p "$work" "$art" "$dir/logs"
[ -x "$bin" ] || { echo "FAIL fuzz $name: $bin is not built"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

args=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$art/")
[ -f "fuzz/dict/$name.dict" ] && args+=(-dict="fuzz/dict/$name.dict")

if [ $regress = 1 ]; then
  inputs=()
  for d in "fuzz/corpus/$name" "fuzz/crashes/$name"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do [ -f "$f" ] && inputs+=("$f"); done
  done
  if [ ${#inputs[@]} -eq 0 ]; then echo "ok fuzz $name (0 execs)"; exit 0; fi
  "$bin" "${args[@]}" "$@" "${inputs[@]}" >"$log" 2>&1
  rc=$?
  execs=${#inputs[@]}
else
  seeds=()
  [ -d "fuzz/corpus/$name" ] && seeds+=("fuzz/corpus/$name")
  start=$(date +%s)
  "$bin" "${args[@]}" -max_total_time="$secs" -max_len="${FUZZ_MAX_LEN:-8192}" \
    "$@" "$work" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1)
  cov=$(printf '%s\n' "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(printf '%s\n' "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  corp=$(printf '%s\n' "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
  printf '%-16s %5ss %10s execs  cov %-5s ft %-6s corp %-12s exit %s\n' \
    "$name" "$elapsed" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$rc" \
    >>"$dir/summary.txt"
fi

if [ $rc -eq 0 ] && ! grep -qE '^(==[0-9]+==ERROR|SUMMARY: (Address|Undefined|Leak)|ecw-fuzz: invariant)' "$log"; then
  echo "ok fuzz $name (${execs:-?} execs)"
  exit 0
fi
echo "FAIL fuzz $name (exit $rc; log $log)"
grep -E '^(ecw-fuzz: invariant|SUMMARY:|==[0-9]+==ERROR)|runtime error:|^artifact_prefix|Test unit written' "$log" |
  head -n 20 | sed 's/^/     /'
tail -n 30 "$log" | sed 's/^/   | /'
exit 1
