# CAIRN_SANITIZE: "" (off), "address" (ASan + UBSan less its alignment and null checks),
# "undefined" (UBSan alone: the 32-bit ARM run under qemu, where misaligned loads and 32-bit
# overflows show), "thread" (TSan) or "fuzzer"
# (clang: ASan + UBSan and libFuzzer's coverage; the fuzz targets link libFuzzer's main, see
# tests/fuzz/run.sh). Applied to every target.
set(CAIRN_SANITIZE "" CACHE STRING "Sanitizers: address (ASan+UBSan), undefined (UBSan) or thread (TSan)")
# Under ASan and TSan a Debug build compiles the libraries of core/ with -O1 (the tests and tools
# stay at -O0): instrumented -O0 code is 3 to 5 times slower (a shard of the simulation 13 s at
# -O0, 5 s at -O1; the killed-import test 117 s and 22 s), and -O1 is what both sanitizers'
# authors advise. cairn_library (core/CMakeLists.txt) applies CAIRN_SANITIZE_LIB_OPTIONS.
# Without the tracking of variables' locations through optimized code: the sanitizers' reports
# keep their file and line, and those libraries compile about a fifth faster
# (docs/RELIABILITY.md "What each build runs").
set(CAIRN_SANITIZE_LIB_OPTIONS "")
if(CAIRN_SANITIZE MATCHES "^(address|thread)$" AND CMAKE_BUILD_TYPE STREQUAL "Debug")
  set(CAIRN_SANITIZE_LIB_OPTIONS -O1 -fno-var-tracking-assignments)
endif()
if(CAIRN_SANITIZE STREQUAL "address")
  # UBSan's alignment and null checks are left to the armhf run (UBSan alone, where a misaligned
  # load matters; ASan stops on a null dereference anyway): at -O1 they more than doubled the
  # compile time of the libraries (exchange.cc 58 s against 28 s), docs/RELIABILITY.md.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize=alignment,null
                      -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
elseif(CAIRN_SANITIZE STREQUAL "undefined")
  # Every check stops the program, but pointer-overflow stays recoverable so that
  # tests/ubsan.supp can name the one report in a dependency's header (FlatBuffers 2.0.8 forms
  # p + offset before its verifier checks the offset, which wraps on 32 bits); the tests run
  # with UBSAN_OPTIONS halt_on_error=1 (tests/CMakeLists.txt), which stops on every other one.
  add_compile_options(-fsanitize=undefined -fno-sanitize-recover=all -fsanitize-recover=pointer-overflow)
  add_link_options(-fsanitize=undefined)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^arm")
    # ARM mode, not Thumb: a Thumb function's address is odd, so UBSan takes every reference
    # to a function (CLI11 binds some to std::function) for a misaligned one.
    add_compile_options(-marm)
  endif()
elseif(CAIRN_SANITIZE STREQUAL "fuzzer")
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
elseif(CAIRN_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT CAIRN_SANITIZE STREQUAL "")
  message(FATAL_ERROR "CAIRN_SANITIZE must be empty, address, undefined, thread or fuzzer")
endif()
