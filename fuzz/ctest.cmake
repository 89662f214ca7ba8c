# Registers each fuzz target as a ctest test of the main build (included from
# tests/CMakeLists.txt): `make test` builds build-fuzz/ with clang (`make fuzz`) before it
# runs ctest here, and each target then runs KX_FUZZ_TEST_SECONDS on its seeds and saved
# regressions under ASan+UBSan+LSan. A target that is not built is skipped (exit 77), so
# ctest in a build/ without build-fuzz/ still works.
set(KX_FUZZ_BUILD_DIR ${PROJECT_SOURCE_DIR}/build-fuzz CACHE PATH
    "Build dir of the libFuzzer targets (make fuzz)")
set(KX_FUZZ_TEST_SECONDS 15 CACHE STRING "How long ctest runs each fuzz target")

file(GLOB kx_fuzz_srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/fuzz/fuzz_*.c)
foreach(src ${kx_fuzz_srcs})
    get_filename_component(name ${src} NAME_WE)
    add_test(NAME fuzz.${name}
             COMMAND bash ${PROJECT_SOURCE_DIR}/fuzz/run.sh ${KX_FUZZ_BUILD_DIR} ${name}
                     ${KX_FUZZ_TEST_SECONDS})
    # The timeout leaves room for seed loading on a loaded machine; libFuzzer itself stops
    # at KX_FUZZ_TEST_SECONDS.
    set_tests_properties(fuzz.${name} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180
                         LABELS fuzz)
endforeach()
