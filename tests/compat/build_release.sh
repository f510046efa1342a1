#!/bin/sh
# Builds a release's cairn and cairn-server from this repository's history, for the live
# mixed-version tests (tests/integration/compat_live_test.cc, docs/protocol.md "Versions and
# compatibility"): the release's own code, as the fleet runs it.
#
#   build_release.sh COMMIT SOURCE_DIR OUT_DIR
#
# OUT_DIR/src holds the commit's tree (git archive), OUT_DIR/build its Release build of the two
# programs only; done again only when OUT_DIR/build/core/cairn-server is missing. Needs the
# repository's history (a clone has it; a shallow one must fetch COMMIT).
set -eu
commit=$1 src=$2 out=$3
if [ -x "$out/build/core/cairn-server" ] && [ -x "$out/build/core/cairn" ] &&
   [ "$(cat "$out/COMMIT" 2>/dev/null)" = "$commit" ]; then
  exit 0
fi
git -C "$src" rev-parse --verify --quiet "$commit^{commit}" > /dev/null || {
  echo "build_release: commit $commit is not in $src's history (a shallow clone? git fetch" \
       "--unshallow)" >&2
  exit 1
}
rm -rf "$out"
mkdir -p "$out/src"
git -C "$src" archive "$commit" | tar -x -C "$out/src"
cmake -S "$out/src" -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_BUILD_TESTS=OFF \
  -DCAIRN_BUILD_BENCH=OFF -DCAIRN_BUILD_JAVA=OFF -DCAIRN_TEST_SWIFT=OFF \
  -DCAIRN_WITH_POSTGRESQL=OFF > "$out/configure.log" 2>&1 || { cat "$out/configure.log"; exit 1; }
cmake --build "$out/build" -j2 --target cairn_cli cairn_server_bin > "$out/build.log" 2>&1 ||
  { tail -50 "$out/build.log"; exit 1; }
echo "$commit" > "$out/COMMIT"
echo "build_release: $commit built in $out/build/core"
