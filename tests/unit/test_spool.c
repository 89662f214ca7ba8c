/*
 * The alert spool: appends read back after a reopen with exactly the sinks that did not
 * acknowledge; acks delete segments oldest first and only then; a torn tail and a flipped bit
 * are skipped and counted while every other record is read; the size cap refuses appends
 * until acks free room; one process per directory; the memory-only spool's accounting.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/metrics.h"
#include "klaxon/spool.h"
#include "kx_test.h"

#define KEY_A "0123456789abcdef0123456789abcdef"
#define KEY_B "fedcba9876543210fedcba9876543210"

typedef struct got {
    size_t n;
    uint64_t seq[16];
    uint32_t pending[16];
    size_t nsinks[16];
    char sinks[16][64];
    char payload[16][128];
    char key[16][33];
    int64_t created[16];
} got;

static void on_rec(void *ud, const kx_spool_alert *a)
{
    got *g = ud;
    assert_true(g->n < 16);
    size_t i = g->n++;
    g->seq[i] = a->seq;
    g->pending[i] = a->pending;
    g->nsinks[i] = a->nsinks;
    g->created[i] = a->created_ms;
    snprintf(g->payload[i], sizeof(g->payload[i]), "%s", a->payload);
    assert_int_equal(strlen(a->payload), a->len);
    snprintf(g->key[i], sizeof(g->key[i]), "%s", a->key);
    g->sinks[i][0] = '\0';
    for (size_t k = 0; k < a->nsinks; k++) {
        strcat(g->sinks[i], a->sinks[k]);
        strcat(g->sinks[i], k + 1 < a->nsinks ? "," : "");
    }
}

static kx_spool *open_dir(const char *dir, uint64_t max, uint64_t segsz, got *g)
{
    kx_spool_opts o = {.dir = dir, .max_bytes = max, .segment_bytes = segsz};
    kx_spool *sp = NULL;
    kx_err err = {0};
    int rc = kx_spool_open(&o, g ? on_rec : NULL, g, &sp, &err);
    if (rc)
        fail_msg("kx_spool_open: %d %s", rc, err.msg);
    return sp;
}

static size_t count_segments(const char *dir)
{
    size_t n = 0;
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "ls %s | grep -c '\\.seg$'", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fscanf(p, "%zu", &n) != 1)
        n = 0;
    pclose(p);
    return n;
}

static void test_reopen_gives_unacknowledged(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("spool");
    const char *two[] = {"pager", "chat"}, *one[] = {"file"};
    uint64_t s1, s2, s3;
    kx_spool *sp = open_dir(dir, 0, 0, NULL);
    assert_true(kx_spool_durable(sp));
    assert_int_equal(kx_spool_append(sp, KEY_A, 1000, two, 2, "{\"a\":1}", 7, &s1), 0);
    assert_int_equal(kx_spool_append(sp, KEY_B, 2000, one, 1, "{\"b\":2}", 7, &s2), 0);
    assert_int_equal(kx_spool_append(sp, KEY_A, 3000, two, 2, "{\"c\":3}", 7, &s3), 0);
    assert_int_equal(s1, 1);
    assert_int_equal(s2, 2);
    assert_int_equal(s3, 3);
    assert_true(kx_spool_dirty(sp));
    assert_int_equal(kx_spool_sync(sp), 0);
    assert_false(kx_spool_dirty(sp));
    /* pager took alert 1, file took alert 2, chat took alert 3 */
    assert_int_equal(kx_spool_ack(sp, s1, 0, KX_SPOOL_DELIVERED), 0);
    assert_int_equal(kx_spool_ack(sp, s2, 0, KX_SPOOL_DELIVERED), 0);
    assert_int_equal(kx_spool_ack(sp, s3, 1, KX_SPOOL_DEAD), 0);
    assert_int_equal(kx_spool_ack(sp, s3, 1, KX_SPOOL_DELIVERED), -ENOENT); /* twice */
    assert_int_equal(kx_spool_ack(sp, 99, 0, KX_SPOOL_DELIVERED), -ENOENT);
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.pending, 2);
    kx_spool_close(sp); /* like a crash: nothing more is written at close but a sync */

    got g = {0};
    sp = open_dir(dir, 0, 0, &g);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.seq[0], 1);
    assert_string_equal(g.sinks[0], "pager,chat");
    assert_int_equal(g.pending[0], 2); /* chat only */
    assert_string_equal(g.payload[0], "{\"a\":1}");
    assert_string_equal(g.key[0], KEY_A);
    assert_int_equal(g.created[0], 1000);
    assert_int_equal(g.seq[1], 3);
    assert_int_equal(g.pending[1], 1); /* pager only */
    assert_string_equal(g.payload[1], "{\"c\":3}");
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.recovered, 2);
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.skipped_bytes, 0);
    /* New alerts continue the numbering; acks of recovered alerts go to the new segment. */
    uint64_t s4;
    assert_int_equal(kx_spool_append(sp, KEY_B, 4000, one, 1, "{}", 2, &s4), 0);
    assert_int_equal(s4, 4);
    assert_int_equal(kx_spool_ack(sp, 1, 1, KX_SPOOL_DELIVERED), 0);
    assert_int_equal(kx_spool_ack(sp, 3, 0, KX_SPOOL_DELIVERED), 0);
    kx_spool_close(sp);

    memset(&g, 0, sizeof(g));
    sp = open_dir(dir, 0, 0, &g);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.seq[0], 4);
    assert_int_equal(kx_spool_ack(sp, 4, 0, KX_SPOOL_DELIVERED), 0);
    kx_spool_close(sp);
    /* Nothing pending: no segment left behind. */
    assert_int_equal(count_segments(dir), 0);
    memset(&g, 0, sizeof(g));
    sp = open_dir(dir, 0, 0, &g);
    assert_int_equal(g.n, 0);
    kx_spool_close(sp);
    kx_test_rmrf(dir);
    free(dir);
}

