# app unit tests (src/app): the config loader and the pipeline (decode -> detect -> state ->
# alert on one loop; its redis group starts its own redis-server).
kx_unit_test(test_config kx_app)
kx_unit_test(test_pipeline kx_app)
set_tests_properties(unit.test_pipeline PROPERTIES TIMEOUT 120)
