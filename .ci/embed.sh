#!/usr/bin/env bash
# Builds what spec/embed_spec.lua (issue 4, the embedding proof) needs, for
# .ci/run to call before busted:
#   build/5.4, build/5.3                           module + ecw-host (plain)
#   build/5.4-thread, build/5.3-thread             ThreadSanitizer (clang)
#   build/5.4-address,undefined, build/5.3-...     AddressSanitizer + UBSan
# and makes sure clang, valgrind and binutils (readelf, nm, objdump) are
# there.  The spec fails under CI=true when any of these is missing.
#
#   bash .ci/embed.sh               install what is missing, then build
#   bash .ci/embed.sh --no-install  build only
#   EMBED_LUA="5.4" bash .ci/embed.sh   one Lua version
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--no-install" ]; then
  missing=()
  for p in clang valgrind binutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

for tool in clang valgrind readelf nm objdump ldd; do
  command -v "$tool" >/dev/null || { echo "embed.sh: $tool is missing" >&2; exit 1; }
done

jobs=$(nproc 2>/dev/null || echo 2)
for v in ${EMBED_LUA:-5.4 5.3}; do
  make -s -j"$jobs" LUA_VERSION="$v" all host
  make -s -j"$jobs" LUA_VERSION="$v" SAN=thread CC=clang all host
  make -s -j"$jobs" LUA_VERSION="$v" SAN=address,undefined CC=clang all host
done
echo "embed.sh: built ${EMBED_LUA:-5.4 5.3}: plain, thread, address,undefined"
