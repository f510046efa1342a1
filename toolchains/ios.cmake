# iOS: CMake's own iOS support (cmake-toolchains(7), "Cross Compiling for iOS"), for the Xcode
# generator. Not run here: it needs macOS with Xcode.
#   cmake -S . -B build/ios-device -G Xcode -DCMAKE_TOOLCHAIN_FILE=toolchains/ios.cmake \
#         -DCAIRN_IOS_PLATFORM=device|simulator ...           (platforms/ios/build-xcframework.sh)
# device: arm64 iPhones and iPads; simulator: arm64 and x86_64 Macs. Deployment target 13.0
# (CMAKE_OSX_DEPLOYMENT_TARGET overrides). Static libraries only: an app links them into itself.
set(CMAKE_SYSTEM_NAME iOS)
if(NOT CAIRN_IOS_PLATFORM)
  set(CAIRN_IOS_PLATFORM device)
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES CAIRN_IOS_PLATFORM)
if(CAIRN_IOS_PLATFORM STREQUAL "device")
  set(CMAKE_OSX_SYSROOT iphoneos)
  set(CMAKE_OSX_ARCHITECTURES arm64)
elseif(CAIRN_IOS_PLATFORM STREQUAL "simulator")
  set(CMAKE_OSX_SYSROOT iphonesimulator)
  set(CMAKE_OSX_ARCHITECTURES "arm64;x86_64")
else()
  message(FATAL_ERROR "CAIRN_IOS_PLATFORM must be device or simulator, not '${CAIRN_IOS_PLATFORM}'")
endif()
if(NOT CMAKE_OSX_DEPLOYMENT_TARGET)
  set(CMAKE_OSX_DEPLOYMENT_TARGET 13.0)
endif()
set(CMAKE_XCODE_ATTRIBUTE_ONLY_ACTIVE_ARCH NO)
set(BUILD_SHARED_LIBS OFF)
# Programs (flatc) from the build machine; libraries and headers from the SDK.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
