#!/usr/bin/env bash
# Stripped sizes of libcairn.so, MinSizeRel (docs/BENCHMARKS.md "Binary size"):
#   core alone      libcairn.so linked against Debian's shared SQLite, libuv and mbedTLS
#   self-contained  libcairn.so with the three built in from Debian's sources
#                   (CAIRN_BUNDLE_DEPS, as the selfcontained presets), and libcairn_jni.so on x86_64
# for x86_64, aarch64 and armhf (cross compilers and the target libraries as in the README).
# Usage: bench/sizes.sh            (builds under build/size-*, about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

size_of() {  # strip tool, file: bytes after stripping a copy
  local tmp
  tmp=$(mktemp)
  "$1" -o "$tmp" "$2"
  stat -c %s "$tmp"
  rm -f "$tmp"
}

printf '%-8s %-30s %12s\n' arch library "stripped B"
for arch in x86_64 aarch64 armhf; do
  case $arch in
    x86_64)  toolchain=""; strip="strip" ;;
    aarch64) toolchain=toolchains/aarch64-linux-gnu.cmake; strip=aarch64-linux-gnu-strip ;;
    armhf)   toolchain=toolchains/arm-linux-gnueabihf.cmake; strip=arm-linux-gnueabihf-strip ;;
  esac
  for bundle in OFF ON; do
    dir=build/size-$arch-$bundle
    java=OFF
    if [ $arch = x86_64 ]; then java=$bundle; fi
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=MinSizeRel -DCAIRN_BUNDLE_DEPS=$bundle \
          -DCAIRN_BUILD_TESTS=OFF -DCAIRN_BUILD_BENCH=OFF -DCAIRN_TEST_SWIFT=OFF \
          -DCAIRN_BUILD_JAVA="$java" \
          ${toolchain:+-DCMAKE_TOOLCHAIN_FILE="$PWD/$toolchain"} >/dev/null
    targets=(cairn)
    [ $arch = x86_64 ] && [ $bundle = ON ] && targets+=(cairn_jni)
    cmake --build "$dir" -j2 --target "${targets[@]}" >/dev/null
  done
  printf '%-8s %-30s %12s\n' $arch "core alone (libcairn.so)" \
         "$(size_of "$strip" "build/size-$arch-OFF/core/libcairn.so")"
  printf '%-8s %-30s %12s\n' $arch "self-contained libcairn.so" \
         "$(size_of "$strip" "build/size-$arch-ON/core/libcairn.so")"
  if [ $arch = x86_64 ]; then
    printf '%-8s %-30s %12s\n' $arch "self-contained libcairn_jni.so" \
           "$(size_of "$strip" "build/size-$arch-ON/bindings/java/libcairn_jni.so")"
  fi
done
