# Installs the build tree into a scratch prefix, then builds and runs the
# consumer project against it with find_package(moekit).
set(prefix ${BUILD_DIR}/consumer-test/prefix)
set(cbuild ${BUILD_DIR}/consumer-test/build)
file(REMOVE_RECURSE ${BUILD_DIR}/consumer-test)
foreach(step
    "${CMAKE_COMMAND};--install;${BUILD_DIR};--prefix;${prefix}"
    "${CMAKE_COMMAND};-S;${SOURCE_DIR}/tests/consumer;-B;${cbuild};-DCMAKE_PREFIX_PATH=${prefix}"
    "${CMAKE_COMMAND};--build;${cbuild}"
    "${cbuild}/consumer_cpp"
    "${cbuild}/consumer_c"
    "${cbuild}/consumer_static")
  execute_process(COMMAND ${step} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer step failed (${rc}): ${step}")
  endif()
endforeach()
