#!/usr/bin/env bash
# Cairn's two set-up commands (README "Set-up"):
#   ./dev.sh demo   install what is missing, build, and run the sync demo (a TLS server and
#                   three replicas that edit offline, then sync and converge)
#   ./dev.sh test   install what is missing, build, and run the whole test suite
#                   (Debug build, then the same suite under ASan + UBSan, then cross-built
#                   for aarch64 and for 32-bit ARM with UBSan and run under qemu-user, the
#                   threaded and networked tests under TSan, then the self-contained
#                   libraries for x86_64 and aarch64 and their tests; the Debug suite runs
#                   the sync demo)
# Works on a fresh Debian 12 machine (the ARM and self-contained builds fetch Debian 12's own
# packages); needs root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(cmake ninja-build g++ pkg-config python3 sqlite3 libsqlite3-dev libflatbuffers-dev
          flatbuffers-compiler libuv1-dev libmbedtls-dev libgtest-dev libgmock-dev
          nlohmann-json3-dev libcli11-dev python3-cryptography python3-prometheus-client
          openjdk-17-jdk-headless junit5 junit4
          g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user dpkg-dev xz-utils tcl
          shellcheck systemd android-libnativehelper-dev postgresql libpq-dev libhttp-parser-dev
          libcurl4-openssl-dev)

install_deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Each stage's duration, on one line after it ("=== ... took M min S s"), and the total at the
# end: where the test command's time goes (README "Set-up").
STAGE_NAME=""
STAGE_START=$SECONDS
stage() {
  if [ -n "$STAGE_NAME" ]; then
    local t=$((SECONDS - STAGE_START))
    echo "=== $STAGE_NAME took $((t / 60)) min $((t % 60)) s"
  fi
  STAGE_NAME="$1"
  STAGE_START=$SECONDS
  [ -n "$1" ] && echo "=== $1"
  return 0
}

case "${1:-}" in
  demo)
    install_deps
    cmake --preset release >/dev/null
    cmake --build --preset release
    examples/sync_demo.sh build/release/core/cairn build/release/core/cairn-server
    ;;
  test)
    install_deps
    # The ARM presets fetch Debian's arm64/armhf libraries into build/deps/ on first use
    # (toolchains/debian-deps.sh), leaving dpkg's architectures alone.
    for preset in dev asan linux-aarch64 linux-armhf; do
      stage "$preset: configure, build, test"
      cmake --preset "$preset" >/dev/null
      cmake --build --preset "$preset"
      ctest --preset "$preset"
    done
    # ThreadSanitizer over the tests that run threads or a server (label "threaded"): only
    # their programs are built.
    stage "tsan: build, the threaded and networked tests"
    cmake --preset tsan >/dev/null
    cmake --build --preset tsan --target replica_test sync_test stream_sync_test security_test \
      server_kill_test capi_test rules_sync_test
    ctest --preset tsan
    # The self-contained libraries (SQLite, libuv and mbedTLS built in from Debian's sources):
    # the JUnit suite and the C API test against the x86_64 ones, the C API test under qemu
    # against the aarch64 one, and what each exports.
    stage "selfcontained: build, JUnit and C API tests"
    cmake --preset selfcontained >/dev/null
    cmake --build --preset selfcontained --target cairn cairn_jni cairn_java_tests capi_test
    ctest --preset selfcontained
    stage "selfcontained-aarch64: build, C API test under qemu-aarch64"
    cmake --preset selfcontained-aarch64 >/dev/null
    cmake --build --preset selfcontained-aarch64 --target cairn capi_test
    ctest --preset selfcontained-aarch64
    # (The sync demo runs in the Debug suite, a test of its own; the -O3 warnings of the
    # Release flags are the aarch64 build's, whose libraries and tools use them. `./dev.sh
    # demo` and the benchmark commands build the Release preset.)
    stage ""
    echo "=== the whole test command took $((SECONDS / 60)) min $((SECONDS % 60)) s"
    ;;
  *)
    echo "usage: ./dev.sh demo | test" >&2
    exit 2
    ;;
esac
