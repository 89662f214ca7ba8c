/*
 * The flood valve on a synthetic clock: the limit, the notice verdict, muting, the end of a
 * flood when a window stays within the limit (also when the alert that shows it arrives
 * before the sweep), the summary with its count, and a source that keeps just above the
 * limit staying muted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/alert/alert_int.h"
#include "klaxon/metrics.h"

typedef struct sent {
    int n;
    char title[256];
    char muted[32];
    char state[32];
} sent;

static void on_send(void *ud, uint16_t route, const kx_alert *a)
{
    sent *s = ud;
    assert_int_equal(route, 2);
    s->n++;
    snprintf(s->title, sizeof(s->title), "%s", a->rule_title);
    snprintf(s->state, sizeof(s->state), "%s", a->group[0].value);
    snprintf(s->muted, sizeof(s->muted), "%s", a->group[1].value);
}

static const kx__flood_cfg cfg = {.on = true, .max = 1, .per_ms = 1000};

static const kx__flood_cfg *cfg_of(void *ud, uint16_t route)
{
    (void)ud;
    (void)route;
    return &cfg;
}

static kx_alert alert(void)
{
    kx_alert a = {.rule_id = "r1", .rule_title = "Noisy", .rule_level = "high", .team = "secops"};
    return a;
}

static void test_flood_ends_even_when_alerts_beat_the_sweep(void **state)
{
    (void)state;
    kx_metrics_reset();
    kx__flood *f = kx__flood_create();
    kx_alert a = alert();
    sent s = {0};
    assert_int_equal(kx__flood_check(f, &cfg, 2, &a, 0), KX__FLOOD_PASS);
    assert_int_equal(kx__flood_check(f, &cfg, 2, &a, 10), KX__FLOOD_START);
    kx__flood_notice(f, &cfg, 2, &a, on_send, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.state, "started");
    assert_string_equal(s.title, "Flood: \"Noisy\" alerts are muted until it calms down");
    /* Just after the window: the window had 2 (> 1), still a flood. */
    assert_int_equal(kx__flood_check(f, &cfg, 2, &a, 1010), KX__FLOOD_MUTE);
    /* The next window had only that one: the flood is over, this one passes, even though
     * no sweep ran in between. */
    assert_int_equal(kx__flood_check(f, &cfg, 2, &a, 2020), KX__FLOOD_PASS);
    assert_int_equal(kx__flood_sweep(f, cfg_of, 2021, on_send, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.state, "ended");
    assert_string_equal(s.muted, "2");
    assert_string_equal(s.title, "Flood over: 2 alerts of \"Noisy\" were muted");
    assert_int_equal(kx_metric_get(KX_M_ALERTS_MUTED), 2);
    /* No second summary. */
    kx__flood_sweep(f, cfg_of, 2500, on_send, &s);
    assert_int_equal(s.n, 2);
    kx__flood_destroy(f);
}

static void test_flood_stays_while_above_the_limit(void **state)
{
    (void)state;
    kx_metrics_reset();
    kx__flood *f = kx__flood_create();
    kx_alert a = alert();
    sent s = {0};
    kx__flood_check(f, &cfg, 2, &a, 0);
    assert_int_equal(kx__flood_check(f, &cfg, 2, &a, 1), KX__FLOOD_START);
    /* Two per window, windows closed by the sweep: muted throughout, no summary. */
    for (int64_t w = 1; w <= 5; w++) {
        assert_int_equal(kx__flood_sweep(f, cfg_of, w * 1000 + 1, on_send, &s), 1);
        assert_int_equal(kx__flood_check(f, &cfg, 2, &a, w * 1000 + 2), KX__FLOOD_MUTE);
        assert_int_equal(kx__flood_check(f, &cfg, 2, &a, w * 1000 + 3), KX__FLOOD_MUTE);
    }
    assert_int_equal(s.n, 0);
    /* Quiet: the sweep ends it. */
    kx__flood_sweep(f, cfg_of, 6002, on_send, &s);
    assert_int_equal(kx__flood_sweep(f, cfg_of, 7003, on_send, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.muted, "11");
    kx__flood_destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood_ends_even_when_alerts_beat_the_sweep),
        cmocka_unit_test(test_flood_stays_while_above_the_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
