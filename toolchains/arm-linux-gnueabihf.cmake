# Cross toolchain for 32-bit ARM Linux, ARMv7 hard-float (Debian's g++-arm-linux-gnueabihf),
# tests under qemu-arm. Use: cmake --preset linux-armhf, or -DCMAKE_TOOLCHAIN_FILE=<this file>.
set(CAIRN_XTRIPLE arm-linux-gnueabihf)
set(CAIRN_XARCH armhf)
set(CAIRN_XPROCESSOR armv7l)
set(CAIRN_XQEMU qemu-arm)
# GCC notes that the ARM calling convention for some argument types changed in GCC 7.1: only
# a concern when linking with code built by GCC < 7, never the case here.
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross.cmake)
