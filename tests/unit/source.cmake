# source stage: file reader, Kafka consumer (against kx-broker, the mock cluster), and the
# metrics/health HTTP endpoint (src/app/http.c, compiled in directly so this test does not
# need the whole app library).
kx_unit_test(test_file_source kx_source)

kx_unit_test(test_kafka_source kx_source)
add_dependencies(test_kafka_source kx-broker kx-produce)
set_tests_properties(unit.test_kafka_source PROPERTIES TIMEOUT 120)

kx_unit_test(test_http kx_core PkgConfig::MHD kx_libev)
target_sources(test_http PRIVATE ${PROJECT_SOURCE_DIR}/src/app/http.c)
