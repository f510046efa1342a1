#!/usr/bin/env bash
# Builds build/ios/CCairn.xcframework: Cairn's C API as one static library per platform (engine,
# SQLite, libuv and mbedTLS merged in, only cairn_* left visible) for iOS devices (arm64) and the
# simulator (arm64, x86_64), with cairn/*.h and the module map of the CCairn module the Swift
# package imports.
# With --swift, also copies it to bindings/swift/CCairn.xcframework, where Package.swift looks
# for it on Apple platforms (on Linux the package uses a system library target instead).
#
# Usage: platforms/ios/build-xcframework.sh [--swift]
# Needs macOS with Xcode (xcodebuild, libtool), cmake, and the build machine's flatc 2.0.8 (not
# available on the Debian machines this project is tested on: there the script stops at once
# with exit 2). The dependencies' sources come from toolchains/debian-deps.sh, which needs
# Debian's apt: run `toolchains/debian-deps.sh source DIR` on a Debian machine and set
# CAIRN_DEPS_SOURCE_DIR=DIR here.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "build-xcframework.sh: $*" >&2; exit 2; }

[ "$(uname -s)" = Darwin ] || die "needs macOS with Xcode (this is $(uname -s))"
for tool in xcodebuild xcrun libtool lipo cmake flatc; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [ -z "${CAIRN_DEPS_SOURCE_DIR:-}" ] || [ ! -f "$CAIRN_DEPS_SOURCE_DIR/.complete" ]; then
  die "set CAIRN_DEPS_SOURCE_DIR to the sources toolchains/debian-deps.sh fetched on Debian"
fi
COPY_TO_SWIFT=0
case "${1:-}" in
  "") ;;
  --swift) COPY_TO_SWIFT=1 ;;
  *) die "usage: build-xcframework.sh [--swift]" ;;
esac

OUT=build/ios
rm -rf "$OUT"
mkdir -p "$OUT/include/cairn" "$OUT/include/CCairn"
cp core/include/cairn/* "$OUT/include/cairn/"
# The CCairn module the Swift package imports (on Linux: bindings/swift/Sources/CCairn, a system
# library over a shared libcairn). Here the library is static C++ inside the XCFramework, so the
# module asks for libc++; the map sits in its own directory, as Xcode copies every
# XCFramework's headers into one place.
cat > "$OUT/include/CCairn/module.modulemap" <<'EOF'
module CCairn {
  header "../cairn/cairn.h"
  link "c++"
  export *
}
EOF
# Only the C API leaves the library: SQLite's, libuv's and mbedTLS's symbols (and Cairn's C++
# ones) are made private when each architecture's code is pre-linked into one object, so that
# an app with its own SQLite or mbedTLS links without clashes and keeps its own copy.
echo '_cairn_*' > "$OUT/exported_symbols.txt"

args=()
for platform in device simulator; do
  dir=$OUT/$platform
  echo "=== $platform"
  cmake -S . -B "$dir" -G Xcode -DCMAKE_TOOLCHAIN_FILE="$PWD/toolchains/ios.cmake" \
        -DCAIRN_IOS_PLATFORM=$platform -DCAIRN_BUNDLE_DEPS=ON \
        -DCAIRN_DEPS_SOURCE_DIR="$CAIRN_DEPS_SOURCE_DIR" -DCAIRN_BUILD_TOOLS=OFF \
        -DCAIRN_BUILD_TESTS=OFF -DCAIRN_BUILD_BENCH=OFF -DCAIRN_BUILD_JAVA=OFF \
        -DCAIRN_TEST_SWIFT=OFF >/dev/null
  cmake --build "$dir" --config MinSizeRel --target cairn_capi
  # Every static library the C API needs (the build directory is new: nothing stale).
  find "$dir" -name '*.a' -path '*MinSizeRel*' > "$dir/libs.txt"
  [ -s "$dir/libs.txt" ] || die "no static libraries under $dir"
  if [ $platform = device ]; then archs=(arm64); sdk=iphoneos; else archs=(arm64 x86_64); sdk=iphonesimulator; fi
  slices=()
  for arch in "${archs[@]}"; do
    xargs xcrun --sdk $sdk clang -arch "$arch" -r -nostdlib -Wl,-all_load \
          -Wl,-exported_symbols_list,"$OUT/exported_symbols.txt" -o "$dir/cairn-$arch.o" < "$dir/libs.txt"
    libtool -static -o "$dir/libCairn-$arch.a" "$dir/cairn-$arch.o"
    slices+=("$dir/libCairn-$arch.a")
  done
  lipo -create "${slices[@]}" -output "$dir/libCairn.a"
  args+=(-library "$dir/libCairn.a" -headers "$OUT/include")
done
xcodebuild -create-xcframework "${args[@]}" -output "$OUT/CCairn.xcframework"
if [ $COPY_TO_SWIFT -eq 1 ]; then
  rm -rf bindings/swift/CCairn.xcframework
  cp -R "$OUT/CCairn.xcframework" bindings/swift/
fi
echo "build-xcframework.sh: $OUT/CCairn.xcframework"