static void test_segments_deleted_oldest_first(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("spool");
    const char *one[] = {"s"};
    char payload[200];
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    /* 256-byte segments: each alert (~250 bytes of record) fills one. */
    kx_spool *sp = open_dir(dir, 0, 256, NULL);
    uint64_t seq[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(kx_spool_append(sp, KEY_A, i, one, 1, payload, 199, &seq[i]), 0);
    assert_int_equal(count_segments(dir), 4);
    /* The newest three acknowledged: the oldest still pins every segment, because the acks
     * of the others may sit in younger segments. */
    for (int i = 1; i < 4; i++)
        assert_int_equal(kx_spool_ack(sp, seq[i], 0, KX_SPOOL_DELIVERED), 0);
    assert_true(count_segments(dir) >= 4);
    assert_int_equal(kx_spool_ack(sp, seq[0], 0, KX_SPOOL_DELIVERED), 0);
    /* Only the segment appended to stays. */
    assert_int_equal(count_segments(dir), 1);
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.segments, 1);
    kx_spool_close(sp);
    kx_test_rmrf(dir);
    free(dir);
}

/* The newest segment file of dir (by name), into out. */
static void newest_segment(const char *dir, char *out, size_t outlen)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "ls %s | grep '\\.seg$' | sort | tail -1", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char name[64] = "";
    assert_non_null(fgets(name, sizeof(name), p));
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    snprintf(out, outlen, "%s/%s", dir, name);
}

