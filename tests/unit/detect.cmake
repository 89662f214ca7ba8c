# detect stage: Sigma rule loading, conditions, matching, correlation rules.
kx_unit_test(test_rules_load kx_detect)
kx_unit_test(test_condition kx_detect)
kx_unit_test(test_match kx_detect)
kx_unit_test(test_filters kx_detect)
kx_unit_test(test_lists kx_detect)
kx_unit_test(test_mappings kx_detect)
target_include_directories(test_match PRIVATE ${PROJECT_SOURCE_DIR}/src) # detect_int.h
kx_unit_test(test_correlation_load kx_detect)
kx_unit_test(test_prefilter kx_detect)
target_include_directories(test_prefilter PRIVATE ${PROJECT_SOURCE_DIR}/src) # detect_set.h
kx_unit_test(test_regex kx_detect)
target_include_directories(test_regex PRIVATE ${PROJECT_SOURCE_DIR}/src) # detect_int.h

# The SigmaHQ corpus check needs a local copy of github.com/SigmaHQ/sigma (no network in CI):
# it is skipped (exit 77) when KX_SIGMA_DIR (default /tmp/sigma) holds no rules.
add_test(NAME unit.sigma_corpus
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/unit/sigma_corpus.sh $<TARGET_FILE:test_rules_load>)
set_tests_properties(unit.sigma_corpus PROPERTIES SKIP_RETURN_CODE 77)
