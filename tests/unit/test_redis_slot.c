/*
 * The Redis Cluster slot of a key, as klaxon routes an op: CRC16 (XMODEM) of the key's hash
 * tag (the first non-empty {...}) or of the whole key, modulo 16384. Expected values are
 * `redis-cli CLUSTER KEYSLOT` of redis-server 7.0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "state/redis_int.h"

static uint16_t slot(const char *k)
{
    return kx__redis_key_slot(k, strlen(k));
}

static void test_key_slots(void **state)
{
    (void)state;
    assert_int_equal(slot("123456789"), 12739); /* the CRC16-XMODEM check value 0x31c3 */
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot("bar"), 5061);
    assert_int_equal(slot(""), 0);
    /* Hash tags: the first '{' to the first '}' after it, when not empty. */
    assert_int_equal(slot("{user1000}.following"), 3443);
    assert_int_equal(slot("{user1000}.followers"), 3443);
    assert_int_equal(slot("foo{}{bar}"), 8363);    /* empty tag: the whole key */
    assert_int_equal(slot("foo{{bar}}zap"), 4015); /* the tag is "{bar" */
    assert_int_equal(slot("foo{bar}{zap}"), 5061); /* the tag is "bar" */
    assert_int_equal(slot("klaxon:{t|r|00}:z"), 9250);
    /* A window's four keys share one slot, whatever the prefix holds. */
    assert_int_equal(slot("p{x:{t|r|00}:z"), slot("p{x:{t|r|00}:h"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
