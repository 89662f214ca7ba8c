/*
 * groupcap: the cap on live groups per rule and tenant. A full table makes room by evicting
 * the group furthest from the threshold (the least recently updated among equals), never one
 * halfway there; refuses when only such groups are sampled, or when progress is unknown;
 * frees slots as groups expire, sweeps at most once a second when full, and keeps each
 * tenant's groups apart.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "correlate/groupcap.h"

#define W 60000 /* the rule's timespan */

static int touch_at(kx_groupcap *g, const char *tenant, uint64_t h, int64_t now, int64_t ttl,
                    int64_t ev, uint32_t need, kx_group_victim *victim)
{
    kx_group_touch t = {.tenant = tenant,
                        .id = {h, h ^ 0x5555},
                        .now_ms = now,
                        .ttl_ms = ttl,
                        .event_ms = ev,
                        .window_ms = W,
                        .need = need};
    kx_group_victim v = {0};
    int rc = kx_groupcap_touch(g, &t, &v);
    if (victim)
        *victim = v;
    return rc;
}

/* Progress unknown (need 0): nothing is evicted, a full table refuses. */
static int touch(kx_groupcap *g, uint64_t h, int64_t now, int64_t ttl)
{
    return touch_at(g, "t", h, now, ttl, 0, 0, NULL);
}

static void test_cap_and_expiry(void **state)
{
    (void)state;
    kx_groupcap *g = kx_groupcap_create(3);
    assert_non_null(g);
    assert_int_equal(touch(g, 11, 0, 100), KX_GC_NEW);
    assert_int_equal(touch(g, 12, 0, 100), KX_GC_NEW);
    assert_int_equal(touch(g, 13, 10, 100), KX_GC_NEW);
    /* Full: a fourth group is refused, a live one is still accepted (and refreshed). */
    assert_int_equal(touch(g, 14, 50, 100), KX_GC_FULL);
    assert_int_equal(touch(g, 11, 50, 100), KX_GC_KNOWN); /* now lives until 150 */
    assert_int_equal(kx_groupcap_live(g, "t", 50), 3);
    /* At 101, 12 has expired (until 100): 14 takes its place. 11 (until 150) and 13 (until
     * 110) are live, so 15 is refused; the full-cap sweep then waits a second, so at 200
     * (13 expired meanwhile) 15 is still refused, and at 1101 it is accepted. */
    assert_int_equal(kx_groupcap_live(g, "t", 101), 2);
    assert_int_equal(touch(g, 14, 101, 100), KX_GC_NEW);
    assert_int_equal(touch(g, 15, 101, 100), KX_GC_FULL);
    assert_int_equal(touch(g, 15, 200, 100), KX_GC_FULL);
    assert_int_equal(touch(g, 15, 1101, 100), KX_GC_NEW);
    /* Hash 0 is stored as 1. */
    assert_int_equal(kx_groupcap_live(g, "t", 2000), 0);
    kx_group_touch t0 = {.tenant = "t", .id = {0, 9}, .now_ms = 2000, .ttl_ms = 10};
    kx_group_victim v;
    assert_int_equal(kx_groupcap_touch(g, &t0, &v), KX_GC_NEW);
    t0.id.h1 = 1;
    assert_int_equal(kx_groupcap_touch(g, &t0, &v), KX_GC_KNOWN); /* the same slot */
    assert_int_equal(kx_groupcap_live(g, "t", 2000), 1);
    assert_int_equal(kx_groupcap_live(g, "nobody", 2000), 0);
    kx_groupcap_destroy(g);
}

static void test_sweep_rate(void **state)
{
    (void)state;
    kx_groupcap *g = kx_groupcap_create(2);
    assert_int_equal(touch(g, 1, 0, 10), KX_GC_NEW);
    assert_int_equal(touch(g, 2, 0, 10), KX_GC_NEW);
    assert_int_equal(touch(g, 3, 5, 10), KX_GC_FULL); /* swept at 5: both live */
    /* Both expired at 11, but the last full sweep was at 5: refused until 1005. */
    assert_int_equal(touch(g, 3, 500, 10), KX_GC_FULL);
    assert_int_equal(touch(g, 3, 1005, 10), KX_GC_NEW);
    kx_groupcap_destroy(g);
}

