#!/usr/bin/env bash
# Install the Debian packages ecw builds and tests with, when any is missing.
# Safe to run again: it does nothing when everything is there.
set -eu
pkgs=(
  build-essential pkg-config make
  lua5.4 liblua5.4-dev lua5.3 liblua5.3-dev luarocks
  libcurl4-openssl-dev libssl-dev libjson-c-dev openssl ca-certificates
  lua-cjson lua-busted lua-socket lua-cqueues lua-luaossl
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
