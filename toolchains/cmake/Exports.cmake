# cairn_shared_library_exports(target map): a shared library exports exactly what the version
# script `map` lists (the static libraries linked in, Cairn's own and a self-contained build's
# dependencies, stay inside), every symbol resolved at link time, unused sections dropped.
function(cairn_shared_library_exports target map)
  target_link_options(${target} PRIVATE -Wl,--no-undefined -Wl,--exclude-libs,ALL
                      -Wl,--gc-sections -Wl,--version-script=${map})
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${map})
endfunction()
