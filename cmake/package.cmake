# The CMake package: find_package(mproc) in a user's project gives
# mproc::mproc, mproc::static, mproc::mpi, mproc::mpi_static.
include(CMakePackageConfigHelpers)
set(MP_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/mproc)
set_target_properties(mproc PROPERTIES EXPORT_NAME mproc)
set_target_properties(mproc_static PROPERTIES EXPORT_NAME static)
install(EXPORT mprocTargets NAMESPACE mproc:: DESTINATION ${MP_CMAKE_DIR})
if(MP_HAVE_MPI)
  set_target_properties(mproc_mpi PROPERTIES EXPORT_NAME mpi)
  set_target_properties(mproc_mpi_static PROPERTIES EXPORT_NAME mpi_static)
  install(EXPORT mprocMpiTargets NAMESPACE mproc:: DESTINATION ${MP_CMAKE_DIR})
endif()
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/mprocConfig.cmake.in
  ${CMAKE_BINARY_DIR}/mprocConfig.cmake INSTALL_DESTINATION ${MP_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/mprocConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/mprocConfig.cmake ${CMAKE_BINARY_DIR}/mprocConfigVersion.cmake
  DESTINATION ${MP_CMAKE_DIR})
