#!/bin/sh
# Cairn installed as a user installs it (README "Installing"), then used as an application
# would:
#   install_test.sh install BUILD_DIR SOURCE_DIR
#     cmake --install into a temporary prefix; the files where they belong; a C program built
#     against it with find_package(Cairn CONFIG) and with pkg-config, and run; the prefix moved
#     elsewhere, pkg-config still right.
#   install_test.sh deb BUILD_DIR SOURCE_DIR
#     cpack -G DEB; each package's name, dependencies and files (dpkg-deb), unpacked into a
#     scratch root (dpkg -x); the C program built against that root with pkg-config, and run;
#     the unpacked cairn-server and cairn run.
set -eu
mode=$1 build=$2 src=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }
has() { [ -e "$1" ] || fail "missing: $1"; }

# The C program of tests/install/consumer against the pkg-config file in $1 (a directory),
# linked with an rpath to the library there, run: prints the document it wrote.
build_with_pkg_config() {
  pc_dir=$1 out=$2
  flags=$(PKG_CONFIG_PATH=$pc_dir PKG_CONFIG_LIBDIR=$pc_dir pkg-config --cflags --libs cairn)
  libdir=$(PKG_CONFIG_PATH=$pc_dir PKG_CONFIG_LIBDIR=$pc_dir pkg-config --variable=libdir cairn)
  # shellcheck disable=SC2086 # (the flags are words)
  cc -std=c99 -Wall -Werror -o "$out" "$src/tests/install/consumer/app.c" $flags \
    -Wl,-rpath,"$libdir"
  "$out" "$work/pc-$(basename "$out").db" | grep -q '^cairn 0\.1\.0: {"n":7,"title":"installed"}$' ||
    fail "the program built with pkg-config ($pc_dir) did not read its document back"
}

case $mode in
install)
  prefix=$work/prefix
  cmake --install "$build" --prefix "$prefix" > "$work/install.log"
  for f in lib/libcairn.so.0 lib/libcairn.so include/cairn/cairn.h include/cairn/errors.def \
           lib/cmake/Cairn/CairnConfig.cmake lib/cmake/Cairn/CairnConfigVersion.cmake \
           lib/cmake/Cairn/CairnTargets.cmake lib/pkgconfig/cairn.pc bin/cairn bin/cairn-server \
           lib/systemd/system/cairn-server.service \
           share/doc/cairn-server/examples/server.env; do
    has "$prefix/$f"
  done
  grep -q "^ExecStart=\"$prefix/bin/cairn-server\" " "$prefix/lib/systemd/system/cairn-server.service" ||
    fail "the unit does not start the installed cairn-server"
  # Installed like any file: in the manifest (what an uninstall removes).
  grep -q "/lib/systemd/system/cairn-server.service$" "$build/install_manifest.txt" ||
    fail "the unit is not in the install manifest"
  # Nothing of the build's own (static internal libraries, tests) is installed.
  extra=$(find "$prefix" -name '*.a' -o -name '*_test*' | head -1)
  [ -z "$extra" ] || fail "installed but not part of the product: $extra"
  # find_package(Cairn CONFIG), as an application's CMake project does.
  cmake -S "$src/tests/install/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=Release > "$work/consumer.log" || { cat "$work/consumer.log"; exit 1; }
  cmake --build "$work/consumer" > "$work/consumer-build.log" ||
    { cat "$work/consumer-build.log"; exit 1; }
  "$work/consumer/app" "$work/cmake.db" | grep -q '^cairn 0\.1\.0: {"n":7,"title":"installed"}$' ||
    fail "the program built with find_package did not read its document back"
  # An older or newer minor version is not taken (0.x: the same minor only).
  mkdir -p "$work/want"
  printf 'cmake_minimum_required(VERSION 3.25)\nproject(w LANGUAGES C)\nfind_package(Cairn 0.2 CONFIG REQUIRED)\n' \
    > "$work/want/CMakeLists.txt"
  if cmake -S "$work/want" -B "$work/want/b" -DCMAKE_PREFIX_PATH="$prefix" > "$work/want.log" 2>&1; then
    fail "find_package(Cairn 0.2) took version 0.1.0"
  fi
  # pkg-config, then the whole prefix moved: cairn.pc finds it from where it lies.
  build_with_pkg_config "$prefix/lib/pkgconfig" "$work/app-pc"
  mv "$prefix" "$work/moved"
  build_with_pkg_config "$work/moved/lib/pkgconfig" "$work/app-moved"
  ;;
deb)
  (cd "$work" && cpack --config "$build/CPackConfig.cmake" -G DEB -B "$work/debs" > cpack.log 2>&1) ||
    { cat "$work/cpack.log"; exit 1; }
  lib=$(ls "$work"/debs/libcairn0_0.1.0_*.deb) dev=$(ls "$work"/debs/libcairn-dev_0.1.0_*.deb)
  server=$(ls "$work"/debs/cairn-server_0.1.0_*.deb)
  [ "$(dpkg-deb -f "$lib" Package)" = libcairn0 ] || fail "$lib: not libcairn0"
  # Dependencies: the libraries libcairn and the server link (dpkg-shlibdeps), and the
  # development files on the library of their own version.
  for dep in libsqlite3-0 libuv1 libmbedtls14; do
    dpkg-deb -f "$lib" Depends | grep -q "$dep" || fail "libcairn0 does not depend on $dep"
    dpkg-deb -f "$server" Depends | grep -q "$dep" || fail "cairn-server does not depend on $dep"
  done
  dpkg-deb -f "$dev" Depends | grep -q 'libcairn0 (= 0\.1\.0)' ||
    fail "libcairn-dev does not depend on libcairn0 (= 0.1.0): $(dpkg-deb -f "$dev" Depends)"
  root=$work/root
  for deb in "$lib" "$dev" "$server"; do dpkg -x "$deb" "$root"; done
  dpkg-deb -c "$lib" | grep -q '\./usr/lib/libcairn\.so\.0\.1\.0$' || fail "libcairn0 has no library"
  if dpkg-deb -c "$lib" | grep -q 'include/'; then fail "libcairn0 holds headers"; fi
  dpkg-deb -c "$dev" | grep -q '\./usr/lib/libcairn\.so -> libcairn\.so\.0$' ||
    fail "libcairn-dev has no libcairn.so link"
  for f in usr/include/cairn/cairn.h usr/lib/cmake/Cairn/CairnConfig.cmake \
           usr/lib/pkgconfig/cairn.pc usr/bin/cairn-server usr/bin/cairn \
           usr/lib/systemd/system/cairn-server.service; do
    has "$root/$f"
  done
  grep -q '^ExecStart="/usr/bin/cairn-server" ' "$root/usr/lib/systemd/system/cairn-server.service" ||
    fail "the packaged unit does not start /usr/bin/cairn-server"
  "$root/usr/bin/cairn-server" --version | grep -q '^cairn-server 0\.1\.0$' ||
    fail "the packaged cairn-server does not run"
  "$root/usr/bin/cairn" --db "$work/cli.db" put tasks t1 '{"a":1}' > /dev/null
  "$root/usr/bin/cairn" --db "$work/cli.db" get tasks t1 | grep -q '"a":1' ||
    fail "the packaged cairn does not run"
  build_with_pkg_config "$root/usr/lib/pkgconfig" "$work/app-deb"
  ;;
*)
  fail "mode: install or deb"
  ;;
esac
echo "install_test $mode: ok"
