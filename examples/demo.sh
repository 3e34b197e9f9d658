#!/usr/bin/env bash
# The README's first command: install what is missing, build, and play a
# receptionist call against the bundled sandbox EHR.
set -eu
cd "$(dirname "$0")/.."
bash .ci/deps.sh
make -s LUA_VERSION=5.4 all
exec lua5.4 examples/demo.lua "$@"
