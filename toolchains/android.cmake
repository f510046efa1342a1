# Android: a thin wrapper over the NDK's own toolchain file (the NDK's, not CMake's built-in
# Android support, as the NDK's CMake guide asks). Not run here: this machine has no NDK.
#   cmake -S . -B build/android-arm64-v8a -G Ninja -DCMAKE_TOOLCHAIN_FILE=toolchains/android.cmake \
#         -DANDROID_ABI=arm64-v8a -DCAIRN_BUNDLE_DEPS=ON ...     (platforms/android/build-aar.sh)
# The NDK: -DANDROID_NDK=..., else $ANDROID_NDK, $ANDROID_NDK_HOME or $ANDROID_NDK_ROOT (r23+).
# Defaults, each overridable with -D: ANDROID_ABI arm64-v8a (also armeabi-v7a, x86, x86_64),
# ANDROID_PLATFORM android-24, ANDROID_STL c++_static (the C++ runtime inside libcairn_jni.so).
# 64-bit libraries are aligned for 16 KB pages (Google Play requires it of apps targeting
# Android 15+): NDK r28+ does so by default, r27 with ANDROID_SUPPORT_FLEXIBLE_PAGE_SIZES,
# older ones with -z max-page-size=16384, which the top-level CMakeLists.txt passes in every case.
if(NOT ANDROID_NDK)
  foreach(_cairn_var ANDROID_NDK ANDROID_NDK_HOME ANDROID_NDK_ROOT)
    if(DEFINED ENV{${_cairn_var}} AND NOT "$ENV{${_cairn_var}}" STREQUAL "")
      set(ANDROID_NDK "$ENV{${_cairn_var}}")
      break()
    endif()
  endforeach()
endif()
if(NOT ANDROID_NDK OR NOT EXISTS "${ANDROID_NDK}/build/cmake/android.toolchain.cmake")
  message(FATAL_ERROR "toolchains/android.cmake: no Android NDK. Set ANDROID_NDK (or "
                      "ANDROID_NDK_HOME) to an NDK r23 or newer; it is not installable here.")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ANDROID_NDK)
if(NOT ANDROID_ABI)
  set(ANDROID_ABI arm64-v8a)
endif()
if(NOT ANDROID_PLATFORM)
  set(ANDROID_PLATFORM android-24)
endif()
if(NOT ANDROID_STL)
  set(ANDROID_STL c++_static)
endif()
set(ANDROID_SUPPORT_FLEXIBLE_PAGE_SIZES ON)
include("${ANDROID_NDK}/build/cmake/android.toolchain.cmake")
