#!/usr/bin/env bash
# Builds Cairn's Android library, build/android/cairn-<version>.aar:
#   classes.jar                    the Java API (dev.cairn, Java 8 bytecode)
#   jni/<abi>/libcairn_jni.so      JNI library: engine, SQLite, libuv, mbedTLS and the C++
#   jni/<abi>/libcairn.so          runtime inside (c++_static); libcairn.so is the C API alone
#   prefab/modules/cairn/...       headers and libcairn.so per ABI for C/C++ consumers
#                                  (find_package(cairn CONFIG) + cairn::cairn with prefab)
#   AndroidManifest.xml, R.txt
# for arm64-v8a, armeabi-v7a, x86 and x86_64 (64-bit ones aligned for 16 KB pages).
#
# Usage: ANDROID_NDK=/path/to/ndk platforms/android/build-aar.sh [ABI ...]
# Needs an NDK r23+ (not installable on the Debian machines this project is tested on: there the
# script stops at once with exit 2), cmake, ninja, a JDK (javac, jar), the build machine's flatc
# 2.0.8, and the dependencies' sources: fetched by toolchains/debian-deps.sh on Debian, else
# set CAIRN_DEPS_SOURCE_DIR to a copy made there.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "build-aar.sh: $*" >&2; exit 2; }

NDK=${ANDROID_NDK:-${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}}
[ -n "$NDK" ] || die "set ANDROID_NDK (or ANDROID_NDK_HOME) to an Android NDK r23 or newer"
[ -f "$NDK/build/cmake/android.toolchain.cmake" ] ||
  die "$NDK is not an NDK (no build/cmake/android.toolchain.cmake)"
for tool in cmake ninja javac jar flatc; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
STRIP=$(find "$NDK/toolchains/llvm/prebuilt" -path '*/bin/llvm-strip' -print -quit 2>/dev/null || true)
[ -n "$STRIP" ] || die "no llvm-strip in $NDK/toolchains/llvm/prebuilt"
ABIS=("$@")
[ ${#ABIS[@]} -gt 0 ] || ABIS=(arm64-v8a armeabi-v7a x86 x86_64)
API=24
VERSION=$(sed -n 's/^project(cairn VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
NDK_MAJOR=$(sed -n 's/^Pkg.Revision *= *\([0-9]*\).*/\1/p' "$NDK/source.properties" 2>/dev/null || true)
[ -n "$NDK_MAJOR" ] || die "cannot read the NDK's version (Pkg.Revision in $NDK/source.properties)"
OUT=build/android
STAGE=$OUT/aar
rm -rf "$STAGE"
mkdir -p "$STAGE/jni" "$STAGE/prefab/modules/cairn/include/cairn"

for abi in "${ABIS[@]}"; do
  case $abi in arm64-v8a|armeabi-v7a|x86|x86_64) ;; *) die "unknown ABI '$abi'" ;; esac
  dir=$OUT/$abi
  echo "=== $abi"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=MinSizeRel \
        -DCMAKE_TOOLCHAIN_FILE="$PWD/toolchains/android.cmake" -DANDROID_NDK="$NDK" \
        -DANDROID_ABI="$abi" -DANDROID_PLATFORM=android-$API \
        -DCAIRN_BUNDLE_DEPS=ON ${CAIRN_DEPS_SOURCE_DIR:+-DCAIRN_DEPS_SOURCE_DIR="$CAIRN_DEPS_SOURCE_DIR"} \
        -DCAIRN_BUILD_TOOLS=OFF -DCAIRN_BUILD_TESTS=OFF -DCAIRN_BUILD_BENCH=OFF \
        -DCAIRN_BUILD_JAVA=ON -DCAIRN_TEST_SWIFT=OFF >/dev/null
  cmake --build "$dir" --target cairn cairn_jni
  mkdir -p "$STAGE/jni/$abi" "$STAGE/prefab/modules/cairn/libs/android.$abi"
  "$STRIP" -o "$STAGE/jni/$abi/libcairn_jni.so" \
      "$dir/bindings/java/libcairn_jni.so"
  "$STRIP" -o "$STAGE/jni/$abi/libcairn.so" \
      "$(readlink -f "$dir/core/libcairn.so")"
  cp "$STAGE/jni/$abi/libcairn.so" "$STAGE/prefab/modules/cairn/libs/android.$abi/"
  # The C API has no C++ in its interface: consumers need no particular STL.
  printf '{"abi": "%s", "api": %d, "ndk": %s, "stl": "none", "static": false}\n' \
         "$abi" "$API" "$NDK_MAJOR" > "$STAGE/prefab/modules/cairn/libs/android.$abi/abi.json"
done

# The Java API, compiled for Java 8 as Android's toolchain expects; CairnException is the one
# CMake wrote from errors.def (bindings/java/CMakeLists.txt) in the first ABI's build.
rm -rf "$OUT/classes"
javac --release 8 -Xlint:all -Xlint:-options -Werror -d "$OUT/classes" \
      bindings/java/src/main/java/dev/cairn/*.java \
      "$OUT/${ABIS[0]}/bindings/java/generated/dev/cairn/CairnException.java"
jar --create --no-manifest --file "$STAGE/classes.jar" -C "$OUT/classes" .

cp core/include/cairn/* "$STAGE/prefab/modules/cairn/include/cairn/"
printf '{"schema_version": 2, "name": "cairn", "version": "%s", "dependencies": []}\n' "$VERSION" \
       > "$STAGE/prefab/prefab.json"
printf '{"export_libraries": [], "android": {}}\n' > "$STAGE/prefab/modules/cairn/module.json"
cat > "$STAGE/AndroidManifest.xml" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="dev.cairn">
  <uses-sdk android:minSdkVersion="$API" />
</manifest>
EOF
: > "$STAGE/R.txt"
AAR=$OUT/cairn-$VERSION.aar
rm -f "$AAR"
jar --create --no-manifest --file "$AAR" -C "$STAGE" .
echo "build-aar.sh: $AAR (${ABIS[*]})"
