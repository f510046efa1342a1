#!/usr/bin/env bash
# An app developer cross-configures Cairn with a toolchain file alone (no preset, default
# options): the configure succeeds, and the optional parts whose dependencies the target lacks
# (the Java binding without the target's JNI, the Swift tests, PostgreSQL) are skipped with a
# message instead of stopping it.
#   toolchain_only_test.sh SOURCE_DIR TOOLCHAIN_FILE
set -euo pipefail
src="$1"
toolchain="$2"
work="$(mktemp -d /tmp/cairn-toolchain-only-XXXXXX)"
trap 'rm -rf "$work"' EXIT
if ! cmake -S "$src" -B "$work" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" >"$work.log" 2>&1; then
  echo "FAIL: configuring with -DCMAKE_TOOLCHAIN_FILE=$toolchain alone failed:"
  cat "$work.log"
  rm -f "$work.log"
  exit 1
fi
status=0
grep -q "Java binding: not built" "$work.log" || { echo "FAIL: no message on the skipped Java binding"; status=1; }
grep -q "Swift binding's tests: not run" "$work.log" || { echo "FAIL: no message on the Swift tests"; status=1; }
[ "$status" -eq 0 ] || cat "$work.log"
rm -f "$work.log"
[ "$status" -eq 0 ] && echo "configured for $(basename "$toolchain") with the toolchain file alone"
exit "$status"
