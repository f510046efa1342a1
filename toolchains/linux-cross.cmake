# Shared part of Cairn's Debian cross toolchain files (aarch64-linux-gnu.cmake,
# arm-linux-gnueabihf.cmake), which set before including it:
#   CAIRN_XTRIPLE    the GNU triple of Debian's cross compiler (g++-<triple>)
#   CAIRN_XARCH      Debian's name for the architecture (arm64, armhf)
#   CAIRN_XPROCESSOR CMAKE_SYSTEM_PROCESSOR
#   CAIRN_XQEMU      the qemu-user binary that runs the target's programs
# The target's libraries are Debian's own packages unpacked into a private root (by
# toolchains/debian-deps.sh, run here when the root is missing), never a foreign dpkg
# architecture; flatc and every other program come from the build machine; tests run under
# qemu-user through CMAKE_CROSSCOMPILING_EMULATOR (see ../shared/PLATFORMS.md §1).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${CAIRN_XPROCESSOR})
set(CMAKE_C_COMPILER ${CAIRN_XTRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${CAIRN_XTRIPLE}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${CAIRN_XTRIPLE})

# The root: -DCAIRN_TARGET_ROOT=..., else $CAIRN_TARGET_ROOT, else build/deps/<arch> in the tree.
if(NOT CAIRN_TARGET_ROOT)
  if(DEFINED ENV{CAIRN_TARGET_ROOT})
    set(CAIRN_TARGET_ROOT "$ENV{CAIRN_TARGET_ROOT}")
  else()
    get_filename_component(CAIRN_TARGET_ROOT "${CMAKE_CURRENT_LIST_DIR}/../build/deps/${CAIRN_XARCH}"
                           ABSOLUTE)
  endif()
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES CAIRN_TARGET_ROOT)
# Every time (the script does nothing when the root holds what it lists): a changed list of
# packages then reaches an existing root.
execute_process(COMMAND "${CMAKE_CURRENT_LIST_DIR}/debian-deps.sh" target ${CAIRN_XARCH}
                        "${CAIRN_TARGET_ROOT}"
                RESULT_VARIABLE _cairn_rc)
if(NOT _cairn_rc EQUAL 0)
  message(FATAL_ERROR "could not fetch Debian's ${CAIRN_XARCH} libraries into ${CAIRN_TARGET_ROOT}")
endif()
set(_cairn_libdir "${CAIRN_TARGET_ROOT}/usr/lib/${CAIRN_XTRIPLE}")

# Libraries, headers and CMake packages only from the root (and the cross compiler's own libc,
# libc6-dev-<arch>-cross); programs only from the build machine.
set(CMAKE_FIND_ROOT_PATH "${CAIRN_TARGET_ROOT}" /usr/${CAIRN_XTRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config must not see the build machine's .pc files (they would link x86_64 libraries).
set(ENV{PKG_CONFIG_LIBDIR} "${_cairn_libdir}/pkgconfig:${CAIRN_TARGET_ROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${CAIRN_TARGET_ROOT}")
# The linker follows the root's libraries' own dependencies (libmbedtls -> libmbedx509 ...).
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,-rpath-link,${_cairn_libdir}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-Wl,-rpath-link,${_cairn_libdir}")

# ctest (and gtest discovery) run the target's programs under qemu-user: the cross libc as
# the loader's root, the root's libraries on the library path.
find_program(CAIRN_QEMU ${CAIRN_XQEMU})
if(NOT CAIRN_QEMU)
  message(FATAL_ERROR "${CAIRN_XQEMU} not found: apt-get install qemu-user")
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR "${CAIRN_QEMU};-L;/usr/${CAIRN_XTRIPLE};-E;LD_LIBRARY_PATH=${_cairn_libdir}")
