#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "klaxon/event.h"

static void test_fields(void **state)
{
    (void)state;
    kx_event ev;
    kx_event_init(&ev);
    assert_int_equal(kx_event_add(&ev, "user", 4, "alice", 5, KX_VAL_STR), 0);
    assert_int_equal(kx_event_add(&ev, "ip", 2, "10.0.0.1", 8, KX_VAL_STR), 0);
    assert_int_equal(kx_event_add(&ev, "ip", 2, "10.0.0.2", 8, KX_VAL_STR), 0);
    const kx_field *f = kx_event_get(&ev, "user");
    assert_string_equal(f->value, "alice");
    f = kx_event_next(&ev, "ip", NULL);
    assert_string_equal(f->value, "10.0.0.1");
    f = kx_event_next(&ev, "ip", f);
    assert_string_equal(f->value, "10.0.0.2");
    assert_null(kx_event_next(&ev, "ip", f));
    assert_null(kx_event_get(&ev, "use"));
    /* reset keeps capacity: many adds after reset reuse the same arrays */
    for (int round = 0; round < 3; round++) {
        kx_event_reset(&ev);
        assert_int_equal(ev.nfields, 0);
        for (int i = 0; i < 100; i++)
            kx_event_add(&ev, "k", 1, "v", 1, KX_VAL_STR);
        assert_int_equal(ev.nfields, 100);
    }
    kx_event_fini(&ev);
}

static void test_event_id(void **state)
{
    (void)state;
    kx_event ev;
    kx_event_init(&ev);
    char a[20], b[20];
    ev.topic = "auth";
    ev.partition = 2;
    ev.offset = 41;
    kx_event_id(&ev, a, sizeof(a));
    assert_int_equal(strlen(a), 16);
    ev.offset = 42;
    kx_event_id(&ev, b, sizeof(b));
    assert_string_not_equal(a, b);
    ev.topic = NULL;
    ev.raw = "line";
    ev.raw_len = 4;
    ev.time_ms = 1000;
    ev.offset = 7;
    kx_event_id(&ev, a, sizeof(a));
    kx_event_id(&ev, b, sizeof(b));
    assert_string_equal(a, b);
    ev.offset = 8; /* the same text on another line is another event */
    kx_event_id(&ev, b, sizeof(b));
    assert_string_not_equal(a, b);
    kx_event_fini(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_event_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
