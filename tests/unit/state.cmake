# state: one suite against both store backends (the redis group starts its own
# redis-server), the Redis outage/reconnect test, and the Redis Cluster key slot.
foreach(t test_store test_store_redis_outage test_redis_slot)
    kx_unit_test(${t} kx_state)
    # Tests reach the test-only hooks in src/state/store_impl.h.
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/src)
    set_tests_properties(unit.${t} PROPERTIES TIMEOUT 120)
endforeach()
