# FindMbedTLS: mbedTLS 2.28 on Debian 12 ships neither a .pc file nor a CMake package.
# Defines MbedTLS::mbedcrypto, MbedTLS::mbedx509 and MbedTLS::mbedtls (UNKNOWN IMPORTED targets)
# and MbedTLS_VERSION read from the headers.
find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h)
find_library(MBEDCRYPTO_LIBRARY NAMES mbedcrypto)
find_library(MBEDX509_LIBRARY NAMES mbedx509)
find_library(MBEDTLS_LIBRARY NAMES mbedtls)
if(MBEDTLS_INCLUDE_DIR)
  foreach(hdr build_info.h version.h)
    if(EXISTS "${MBEDTLS_INCLUDE_DIR}/mbedtls/${hdr}")
      file(STRINGS "${MBEDTLS_INCLUDE_DIR}/mbedtls/${hdr}" _v REGEX "#define MBEDTLS_VERSION_STRING +\"")
      if(_v)
        string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" MbedTLS_VERSION "${_v}")
        break()
      endif()
    endif()
  endforeach()
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MbedTLS
  REQUIRED_VARS MBEDTLS_INCLUDE_DIR MBEDCRYPTO_LIBRARY MBEDX509_LIBRARY MBEDTLS_LIBRARY
  VERSION_VAR MbedTLS_VERSION)
if(MbedTLS_FOUND AND NOT TARGET MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedcrypto PROPERTIES IMPORTED_LOCATION "${MBEDCRYPTO_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MBEDTLS_INCLUDE_DIR}")
  add_library(MbedTLS::mbedx509 UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedx509 PROPERTIES IMPORTED_LOCATION "${MBEDX509_LIBRARY}"
    INTERFACE_LINK_LIBRARIES MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedtls UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedtls PROPERTIES IMPORTED_LOCATION "${MBEDTLS_LIBRARY}"
    INTERFACE_LINK_LIBRARIES MbedTLS::mbedx509)
endif()