static void test_evicts_furthest_and_oldest(void **state)
{
    (void)state;
    /* need 10. A has 6 events (past halfway: kept); B (event time 0) and C (1000) one each. */
    kx_groupcap *g = kx_groupcap_create(3);
    kx_group_victim v;
    for (int i = 0; i < 6; i++)
        assert_int_equal(touch_at(g, "t", 100, i, W, i, 10, &v), i ? KX_GC_KNOWN : KX_GC_NEW);
    assert_int_equal(touch_at(g, "t", 200, 0, W, 0, 10, &v), KX_GC_NEW);
    assert_int_equal(touch_at(g, "t", 300, 10, W, 1000, 10, &v), KX_GC_NEW);
    /* D at 20 s: B and C have been idle a quarter timespan; B is the older. */
    assert_int_equal(touch_at(g, "t", 400, 20, W, 20000, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 200 && v.id.h2 == (200 ^ 0x5555));
    /* E: C is idle, D is not (and E has no more events than D): C goes. */
    assert_int_equal(touch_at(g, "t", 500, 30, W, 20001, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 300);
    /* F: D and E are fresh, with as many events as F: refused. F again: now it has more
     * events in this window than either, and the older one (D) makes room. */
    assert_int_equal(touch_at(g, "t", 600, 40, W, 20002, 10, &v), KX_GC_FULL);
    assert_int_equal(touch_at(g, "t", 600, 50, W, 20003, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 400);
    assert_int_equal(kx_groupcap_live(g, "t", 50), 3);
    /* Three evictions and one refusal to report, then nothing until the period has passed
     * and more came. */
    uint64_t ev = 0, rf = 0;
    assert_true(kx_groupcap_notice(g, "t", 50, 3600000, &ev, &rf));
    assert_true(ev == 3 && rf == 1);
    assert_false(kx_groupcap_notice(g, "t", 60, 3600000, &ev, &rf));
    assert_int_equal(touch_at(g, "t", 700, 70, W, 50000, 10, &v), KX_GC_EVICTED);
    assert_false(kx_groupcap_notice(g, "t", 80, 3600000, &ev, &rf));
    assert_true(kx_groupcap_notice(g, "t", 3600050, 3600000, &ev, &rf));
    assert_true(ev == 1 && rf == 0);
    assert_false(kx_groupcap_notice(g, "nobody", 3600050, 3600000, &ev, &rf));
    kx_groupcap_destroy(g);
}

static void test_no_thrash(void **state)
{
    (void)state;
    /* need 3, cap 2; groups 1, 2, 3 take turns, one event a second. 3 does not evict 1 or 2
     * (fresh, as many events as 3), and once they have 2 events they are close to firing:
     * 1 and 2 keep their windows and can fire; 3 is refused each time. */
    kx_groupcap *g = kx_groupcap_create(2);
    kx_group_victim v;
    for (int round = 0; round < 3; round++) {
        int64_t t = round * 3000;
        assert_int_equal(touch_at(g, "t", 1, t, W, t, 3, &v), round ? KX_GC_KNOWN : KX_GC_NEW);
        assert_int_equal(touch_at(g, "t", 2, t + 1000, W, t + 1000, 3, &v),
                         round ? KX_GC_KNOWN : KX_GC_NEW);
        assert_int_equal(touch_at(g, "t", 3, t + 2000, W, t + 2000, 3, &v), KX_GC_FULL);
    }
    kx_groupcap_destroy(g);
}

static void test_close_to_firing_is_kept(void **state)
{
    (void)state;
    /* Two groups halfway (5 of 10): a new group is refused rather than either evicted. */
    kx_groupcap *g = kx_groupcap_create(2);
    kx_group_victim v;
    for (int i = 0; i < 5; i++) {
        touch_at(g, "t", 1, i, W, i, 10, &v);
        touch_at(g, "t", 2, i, W, i, 10, &v);
    }
    assert_int_equal(touch_at(g, "t", 3, 10, W, 10, 10, &v), KX_GC_FULL);
    uint64_t ev = 9, rf = 9;
    assert_true(kx_groupcap_notice(g, "t", 10, 1000, &ev, &rf));
    assert_true(ev == 0 && rf == 1);
    /* Progress counts the current and the previous timespan of event time: in the next
     * window group 1 is still close to firing, two windows on it is not. */
    assert_int_equal(touch_at(g, "t", 3, 20, W, W + 10, 10, &v), KX_GC_FULL);
    assert_int_equal(touch_at(g, "t", 3, 30, W, 2 * W + 10, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 1 || v.id.h1 == 2);
    kx_groupcap_destroy(g);
}

static void test_tenants_apart(void **state)
{
    (void)state;
    /* Tenant a fills its table with groups close to firing; tenant b is not affected. */
    kx_groupcap *g = kx_groupcap_create(2);
    kx_group_victim v;
    for (int i = 0; i < 5; i++) {
        touch_at(g, "a", 1, i, W, i, 5, &v);
        touch_at(g, "a", 2, i, W, i, 5, &v);
    }
    assert_int_equal(touch_at(g, "a", 3, 10, W, 10, 5, &v), KX_GC_FULL);
    assert_int_equal(touch_at(g, "b", 3, 10, W, 10, 5, &v), KX_GC_NEW);
    assert_int_equal(touch_at(g, "b", 4, 10, W, 10, 5, &v), KX_GC_NEW);
    assert_int_equal(kx_groupcap_live(g, "a", 10), 2);
    assert_int_equal(kx_groupcap_live(g, "b", 10), 2);
    /* Past KX_GROUPCAP_TENANTS tenants, the later ones share one table. */
    char name[16];
    for (int i = 0; i < KX_GROUPCAP_TENANTS - 2; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        assert_int_equal(touch_at(g, name, 9, 10, W, 10, 5, &v), KX_GC_NEW);
        assert_false(kx_groupcap_shared(g, name));
    }
    assert_int_equal(touch_at(g, "late-1", 9, 10, W, 10, 5, &v), KX_GC_NEW);
    assert_true(kx_groupcap_shared(g, "late-1"));
    assert_int_equal(touch_at(g, "late-2", 8, 10, W, 10, 5, &v), KX_GC_NEW);
    assert_int_equal(kx_groupcap_live(g, "late-2", 10), 2); /* the shared table */
    assert_false(kx_groupcap_shared(g, "a"));
    kx_groupcap_destroy(g);
}

static void test_shared_victim_is_its_tenants(void **state)
{
    (void)state;
    /* Past KX_GROUPCAP_TENANTS tenants, a victim of the shared table may be another tenant's
     * group: the victim's own tenant comes back, so the caller drops the right state. */
    kx_groupcap *g = kx_groupcap_create(2);
    kx_group_victim v;
    char name[16];
    for (int i = 0; i < KX_GROUPCAP_TENANTS; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        assert_int_equal(touch_at(g, name, 1, 0, W, 0, 10, &v), KX_GC_NEW);
    }
    assert_int_equal(touch_at(g, "late-1", 100, 0, W, 0, 10, &v), KX_GC_NEW);
    assert_int_equal(touch_at(g, "late-2", 200, 10, W, 1000, 10, &v), KX_GC_NEW);
    /* late-3 at 20 s: late-1's group is the older idle one. */
    v.tenant = NULL;
    assert_int_equal(touch_at(g, "late-3", 300, 20, W, 20000, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 100);
    assert_string_equal(v.tenant, "late-1");
    assert_int_equal(touch_at(g, "late-3", 400, 30, W, 20001, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 200);
    assert_string_equal(v.tenant, "late-2");
    /* An own table's victim is its tenant's. */
    assert_int_equal(touch_at(g, "t0", 2, 40, W, 20000, 10, &v), KX_GC_NEW);
    assert_int_equal(touch_at(g, "t0", 3, 50, W, 20001, 10, &v), KX_GC_EVICTED);
    assert_true(v.id.h1 == 1);
    assert_string_equal(v.tenant, "t0");
    /* The shared table's notices are one series: 2 evictions, whoever asks. */
    uint64_t ev = 0, rf = 0;
    assert_true(kx_groupcap_notice(g, "late-1", 60, 3600000, &ev, &rf));
    assert_true(ev == 2 && rf == 0);
    assert_false(kx_groupcap_notice(g, "late-3", 60, 3600000, &ev, &rf));
    kx_groupcap_destroy(g);
}

static void test_many_groups(void **state)
{
    (void)state;
    kx_groupcap *g = kx_groupcap_create(10000);
    for (uint64_t h = 1; h <= 10000; h++)
        assert_int_equal(touch(g, h * 0x9e3779b97f4a7c15ull, 0, 1000), KX_GC_NEW);
    assert_int_equal(touch(g, 424242, 0, 1000), KX_GC_FULL);
    assert_int_equal(kx_groupcap_live(g, "t", 0), 10000);
    assert_int_equal(kx_groupcap_live(g, "t", 1001), 0);
    assert_null(kx_groupcap_create(0));
    kx_groupcap_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_and_expiry),
        cmocka_unit_test(test_sweep_rate),
        cmocka_unit_test(test_evicts_furthest_and_oldest),
        cmocka_unit_test(test_no_thrash),
        cmocka_unit_test(test_close_to_firing_is_kept),
        cmocka_unit_test(test_tenants_apart),
        cmocka_unit_test(test_shared_victim_is_its_tenants),
        cmocka_unit_test(test_many_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
