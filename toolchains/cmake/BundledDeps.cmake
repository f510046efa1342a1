# The self-contained build (CAIRN_BUNDLE_DEPS=ON): SQLite, libuv and mbedTLS compiled from
# Debian's source packages (fetched at configure time by toolchains/debian-deps.sh into
# CAIRN_DEPS_SOURCE_DIR, never committed) as position-independent static libraries, so that
# libcairn.so and libcairn_jni.so carry them inside and export only their own API (what an
# Android app or a Linux box without those packages needs; ../shared/PLATFORMS.md §2.5).
# Defines the same targets the packaged libraries give: SQLite::SQLite3, Cairn::uv,
# MbedTLS::mbedcrypto / mbedx509 / mbedtls, flatbuffers::flatbuffers and
# nlohmann_json::nlohmann_json; nothing of the build machine's /usr/include is then needed, as
# an Android or iOS build requires.
set(CAIRN_DEPS_SOURCE_DIR "${PROJECT_SOURCE_DIR}/build/deps/src" CACHE PATH
    "Where toolchains/debian-deps.sh unpacks SQLite, libuv and mbedTLS for CAIRN_BUNDLE_DEPS")
# The script does nothing when the directory already holds what it lists; where it cannot run
# (no apt: macOS), a directory it filled elsewhere is taken as it is.
find_program(CAIRN_APT_GET apt-get)
if(CAIRN_APT_GET OR NOT EXISTS "${CAIRN_DEPS_SOURCE_DIR}/.complete")
  execute_process(COMMAND "${PROJECT_SOURCE_DIR}/toolchains/debian-deps.sh" source
                          "${CAIRN_DEPS_SOURCE_DIR}"
                  RESULT_VARIABLE _cairn_rc)
  if(NOT _cairn_rc EQUAL 0)
    message(FATAL_ERROR "could not fetch the dependencies' sources into ${CAIRN_DEPS_SOURCE_DIR}")
  endif()
endif()

# Dependencies are built with their own flags: none of Cairn's warnings, never -Werror.
block()
  set(CMAKE_COMPILE_WARNING_AS_ERROR OFF)
  set(CMAKE_POSITION_INDEPENDENT_CODE ON)
  set(CMAKE_C_VISIBILITY_PRESET hidden)
  set(CMAKE_C_FLAGS "${CMAKE_C_FLAGS} -w")  # libuv's and mbedTLS's directories
  # mbedTLS 2.28 and libuv 1.44 ask for old CMake versions (2.8.12, 3.4): let project() set
  # their version and the visibility apply, and let CMake 4, which refuses anything below 3.5,
  # configure them.
  set(CMAKE_POLICY_DEFAULT_CMP0048 NEW)
  set(CMAKE_POLICY_DEFAULT_CMP0063 NEW)
  set(CMAKE_POLICY_VERSION_MINIMUM 3.5)

  # SQLite: the amalgamation, with the options sqlite.org recommends for an embedded engine
  # (nothing Cairn uses is left out: the authorizer, JSON functions and WAL stay).
  add_library(cairn_sqlite3 STATIC "${CAIRN_DEPS_SOURCE_DIR}/sqlite3/sqlite3.c")
  target_include_directories(cairn_sqlite3 SYSTEM PUBLIC "${CAIRN_DEPS_SOURCE_DIR}/sqlite3")
  target_compile_definitions(cairn_sqlite3 PRIVATE
    SQLITE_THREADSAFE=1 SQLITE_DQS=0 SQLITE_DEFAULT_MEMSTATUS=0 SQLITE_LIKE_DOESNT_MATCH_BLOBS
    SQLITE_MAX_EXPR_DEPTH=0 SQLITE_OMIT_DEPRECATED SQLITE_OMIT_LOAD_EXTENSION
    SQLITE_OMIT_SHARED_CACHE SQLITE_OMIT_PROGRESS_CALLBACK SQLITE_USE_ALLOCA)
  target_compile_options(cairn_sqlite3 PRIVATE -w)
  target_link_libraries(cairn_sqlite3 PRIVATE Threads::Threads m)
  add_library(SQLite::SQLite3 ALIAS cairn_sqlite3)

  # libuv: its own CMake build, the static library only.
  set(LIBUV_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(LIBUV_BUILD_BENCH OFF CACHE BOOL "" FORCE)
  add_subdirectory("${CAIRN_DEPS_SOURCE_DIR}/libuv" "${PROJECT_BINARY_DIR}/deps/libuv" EXCLUDE_FROM_ALL)
  add_library(Cairn::uv ALIAS uv_a)

  # mbedTLS: its own CMake build, static libraries only, configured by
  # toolchains/cmake/mbedtls_config.h on top of the default configuration.
  set(ENABLE_PROGRAMS OFF CACHE BOOL "" FORCE)
  set(ENABLE_TESTING OFF CACHE BOOL "" FORCE)
  set(GEN_FILES OFF CACHE BOOL "" FORCE)
  set(MBEDTLS_FATAL_WARNINGS OFF CACHE BOOL "" FORCE)
  set(USE_SHARED_MBEDTLS_LIBRARY OFF CACHE BOOL "" FORCE)
  set(USE_STATIC_MBEDTLS_LIBRARY ON CACHE BOOL "" FORCE)
  add_subdirectory("${CAIRN_DEPS_SOURCE_DIR}/mbedtls" "${PROJECT_BINARY_DIR}/deps/mbedtls" EXCLUDE_FROM_ALL)
  # Every user of the headers must see the same configuration (it changes structure layouts).
  target_compile_definitions(mbedcrypto PUBLIC
    "MBEDTLS_USER_CONFIG_FILE=\"${CMAKE_CURRENT_LIST_DIR}/mbedtls_config.h\"")
  target_include_directories(mbedcrypto SYSTEM INTERFACE "${CAIRN_DEPS_SOURCE_DIR}/mbedtls/include")
  foreach(lib mbedcrypto mbedx509 mbedtls)
    add_library(MbedTLS::${lib} ALIAS ${lib})
  endforeach()

  # FlatBuffers and nlohmann-json: headers only (Cairn uses no FlatBuffers library code; the
  # build machine's flatc must be the same version, 2.0.8 on Debian 12).
  add_library(cairn_flatbuffers INTERFACE)
  target_include_directories(cairn_flatbuffers SYSTEM INTERFACE "${CAIRN_DEPS_SOURCE_DIR}/flatbuffers/include")
  add_library(flatbuffers::flatbuffers ALIAS cairn_flatbuffers)
  add_library(cairn_nlohmann_json INTERFACE)
  target_include_directories(cairn_nlohmann_json SYSTEM INTERFACE
                             "${CAIRN_DEPS_SOURCE_DIR}/nlohmann-json3/single_include")
  add_library(nlohmann_json::nlohmann_json ALIAS cairn_nlohmann_json)
endblock()
set(MbedTLS_VERSION 2.28)