static void test_torn_tail_and_flipped_bit(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("spool");
    const char *one[] = {"s"};
    kx_spool *sp = open_dir(dir, 0, 0, NULL);
    uint64_t s;
    assert_int_equal(kx_spool_append(sp, KEY_A, 1, one, 1, "{\"n\":1}", 7, &s), 0);
    assert_int_equal(kx_spool_append(sp, KEY_A, 2, one, 1, "{\"n\":2}", 7, &s), 0);
    assert_int_equal(kx_spool_append(sp, KEY_A, 3, one, 1, "{\"n\":3}", 7, &s), 0);
    assert_int_equal(kx_spool_sync(sp), 0);
    char path[4200];
    newest_segment(dir, path, sizeof(path));
    /* Keep the file as it is: close would leave it (alerts are pending). */
    kx_spool_close(sp);
    size_t len = 0;
    char *d = kx_test_read_file(path, &len);
    assert_non_null(d);
    size_t rec = (len - 8) / 3; /* three records of the same size after the 8-byte magic */
    /* A flipped bit in the second record's payload, and half a fourth record at the end
     * (a crash in the middle of a write). */
    d[8 + rec + rec - 3] ^= 0x20;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, len, f), len);
    assert_int_equal(fwrite(d + 8, 1, rec / 2, f), rec / 2);
    fclose(f);
    free(d);

    uint64_t before = kx_metric_get(KX_M_SPOOL_CORRUPT_BYTES);
    got g = {0};
    sp = open_dir(dir, 0, 0, &g);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.payload[0], "{\"n\":1}");
    assert_string_equal(g.payload[1], "{\"n\":3}");
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.skipped_bytes, rec + rec / 2);
    assert_int_equal(kx_metric_get(KX_M_SPOOL_CORRUPT_BYTES) - before, rec + rec / 2);
    /* Appends go on in a new segment, so nothing follows the torn bytes. */
    assert_int_equal(kx_spool_append(sp, KEY_B, 4, one, 1, "{\"n\":4}", 7, &s), 0);
    assert_int_equal(s, 4);
    kx_spool_close(sp);
    memset(&g, 0, sizeof(g));
    sp = open_dir(dir, 0, 0, &g);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.payload[2], "{\"n\":4}");
    kx_spool_close(sp);
    kx_test_rmrf(dir);
    free(dir);
}

static void test_cap_refuses_until_acked(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("spool");
    const char *one[] = {"s"};
    char payload[1000];
    memset(payload, 'y', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    kx_spool *sp = open_dir(dir, 3000, 1024, NULL);
    uint64_t seq[8];
    size_t n = 0;
    int rc;
    while ((rc = kx_spool_append(sp, KEY_A, 0, one, 1, payload, 999, &seq[n])) == 0)
        n++;
    assert_int_equal(rc, -ENOSPC);
    assert_int_equal(n, 3);
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    assert_true(st.full);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kx_spool_ack(sp, seq[i], 0, KX_SPOOL_DELIVERED), 0);
    kx_spool_stats_get(sp, &st);
    assert_false(st.full);
    assert_int_equal(kx_spool_append(sp, KEY_A, 0, one, 1, payload, 999, &seq[0]), 0);
    kx_spool_close(sp);
    kx_test_rmrf(dir);
    free(dir);
}

/* One alert a slow sink has not taken must not pin every newer segment: the oldest, mostly
 * acknowledged segments are compacted (its pending alerts move forward with the acks of the
 * sinks already done), so appends go on; reading back gives exactly what is pending. */
