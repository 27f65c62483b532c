# FindCAF.cmake -- the C++ Actor Framework 0.17 as Debian 12 ships it.
#
# libcaf-dev 0.17.6 installs headers (/usr/include/caf) and shared libraries
# (libcaf_core.so, libcaf_io.so, libcaf_openssl.so) but neither a CMake package
# config nor a pkg-config file, so we locate the pieces ourselves.
#
#   find_package(CAF 0.17 REQUIRED COMPONENTS core io)
#
# Defines the imported targets CAF::core, CAF::io and CAF::openssl (those
# found), plus CAF_FOUND, CAF_VERSION and CAF_INCLUDE_DIR. The target names are
# those of upstream CAF >= 0.18, so callers need no change when CAF is upgraded.

find_path(CAF_INCLUDE_DIR NAMES caf/config.hpp)

if(CAF_INCLUDE_DIR)
  # caf/config.hpp: "#define CAF_VERSION 1706" means 0.17.6
  file(STRINGS "${CAF_INCLUDE_DIR}/caf/config.hpp" _vf_caf_line
       REGEX "^#define CAF_VERSION [0-9]+")
  if(_vf_caf_line MATCHES "CAF_VERSION ([0-9]+)")
    set(_vf_caf_num "${CMAKE_MATCH_1}")
    math(EXPR _vf_major "${_vf_caf_num} / 10000")
    math(EXPR _vf_minor "(${_vf_caf_num} / 100) % 100")
    math(EXPR _vf_patch "${_vf_caf_num} % 100")
    set(CAF_VERSION "${_vf_major}.${_vf_minor}.${_vf_patch}")
  endif()
endif()

set(_vf_components ${CAF_FIND_COMPONENTS})
if(NOT "core" IN_LIST _vf_components)
  list(APPEND _vf_components core)  # every other component needs core
endif()

set(_vf_required CAF_INCLUDE_DIR)
foreach(_c IN LISTS _vf_components)
  find_library(CAF_${_c}_LIBRARY NAMES caf_${_c})
  if(CAF_${_c}_LIBRARY)
    set(CAF_${_c}_FOUND TRUE)
  else()
    set(CAF_${_c}_FOUND FALSE)
  endif()
  if(CAF_FIND_REQUIRED_${_c})
    list(APPEND _vf_required CAF_${_c}_LIBRARY)
  endif()
endforeach()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CAF
  REQUIRED_VARS ${_vf_required}
  VERSION_VAR CAF_VERSION
  HANDLE_COMPONENTS)

if(CAF_FOUND)
  find_package(Threads REQUIRED)
  foreach(_c IN LISTS _vf_components)
    if(CAF_${_c}_FOUND AND NOT TARGET CAF::${_c})
      add_library(CAF::${_c} UNKNOWN IMPORTED)
      set_target_properties(CAF::${_c} PROPERTIES
        IMPORTED_LOCATION "${CAF_${_c}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}")
      if(_c STREQUAL "core")
        set_property(TARGET CAF::core APPEND PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
      else()
        set_property(TARGET CAF::${_c} APPEND PROPERTY INTERFACE_LINK_LIBRARIES CAF::core)
      endif()
    endif()
  endforeach()
endif()

mark_as_advanced(CAF_INCLUDE_DIR CAF_core_LIBRARY CAF_io_LIBRARY CAF_openssl_LIBRARY)
