# Time zones (src/core/tz.c) and time-of-day windows (src/core/timeofday.c): rule conditions
# and alert routes use them.
kx_unit_test(test_tz kx_core)
kx_unit_test(test_timeofday kx_detect kx_core)
# Counts allocations to prove matching allocates nothing (see __wrap_malloc in the test).
target_link_options(test_timeofday PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                    -Wl,--wrap=realloc)