static void test_slow_sink_does_not_fill_the_spool(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("spool");
    const char *two[] = {"fast", "slow"};
    char payload[300];
    memset(payload, 'p', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    kx_spool *sp = open_dir(dir, 65536, 4096, NULL);
    uint64_t stuck;
    assert_int_equal(kx_spool_append(sp, KEY_A, 1, two, 2, "{\"stuck\":1}", 11, &stuck), 0);
    assert_int_equal(kx_spool_ack(sp, stuck, 0, KX_SPOOL_DELIVERED), 0); /* fast took it */
    assert_int_equal(kx_spool_sync(sp), 0);
    /* Its first segment as it is now: put back later, as if a crash had lost its deletion. */
    char first[4300];
    newest_segment(dir, first, sizeof(first));
    size_t first_len = 0;
    char *first_data = kx_test_read_file(first, &first_len);
    assert_non_null(first_data);
    /* 2,000 more alerts (~700 KB, ten times the cap), each taken by both sinks at once. */
    for (int i = 0; i < 2000; i++) {
        uint64_t seq;
        int rc = kx_spool_append(sp, KEY_B, 2, two, 2, payload, 299, &seq);
        if (rc)
            fail_msg("append %d: %d", i, rc);
        assert_int_equal(kx_spool_ack(sp, seq, 0, KX_SPOOL_DELIVERED), 0);
        assert_int_equal(kx_spool_ack(sp, seq, 1, KX_SPOOL_DELIVERED), 0);
    }
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.pending, 1);
    assert_true(st.bytes < 65536);
    assert_true(count_segments(dir) <= 16);
    assert_int_equal(kx_spool_sync(sp), 0);
    kx_spool_close(sp);
    /* Read back: the stuck alert, for the slow sink only. */
    got g = {0};
    sp = open_dir(dir, 65536, 4096, &g);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.seq[0], stuck);
    assert_int_equal(g.pending[0], 2);
    assert_string_equal(g.payload[0], "{\"stuck\":1}");
    kx_spool_close(sp);
    /* The old segment back (a deletion lost in a crash): still one alert, the same sinks. */
    FILE *w = fopen(first, "wb");
    assert_non_null(w);
    assert_int_equal(fwrite(first_data, 1, first_len, w), first_len);
    fclose(w);
    free(first_data);
    memset(&g, 0, sizeof(g));
    sp = open_dir(dir, 65536, 4096, &g);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.pending[0], 2);
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.pending, 1);
    assert_int_equal(kx_spool_ack(sp, stuck, 1, KX_SPOOL_DELIVERED), 0);
    kx_spool_close(sp);
    assert_int_equal(count_segments(dir), 0);
    kx_test_rmrf(dir);
    free(dir);
}

static void test_one_process_per_directory(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("spool");
    kx_spool *sp = open_dir(dir, 0, 0, NULL);
    kx_spool_opts o = {.dir = dir};
    kx_spool *other = NULL;
    kx_err err = {0};
    /* flock is per open file description: a second open in this process conflicts too. */
    assert_int_equal(kx_spool_open(&o, NULL, NULL, &other, &err), -EBUSY);
    assert_non_null(strstr(err.msg, "in use by another klaxon process"));
    kx_spool_close(sp);
    assert_int_equal(kx_spool_open(&o, NULL, NULL, &other, &err), 0);
    kx_spool_close(other);
    kx_test_rmrf(dir);
    free(dir);
}

static void test_memory_only(void **state)
{
    (void)state;
    kx_spool *sp = NULL;
    kx_err err = {0};
    kx_spool_opts o = {.max_bytes = 400};
    assert_int_equal(kx_spool_open(&o, NULL, NULL, &sp, &err), 0);
    assert_false(kx_spool_durable(sp));
    const char *two[] = {"a", "b"};
    uint64_t s1, s2;
    char payload[150];
    memset(payload, 'z', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    assert_int_equal(kx_spool_append(sp, KEY_A, 0, two, 2, payload, 149, &s1), 0);
    assert_int_equal(kx_spool_append(sp, KEY_A, 0, two, 2, payload, 149, &s2), 0);
    assert_int_equal(kx_spool_append(sp, KEY_A, 0, two, 2, payload, 149, &s2), -ENOSPC);
    assert_false(kx_spool_dirty(sp));
    assert_int_equal(kx_spool_sync(sp), 0);
    assert_int_equal(kx_spool_ack(sp, s1, 1, KX_SPOOL_DELIVERED), 0);
    assert_int_equal(kx_spool_ack(sp, s1, 0, KX_SPOOL_DEAD), 0);
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    assert_int_equal(st.pending, 1);
    assert_false(st.full);
    assert_int_equal(kx_spool_append(sp, KEY_A, 0, two, 2, payload, 149, &s2), 0);
    assert_int_equal(s2, 3);
    kx_spool_close(sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen_gives_unacknowledged),
        cmocka_unit_test(test_segments_deleted_oldest_first),
        cmocka_unit_test(test_torn_tail_and_flipped_bit),
        cmocka_unit_test(test_cap_refuses_until_acked),
        cmocka_unit_test(test_slow_sink_does_not_fill_the_spool),
        cmocka_unit_test(test_one_process_per_directory),
        cmocka_unit_test(test_memory_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
