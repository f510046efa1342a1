# What `cmake --install` puts where, and the Debian packages CPack makes of it (README
# "Installing"). Three components:
#   lib     libcairn.so.0 (the C API, every binding's boundary)
#   dev     the C headers, libcairn.so, the CMake package (find_package(Cairn CONFIG),
#           Cairn::cairn) and cairn.pc
#   server  cairn-server and cairn, and the server's systemd unit (platforms/linux), its
#           ExecStart pointing where the binary was installed
# libcairn.so links SQLite, libuv and mbedTLS privately: a consumer of the shared library needs
# none of their headers, so the CMake package has no dependencies to find.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CAIRN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Cairn)
install(TARGETS cairn EXPORT CairnTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/core/include/cairn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev)
install(EXPORT CairnTargets NAMESPACE Cairn:: FILE CairnTargets.cmake DESTINATION ${CAIRN_CMAKE_DIR}
        COMPONENT dev)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/CairnConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/CairnConfig.cmake
                              INSTALL_DESTINATION ${CAIRN_CMAKE_DIR})
# 0.x: a minor version may change the C API (docs/c-api.md), so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/CairnConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/CairnConfig.cmake ${PROJECT_BINARY_DIR}/CairnConfigVersion.cmake
        DESTINATION ${CAIRN_CMAKE_DIR} COMPONENT dev)
# cairn.pc finds the prefix from where it lies (pkg-config's ${pcfiledir}), so an install moved
# elsewhere, or unpacked from a .deb into another root, still builds.
file(RELATIVE_PATH CAIRN_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(${CMAKE_CURRENT_LIST_DIR}/cairn.pc.in ${PROJECT_BINARY_DIR}/cairn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cairn.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT dev)

if(CAIRN_BUILD_TOOLS)
  install(TARGETS cairn_server_bin cairn_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
          COMPONENT server)
  # The unit, with ExecStart at the binary installed (the prefix is known at install time
  # only: CPack installs with /usr): made in the build directory, then installed like any file
  # (DESTDIR, the install manifest). The path is quoted and its '%' escaped for systemd.
  install(CODE "
    file(READ \"${PROJECT_SOURCE_DIR}/platforms/linux/cairn-server.service\" unit)
    set(bin \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/cairn-server\")
    string(REPLACE \"%\" \"%%\" bin \"\${bin}\")
    string(REPLACE \"ExecStart=/usr/local/bin/cairn-server\" \"ExecStart=\\\"\${bin}\\\"\"
           unit \"\${unit}\")
    file(WRITE \"${PROJECT_BINARY_DIR}/unit/cairn-server.service\" \"\${unit}\")
    file(INSTALL DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\" TYPE FILE
         FILES \"${PROJECT_BINARY_DIR}/unit/cairn-server.service\")
  " COMPONENT server)
  install(FILES ${PROJECT_SOURCE_DIR}/platforms/linux/server.env
                ${PROJECT_SOURCE_DIR}/platforms/linux/README.md
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/cairn-server/examples COMPONENT server)
endif()

# Debian packages: cpack -G DEB (in the build directory) makes libcairn0, libcairn-dev and
# cairn-server, their library dependencies found by dpkg-shlibdeps.
set(CPACK_PACKAGE_NAME cairn)
set(CPACK_PACKAGE_VENDOR "Cairn")
set(CPACK_PACKAGE_CONTACT "Cairn maintainers <cairn@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "offline-first sync engine")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)  # (the unit's ExecStart needs the generator that stages with DESTDIR)
set(CPACK_COMPONENTS_ALL lib dev)
if(CAIRN_BUILD_TOOLS)
  list(APPEND CPACK_COMPONENTS_ALL server)
endif()
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
if(CMAKE_CROSSCOMPILING)
  # The target's architecture (the toolchain's Debian name), not the build machine's; the
  # dependencies cannot be read from the build machine's dpkg for it: none are declared.
  if(CAIRN_XARCH)
    set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${CAIRN_XARCH})
  endif()
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
endif()
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIB_PACKAGE_NAME libcairn0)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libcairn-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_SERVER_PACKAGE_NAME cairn-server)
set(CPACK_DEBIAN_SERVER_PACKAGE_SECTION net)
set(CPACK_COMPONENT_LIB_DESCRIPTION
    "Cairn's shared library: a local SQLite replica with CRDT merge that syncs with cairn-server")
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "Cairn's C headers, CMake package (find_package(Cairn CONFIG)) and pkg-config file")
set(CPACK_COMPONENT_SERVER_DESCRIPTION
    "cairn-server (the sync server, with its systemd unit) and the cairn tool")
# The development files go with the library of their own version.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libcairn0 (= ${PROJECT_VERSION})")
if(PROJECT_IS_TOP_LEVEL)  # (not when Cairn is a subproject of another build)
  include(CPack)
endif()
