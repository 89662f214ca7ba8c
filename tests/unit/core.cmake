kx_unit_test(test_common kx_core)
kx_unit_test(test_yaml kx_core)
kx_unit_test(test_event kx_core)
