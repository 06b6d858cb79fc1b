# packaging.cmake - how libcr is installed and found (included at the end of
# node/libcr/CMakeLists.txt, once the targets cr, cr_run and cr_omit exist):
#   - the libraries libcr.so.0 (+ the namelink libcr.so that -lcr needs), libcr_run.so.0 and
#     libcr_omit.so.0 into ${CMAKE_INSTALL_LIBDIR};
#   - BLCR's public headers into ${CMAKE_INSTALL_INCLUDEDIR};
#   - libcr.pc (from libcr.pc.in) into ${CMAKE_INSTALL_LIBDIR}/pkgconfig;
#   - the cr_run script (from node/tools/cr_run.in) twice: ${CMAKE_BINARY_DIR}/node/tools/cr_run
#     preloads the build tree's libraries (for the tests and for use without installing), the
#     installed ${CMAKE_INSTALL_BINDIR}/cr_run the installed ones.
#
# cr_run and libcr.pc hold absolute paths of the installed files. They are generated when
# installing, not when configuring, so that `cmake --install BUILD --prefix P` (what packagers
# and the tests do) gets paths under P rather than under the configured CMAKE_INSTALL_PREFIX.

foreach(_crkit_t IN ITEMS cr cr_run cr_omit)
  if(NOT TARGET ${_crkit_t})
    message(FATAL_ERROR "packaging.cmake: library target '${_crkit_t}' is not defined; "
                        "include this file after the libcr targets are created")
  endif()
endforeach()

cmake_path(GET CMAKE_CURRENT_LIST_DIR PARENT_PATH _crkit_node_dir)
set(_crkit_headers
  ${_crkit_node_dir}/include/libcr.h
  ${_crkit_node_dir}/include/blcr_common.h
  ${_crkit_node_dir}/include/blcr_errcodes.h
  ${_crkit_node_dir}/include/blcr_proc.h)
set(_crkit_cr_run_in ${_crkit_node_dir}/tools/cr_run.in)
set(_crkit_pc_in ${CMAKE_CURRENT_LIST_DIR}/libcr.pc.in)

# One source for the interface version: the header's LIBCR_VERSION, unless the including
# CMakeLists.txt set LIBCR_VERSION itself. The library's VERSION (file libcr.so.X.Y.Z) must agree.
if(NOT DEFINED LIBCR_VERSION)
  file(STRINGS ${_crkit_node_dir}/include/blcr_common.h _crkit_v
       REGEX "^#define LIBCR_VERSION \"[^\"]*\"")
  string(REGEX REPLACE "^#define LIBCR_VERSION \"([^\"]*)\".*" "\\1" LIBCR_VERSION "${_crkit_v}")
