# correlate: the group cap's table and eviction. The stage as a whole is tested through the
# pipeline (test_pipeline) and the integration tests (test_correlations, test_state_limits).
kx_unit_test(test_groupcap kx_correlate)
target_include_directories(test_groupcap PRIVATE ${PROJECT_SOURCE_DIR}/src)
