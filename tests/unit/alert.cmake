# alert stage unit tests (src/alert).
kx_unit_test(test_alert_record kx_alert)
kx_unit_test(test_router kx_alert)
kx_unit_test(test_sink_webhook kx_alert)
kx_unit_test(test_spool kx_alert)
kx_unit_test(test_deadletter kx_alert)
kx_unit_test(test_sink_services kx_alert)
kx_unit_test(test_flood kx_alert)
# test_router produces to kx-broker (tools/kx_broker.c), the out-of-process mock broker.
if(TARGET kx-broker)
    add_dependencies(test_router kx-broker)
endif()
kx_unit_test(test_claims kx_alert kx_state)
