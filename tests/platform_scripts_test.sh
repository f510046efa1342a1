#!/usr/bin/env bash
# The platform packaging that cannot run on these machines (Android NDK, Xcode) is still
# checked as far as it can be here:
#   - every shell script of the repository passes `bash -n` and shellcheck;
#   - platforms/android/build-aar.sh and platforms/ios/build-xcframework.sh stop at once, exit 2,
#     with a message that names what is missing; toolchains/debian-deps.sh refuses bad arguments;
#   - the systemd units of platforms/linux pass `systemd-analyze verify` (binaries in place);
#   - the JNI glue compiles against Android's own jni.h with __ANDROID__ (its AttachCurrentThread
#     differs from the JDK's).
# Usage: platform_scripts_test.sh SOURCE_DIR CXX JNI_INCLUDE_ARGS...
set -uo pipefail
src=$1 cxx=$2
shift 2
passed=0 failed=0
check() {  # name, command...: counts and reports one check
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
    printf '%s\n' "$out" | head -20
  fi
}
expect_exit2() {  # message regex, command...: exits 2 saying so
  local regex=$1 out rc
  shift
  out=$("$@" 2>&1) && rc=0 || rc=$?
  [ "$rc" -eq 2 ] || { echo "exit $rc, expected 2: $out"; return 1; }
  grep -Eq "$regex" <<<"$out" || { echo "message does not match /$regex/: $out"; return 1; }
}

mapfile -t scripts < <(cd "$src" && find . \( -path ./build -o -path ./.git -o -name .build \) -prune \
                       -o -name '*.sh' -print | sort)
for s in "${scripts[@]}"; do
  check "bash -n $s" bash -n "$src/$s"
  check "shellcheck $s" shellcheck -x "$src/$s"
done
for s in ./platforms/android/build-aar.sh ./platforms/ios/build-xcframework.sh; do
  check "$s is among the scripts checked" grep -qx "$s" <(printf '%s\n' "${scripts[@]}")
done

check "build-aar.sh without an NDK" expect_exit2 'set ANDROID_NDK' \
  env -u ANDROID_NDK -u ANDROID_NDK_HOME -u ANDROID_NDK_ROOT "$src/platforms/android/build-aar.sh"
check "build-aar.sh with a directory that is no NDK" expect_exit2 'is not an NDK' \
  env ANDROID_NDK=/nonexistent "$src/platforms/android/build-aar.sh"
if [ "$(uname -s)" != Darwin ]; then
  check "build-xcframework.sh off macOS" expect_exit2 'needs macOS' \
    "$src/platforms/ios/build-xcframework.sh"
fi
# debian-deps.sh refuses bad arguments before it fetches anything.
check "debian-deps.sh without arguments" expect_exit2 'debian-deps.sh target ARCH DIR' \
  "$src/toolchains/debian-deps.sh"
check "debian-deps.sh with an unknown architecture" expect_exit2 "unknown architecture 'vax'" \
  "$src/toolchains/debian-deps.sh" target vax "$(mktemp -u)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd/system"
cp /usr/lib/systemd/system/*.target "$root/usr/lib/systemd/system/"
for b in usr/local/bin/cairn usr/local/bin/cairn-server bin/sh; do   # what the units run
  printf '#!/bin/sh\n' > "$root/$b"
  chmod +x "$root/$b"
done
for u in cairn-server cairn-gateway; do
  cp "$src/platforms/linux/$u.service" "$root/etc/systemd/system/"
  check "systemd-analyze verify $u.service" \
    systemd-analyze verify --root="$root" "$root/etc/systemd/system/$u.service"
done

mkdir -p "$root/android-jni"
cp /usr/include/android/nativehelper/jni.h "$root/android-jni/"
check "JNI glue against Android's jni.h" \
  "$cxx" -std=c++17 -fsyntax-only -D__ANDROID__ -Wall -Wextra -Werror -I"$root/android-jni" "$@" \
  "$src/bindings/java/src/main/cpp/cairn_jni.cc"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
