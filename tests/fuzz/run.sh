#!/usr/bin/env bash
# Fuzzes Cairn's input parsers with libFuzzer (clang, ASan + UBSan), each target for SECONDS
# (default 600), starting from tests/fuzz/corpus/<target> and keeping what it finds new in
# build/fuzz/corpus/<target>. A crash leaves its input in build/fuzz/artifacts/ and stops the
# run: copy it into tests/fuzz/corpus/<target>/ (every build replays the corpora) and fix it.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]     targets: frame apply import json token
#
# Needs clang and libclang-rt-14-dev (Debian 12). Prints libFuzzer's final statistics per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-600}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(frame apply import json token)
command -v clang++ >/dev/null || { echo "run.sh: needs clang (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
cmake --preset fuzz >/dev/null
for t in "${TARGETS[@]}"; do
  cmake --build build/fuzz --target "fuzz_$t" >/dev/null
  mkdir -p "build/fuzz/corpus/$t" build/fuzz/artifacts
  echo "=== fuzz_$t for ${SECS} s"
  build/fuzz/tests/"fuzz_$t" -max_total_time="$SECS" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix=build/fuzz/artifacts/ \
    "build/fuzz/corpus/$t" "tests/fuzz/corpus/$t" 2>&1 | grep -E '^stat::|^Done|ERROR|SUMMARY'
done
