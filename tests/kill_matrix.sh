#!/usr/bin/env bash
# The kill matrix at scale (docs/RELIABILITY.md, "Kill matrix"): RUNS runs (default 1000) of
# tests/integration/kill_matrix_test.cc from seed FIRST (default 0), over the Debug build. The
# test command runs one round (13 runs, one per kill point).
#
#   tests/kill_matrix.sh [RUNS] [FIRST]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset dev >/dev/null
cmake --build --preset dev --target kill_matrix_test cairn_cli cairn_server_bin >/dev/null
CAIRN_KILL_RUNS=${1:-1000} CAIRN_KILL_SEED=${2:-0} build/dev/tests/kill_matrix_test
