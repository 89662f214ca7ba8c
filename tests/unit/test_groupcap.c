/*
 * groupcap: the per-rule cap on live groups refuses the cap+1-th live group, frees slots as
 * groups expire, keeps refreshing a live group, and sweeps at most once a second when full.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "klaxon/groupcap.h"

static void test_cap_and_expiry(void **state)
{
    (void)state;
    kx_groupcap *g = kx_groupcap_create(3);
    assert_non_null(g);
    assert_int_equal(kx_groupcap_touch(g, 11, 0, 100), 0);
    assert_int_equal(kx_groupcap_touch(g, 12, 0, 100), 0);
    assert_int_equal(kx_groupcap_touch(g, 13, 10, 100), 0);
    /* Full: a fourth group is refused, a live one is still accepted (and refreshed). */
    assert_int_equal(kx_groupcap_touch(g, 14, 50, 100), -ENOSPC);
    assert_int_equal(kx_groupcap_touch(g, 11, 50, 100), 0); /* now lives until 150 */
    assert_int_equal(kx_groupcap_live(g, 50), 3);
    /* At 101, 12 has expired (until 100): 14 takes its place. 11 (until 150) and 13 (until
     * 110) are live, so 15 is refused; the full-cap sweep then waits a second, so at 200
     * (13 expired meanwhile) 15 is still refused, and at 1101 it is accepted. */
    assert_int_equal(kx_groupcap_live(g, 101), 2);
    assert_int_equal(kx_groupcap_touch(g, 14, 101, 100), 0);
    assert_int_equal(kx_groupcap_touch(g, 15, 101, 100), -ENOSPC);
    assert_int_equal(kx_groupcap_touch(g, 15, 200, 100), -ENOSPC);
    assert_int_equal(kx_groupcap_touch(g, 15, 1101, 100), 0);
    /* Hash 0 is stored as 1. */
    assert_int_equal(kx_groupcap_live(g, 2000), 0);
    assert_int_equal(kx_groupcap_touch(g, 0, 2000, 10), 0);
    assert_int_equal(kx_groupcap_touch(g, 1, 2000, 10), 0); /* the same slot */
    assert_int_equal(kx_groupcap_live(g, 2000), 1);
    kx_groupcap_destroy(g);
}

static void test_sweep_rate(void **state)
{
    (void)state;
    kx_groupcap *g = kx_groupcap_create(2);
    assert_int_equal(kx_groupcap_touch(g, 1, 0, 10), 0);
    assert_int_equal(kx_groupcap_touch(g, 2, 0, 10), 0);
    assert_int_equal(kx_groupcap_touch(g, 3, 5, 10), -ENOSPC); /* swept at 5: both live */
    /* Both expired at 11, but the last full sweep was at 5: refused until 1005. */
    assert_int_equal(kx_groupcap_touch(g, 3, 500, 10), -ENOSPC);
    assert_int_equal(kx_groupcap_touch(g, 3, 1005, 10), 0);
    kx_groupcap_destroy(g);
}

static void test_many_groups(void **state)
{
    (void)state;
    kx_groupcap *g = kx_groupcap_create(10000);
    for (uint64_t h = 1; h <= 10000; h++)
        assert_int_equal(kx_groupcap_touch(g, h * 0x9e3779b97f4a7c15ull, 0, 1000), 0);
    assert_int_equal(kx_groupcap_touch(g, 424242, 0, 1000), -ENOSPC);
    assert_int_equal(kx_groupcap_live(g, 0), 10000);
    assert_int_equal(kx_groupcap_live(g, 1001), 0);
    assert_null(kx_groupcap_create(0));
    kx_groupcap_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_and_expiry),
        cmocka_unit_test(test_sweep_rate),
        cmocka_unit_test(test_many_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
