# Integration tests: the real klaxon binary, real redis-server and the kx-broker.
find_program(KX_PYTHON python3 REQUIRED)
function(kx_integration_test name)
    add_test(NAME integration.${name}
             COMMAND ${KX_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.py)
    set_tests_properties(integration.${name} PROPERTIES
        ENVIRONMENT "KX_SOURCE_DIR=${PROJECT_SOURCE_DIR};KX_BINARY_DIR=${PROJECT_BINARY_DIR};PYTHONDONTWRITEBYTECODE=1;ASAN_OPTIONS=detect_leaks=1"
        TIMEOUT 300 ${ARGN})
endfunction()

kx_integration_test(test_replay)
kx_integration_test(test_rules_cli)
kx_integration_test(test_run)
kx_integration_test(test_delivery)
kx_integration_test(test_state_limits)
kx_integration_test(test_correlations)
kx_integration_test(test_scaleout)
kx_integration_test(test_state_auth)
kx_integration_test(test_state_cluster)
