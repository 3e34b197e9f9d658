#!/usr/bin/env bash
# Fuzzing in CI: build the libFuzzer harnesses (fuzz/) and give each a short
# run (FUZZ_SMOKE_SECONDS, default 20).  Installs clang and libFuzzer
# (libclang-rt-14-dev) with apt-get when `clang -fsanitize=fuzzer` does not
# work yet.  Prints one line per harness, "ok fuzz <name> (<execs> execs)"
# or "FAIL fuzz <name> ..." with the finding; exits non-zero on any crash,
# sanitizer report, leak, timeout or broken invariant.
#
#   bash .ci/fuzz.sh                 every harness
#   bash .ci/fuzz.sh url scopes      some of them
#   FUZZ_SMOKE_SECONDS=60 bash .ci/fuzz.sh
#
# Logs: build/fuzz/logs/<name>.log; crash inputs: build/fuzz/artifacts/.
set -u
cd "$(dirname "$0")/.."

fuzzer_works() {
  local tmp rc
  tmp=$(mktemp -d)
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    >"$tmp/probe.c"
  clang -fsanitize=fuzzer,address,undefined "$tmp/probe.c" -o "$tmp/probe" \
    >/dev/null 2>&1 && "$tmp/probe" -runs=1 >/dev/null 2>&1
  rc=$?
  rm -rf "$tmp"
  return $rc
}

if ! fuzzer_works; then
  echo "installing clang and libFuzzer"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null &&
    $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null &&
    { $sudo apt-get install -y -qq --no-install-recommends libclang-rt-14-dev >/dev/null 2>&1 ||
      $sudo apt-get install -y -qq --no-install-recommends libclang-rt-dev >/dev/null; }
  fuzzer_works || { echo "FAIL fuzz: clang -fsanitize=fuzzer does not work"; exit 1; }
fi

secs=${FUZZ_SMOKE_SECONDS:-20}
names=("$@")
[ ${#names[@]} -gt 0 ] || read -r -a names <<<"$(make -s -f fuzz/fuzz.mk fuzz-list)"

buildlog=$(mktemp)
trap 'rm -f "$buildlog"' EXIT
if ! make -s -f fuzz/fuzz.mk -j"$(nproc 2>/dev/null || echo 2)" fuzz-build \
     >"$buildlog" 2>&1; then
  echo "FAIL fuzz: build"
  tail -n 40 "$buildlog" | sed 's/^/     /'
  exit 1
fi

failed=0
for n in "${names[@]}"; do
  bash fuzz/run.sh "$n" "$secs" || failed=$((failed + 1))
done
[ $failed -eq 0 ] || { echo "$failed fuzz harness(es) failed"; exit 1; }
