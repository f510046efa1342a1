# Cross toolchain for 64-bit ARM Linux (Debian's g++-aarch64-linux-gnu), tests under
# qemu-aarch64. Use: cmake --preset linux-aarch64, or -DCMAKE_TOOLCHAIN_FILE=<this file>.
set(CAIRN_XTRIPLE aarch64-linux-gnu)
set(CAIRN_XARCH arm64)
set(CAIRN_XPROCESSOR aarch64)
set(CAIRN_XQEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross.cmake)