endif()
if(NOT LIBCR_VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
  message(FATAL_ERROR "packaging.cmake: no LIBCR_VERSION \"X.Y.Z\" in node/include/blcr_common.h "
                      "(found '${LIBCR_VERSION}')")
endif()
get_target_property(_crkit_v cr VERSION)
if(_crkit_v AND NOT _crkit_v STREQUAL LIBCR_VERSION)
  message(FATAL_ERROR "packaging.cmake: target cr has VERSION ${_crkit_v}, but LIBCR_VERSION is "
                      "${LIBCR_VERSION}: libcr.so.${_crkit_v} and libcr.pc would disagree")
endif()
set(CRKIT_VERSION ${CMAKE_PROJECT_VERSION}) # what cr_run --version prints, like the other tools

# ---- Libraries and headers ------------------------------------------------------------------
# With VERSION/SOVERSION set on the targets, this installs libcr.so.0.5.5, the soname link
# libcr.so.0 and the namelink libcr.so (for -lcr, which MPICH's configure links with).
install(TARGETS cr cr_run cr_omit
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${_crkit_headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# ---- cr_run in the build tree ---------------------------------------------------------------
# The libraries' paths come from the targets themselves (generator expressions), so the script
# follows wherever the libraries are really built.
set(CR_RUN_LIB "$<TARGET_SONAME_FILE:cr_run>")
set(CR_OMIT_LIB "$<TARGET_SONAME_FILE:cr_omit>")
configure_file(${_crkit_cr_run_in} ${CMAKE_CURRENT_BINARY_DIR}/cr_run.build.in @ONLY)
file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/node/tools/cr_run
     INPUT ${CMAKE_CURRENT_BINARY_DIR}/cr_run.build.in
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)
unset(CR_RUN_LIB)
unset(CR_OMIT_LIB)

# ---- cr_run and libcr.pc for the installed tree ---------------------------------------------
# First hand the configure-time facts to the install script (bracket arguments: no escaping),
# then generate both files under the install-time prefix. file(INSTALL) honours DESTDIR and
# lists the files in install_manifest.txt; the paths written into them never contain DESTDIR.
install(CODE "
set(_crkit_pkg_libdir [==[${CMAKE_INSTALL_LIBDIR}]==])
set(_crkit_pkg_includedir [==[${CMAKE_INSTALL_INCLUDEDIR}]==])
set(_crkit_pkg_bindir [==[${CMAKE_INSTALL_BINDIR}]==])
set(_crkit_pkg_cr_run_in [==[${_crkit_cr_run_in}]==])
set(_crkit_pkg_pc_in [==[${_crkit_pc_in}]==])
set(_crkit_pkg_stage [==[${CMAKE_CURRENT_BINARY_DIR}/install-stage]==])
set(_crkit_pkg_libcr_version [==[${LIBCR_VERSION}]==])
set(_crkit_pkg_crkit_version [==[${CRKIT_VERSION}]==])
set(_crkit_pkg_cr_run_name [==[$<TARGET_SONAME_FILE_NAME:cr_run>]==])
set(_crkit_pkg_cr_omit_name [==[$<TARGET_SONAME_FILE_NAME:cr_omit>]==])
")
install(CODE [==[
block(SCOPE_FOR VARIABLES)
  set(prefix "${CMAKE_INSTALL_PREFIX}")
  cmake_path(ABSOLUTE_PATH prefix NORMALIZE)
  foreach(kind IN ITEMS libdir includedir bindir)
    set(rel "${_crkit_pkg_${kind}}")
    if(IS_ABSOLUTE "${rel}")
      set(full_${kind} "${rel}")
      set(pc_${kind} "${rel}")
    else()
      set(full_${kind} "${prefix}/${rel}")
      set(pc_${kind} "\${prefix}/${rel}")
    endif()
  endforeach()

  # libcr.pc
  set(PC_PREFIX "${prefix}")
  set(PC_LIBDIR "${pc_libdir}")
  set(PC_INCLUDEDIR "${pc_includedir}")
  set(LIBCR_VERSION "${_crkit_pkg_libcr_version}")
  file(READ "${_crkit_pkg_pc_in}" content)
  file(CONFIGURE OUTPUT "${_crkit_pkg_stage}/libcr.pc" CONTENT "${content}" @ONLY)
  file(INSTALL DESTINATION "${full_libdir}/pkgconfig" TYPE FILE
       FILES "${_crkit_pkg_stage}/libcr.pc")

  # cr_run, preloading the installed libraries
  set(CR_RUN_LIB "${full_libdir}/${_crkit_pkg_cr_run_name}")
  set(CR_OMIT_LIB "${full_libdir}/${_crkit_pkg_cr_omit_name}")
  set(CRKIT_VERSION "${_crkit_pkg_crkit_version}")
  file(READ "${_crkit_pkg_cr_run_in}" content)
  file(CONFIGURE OUTPUT "${_crkit_pkg_stage}/cr_run" CONTENT "${content}" @ONLY)
  file(INSTALL DESTINATION "${full_bindir}" TYPE PROGRAM
       FILES "${_crkit_pkg_stage}/cr_run")
endblock()
]==])
