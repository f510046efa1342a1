#!/usr/bin/env bash
# Builds the release preset, generates the shared docs trace and runs the core benchmark on it.
#
#   bench/run.sh [cairn_bench flags...]      e.g. SCALE=0.1 bench/run.sh --scenario 1,3
#
# SCALE (default 1) picks the trace size (../shared/bench/gen_trace.py --scale). The report, a
# Markdown table, goes to stdout and to build/bench/results-s<scale>.md. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-1}"

cmake --preset release
cmake --build --preset release

python3 ../shared/bench/gen_trace.py --scale "$SCALE" --out build/bench --workload docs
TRACE="build/bench/trace-docs-s$(python3 -c "import sys; print(f'{float(sys.argv[1]):g}')" "$SCALE").jsonl"

build/release/bench/cairn_bench --trace "$TRACE" "$@" | tee "build/bench/results-s${SCALE}.md"
