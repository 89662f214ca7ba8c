/*
 * file source: exact lines, offsets, CRLF, oversize lines, batching and flow control,
 * several files, stdin through a pipe, pause/resume and stop.
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
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "klaxon/metrics.h"
#include "klaxon/source.h"
#include "kx_test.h"

#define MAX_REC 64
#define REC_LEN 2048

typedef struct rec {
    char payload[REC_LEN];
    size_t len;
    int64_t offset;
    bool oversize;
    int batch; /* index of the batch that delivered it */
} rec;

typedef struct fixture {
    struct ev_loop *loop;
    char *dir;
    kx_source *src;
    bool auto_done; /* call batch_done from inside the callback */
    rec recs[MAX_REC];
    size_t nrec;
    size_t batch_sizes[MAX_REC];
    int nbatches;
    bool batch_out; /* a batch is delivered and not done */
    int ends;
    int ends_with_batch_out; /* end called while a batch was out: must stay 0 */
} fixture;

static void on_batch(void *ud, const kx_msg *msgs, size_t n)
{
    fixture *f = ud;

    /* Flow control: never a new batch before the previous one is done. */
    assert_false(f->batch_out);
    f->batch_sizes[f->nbatches] = n;
    for (size_t i = 0; i < n; i++) {
        rec *r = &f->recs[f->nrec++];
        assert_true(f->nrec <= MAX_REC);
        assert_true(msgs[i].len < REC_LEN);
        assert_null(msgs[i].topic);
        assert_true(msgs[i].timestamp_ms > 0);
        memcpy(r->payload, msgs[i].payload, msgs[i].len);
        r->payload[msgs[i].len] = '\0';
        r->len = msgs[i].len;
        r->offset = msgs[i].offset;
        r->oversize = msgs[i].oversize;
        r->batch = f->nbatches;
    }
    f->nbatches++;
    f->batch_out = true;
    if (f->auto_done) {
        f->batch_out = false;
        kx_source_batch_done(f->src);
    }
}

static void on_end(void *ud)
{
    fixture *f = ud;

    if (f->batch_out)
        f->ends_with_batch_out++;
    f->ends++;
}

static bool ended(void *ud)
{
    return ((fixture *)ud)->ends > 0;
}

static bool batch_is_out(void *ud)
{
    return ((fixture *)ud)->batch_out;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));

    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->dir = kx_test_tmpdir("filesrc");
    f->auto_done = true;
    kx_metrics_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    kx_source_destroy(f->src);
    /* Every watcher of the source is stopped: the loop has nothing left to do. */
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(f->loop);
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static char *write_tmp(fixture *f, const char *name, const char *data)
{
    size_t n = strlen(f->dir) + strlen(name) + 2;
    char *p = malloc(n);

    snprintf(p, n, "%s/%s", f->dir, name);
    assert_int_equal(kx_test_write_file(p, data), 0);
    return p;
}

static void create(fixture *f, const char *const *paths, size_t npaths, size_t max_line,
                   size_t batch)
{
    kx_err err;

    assert_int_equal(kx_file_source_create(f->loop, paths, npaths, max_line, batch, on_batch, f,
                                           on_end, f, &f->src, &err),
                     0);
}

static void assert_rec(const rec *r, const char *payload, int64_t offset, bool oversize)
{
    assert_string_equal(r->payload, payload);
    assert_int_equal(r->len, strlen(payload));
    assert_int_equal(r->offset, offset);
    assert_int_equal(r->oversize, oversize);
}

static void test_lines_crlf_empty(void **state)
{
    fixture *f = *state;
    char *p = write_tmp(f, "a.log", "alpha\r\nbeta\n\ngamma\r\n\r\nlast");
    const char *paths[] = {p};

    create(f, paths, 1, 1024, 100);
    kx_source_start(f->src);
    assert_true(kx_test_run_until(f->loop, ended, f, 5000));
    assert_int_equal(f->nrec, 6);
    assert_rec(&f->recs[0], "alpha", 1, false);
    assert_rec(&f->recs[1], "beta", 2, false);
    assert_rec(&f->recs[2], "", 3, false);
    assert_rec(&f->recs[3], "gamma", 4, false);
    assert_rec(&f->recs[4], "", 5, false);
    assert_rec(&f->recs[5], "last", 6, false);
    assert_int_equal(f->nbatches, 1);
    assert_int_equal(f->ends, 1);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_CONSUMED), 6);
    assert_int_equal(kx_source_offsets_stored(f->src), 6);
    free(p);
}

static void test_oversize(void **state)
{
    fixture *f = *state;
    /* max_line 8: exactly 8 (also before CRLF) fits; 9 and more are cut to 8 and flagged. */
    char *p =
        write_tmp(f, "o.log", "short\n0123456789abcdef\n01234567\r\n012345678\n01234567\r\nend\n");
    const char *paths[] = {p};

    create(f, paths, 1, 8, 100);
    kx_source_start(f->src);
    assert_true(kx_test_run_until(f->loop, ended, f, 5000));
    assert_int_equal(f->nrec, 6);
    assert_rec(&f->recs[0], "short", 1, false);
    assert_rec(&f->recs[1], "01234567", 2, true);
    assert_rec(&f->recs[2], "01234567", 3, false);
    assert_rec(&f->recs[3], "01234567", 4, true);
    assert_rec(&f->recs[4], "01234567", 5, false);
    assert_rec(&f->recs[5], "end", 6, false);
    free(p);
}

/* A line far longer than the read buffer: cut once, and the next line starts cleanly. */
static void test_oversize_spans_reads(void **state)
{
    fixture *f = *state;
    size_t big = 300 * 1024;
    char *data = malloc(big + 64);
    char expect[1001];

    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    strcpy(data + big, "\nnext line\n");
    memcpy(expect, data, 1000);
    expect[1000] = '\0';
    char *p = write_tmp(f, "big.log", data);
    const char *paths[] = {p};

    create(f, paths, 1, 1000, 100);
    kx_source_start(f->src);
    assert_true(kx_test_run_until(f->loop, ended, f, 5000));
    assert_int_equal(f->nrec, 2);
    assert_rec(&f->recs[0], expect, 1, true);
    assert_rec(&f->recs[1], "next line", 2, false);
    free(data);
    free(p);
}

/* batch 3 over 7 lines: 3 + 3 + 1; the next batch waits for batch_done, and end comes
 * only after the last batch is done. */
static void test_batches_wait_for_done(void **state)
{
    fixture *f = *state;
    char *p = write_tmp(f, "b.log", "1\n2\n3\n4\n5\n6\n7\n");
    const char *paths[] = {p};

    f->auto_done = false;
    create(f, paths, 1, 64, 3);
    kx_source_start(f->src);
    for (int b = 0; b < 3; b++) {
        assert_true(kx_test_run_until(f->loop, batch_is_out, f, 5000));
        /* The loop keeps running with the batch out: nothing more is delivered. */
        assert_false(kx_test_run_until(f->loop, ended, f, 30));
        assert_int_equal(f->nbatches, b + 1);
        f->batch_out = false;
        kx_source_batch_done(f->src);
    }
    assert_true(kx_test_run_until(f->loop, ended, f, 5000));
    assert_int_equal(f->ends_with_batch_out, 0);
    assert_int_equal(f->nbatches, 3);
    assert_int_equal(f->batch_sizes[0], 3);
    assert_int_equal(f->batch_sizes[1], 3);
    assert_int_equal(f->batch_sizes[2], 1);
    assert_int_equal(f->nrec, 7);
    for (size_t i = 0; i < 7; i++) {
        char want[4];
        snprintf(want, sizeof(want), "%zu", i + 1);
        assert_rec(&f->recs[i], want, (int64_t)i + 1, false);
        assert_int_equal(f->recs[i].batch, (int)(i / 3));
    }
    free(p);
}

/* Offsets restart per file; a file without a final newline does not join the next one. */
static void test_several_files(void **state)
{
    fixture *f = *state;
    char *a = write_tmp(f, "a.log", "a1\na2");
    char *e = write_tmp(f, "empty.log", "");
    char *b = write_tmp(f, "b.log", "b1\n");
    const char *paths[] = {a, e, b};

    create(f, paths, 3, 64, 100);
    kx_source_start(f->src);
    assert_true(kx_test_run_until(f->loop, ended, f, 5000));
    assert_int_equal(f->nrec, 3);
    assert_rec(&f->recs[0], "a1", 1, false);
    assert_rec(&f->recs[1], "a2", 2, false);
    assert_rec(&f->recs[2], "b1", 1, false);
    assert_int_equal(f->nbatches, 1);
    free(a);
    free(e);
    free(b);
}

static void test_stdin_pipe(void **state)
{
    fixture *f = *state;
    const char *paths[] = {"-"};
    const char *data = "from\r\nstdin\n";
    int fds[2];
    int saved = dup(STDIN_FILENO);

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], data, strlen(data)), (ssize_t)strlen(data));
    close(fds[1]);
    assert_int_equal(dup2(fds[0], STDIN_FILENO), STDIN_FILENO);
    close(fds[0]);

    create(f, paths, 1, 64, 100);
    kx_source_start(f->src);
    assert_true(kx_test_run_until(f->loop, ended, f, 5000));
    dup2(saved, STDIN_FILENO);
    close(saved);
    assert_int_equal(f->nrec, 2);
    assert_rec(&f->recs[0], "from", 1, false);
    assert_rec(&f->recs[1], "stdin", 2, false);
}

static void test_pause_resume_stop(void **state)
{
    fixture *f = *state;
    char *p = write_tmp(f, "p.log", "1\n2\n3\n4\n");
    const char *paths[] = {p};

    f->auto_done = false;
    create(f, paths, 1, 64, 1);
    kx_source_start(f->src);
    assert_true(kx_test_run_until(f->loop, batch_is_out, f, 5000));
    kx_source_pause(f->src);
    f->batch_out = false;
    kx_source_batch_done(f->src);
    assert_false(kx_test_run_until(f->loop, batch_is_out, f, 50));
    assert_int_equal(f->nbatches, 1);
    assert_int_equal(kx_metric_get(KX_M_SOURCE_PAUSES), 1);

    kx_source_resume(f->src);
    assert_true(kx_test_run_until(f->loop, batch_is_out, f, 5000));
    assert_int_equal(f->nbatches, 2);
    assert_rec(&f->recs[1], "2", 2, false);

    /* Stop: no more batches, end runs once even though input remains. */
    kx_source_stop(f->src);
    assert_int_equal(f->ends, 1);
    f->batch_out = false;
    kx_source_batch_done(f->src);
    kx_source_stop(f->src);
    assert_false(kx_test_run_until(f->loop, batch_is_out, f, 50));
    assert_int_equal(f->nbatches, 2);
    assert_int_equal(f->ends, 1);
    free(p);
}

static void test_create_errors(void **state)
{
    fixture *f = *state;
    const char *missing[] = {"/nonexistent/klaxon.log"};
    kx_err err;

    assert_int_equal(
        kx_file_source_create(f->loop, missing, 1, 64, 10, on_batch, f, on_end, f, &f->src, &err),
        -EINVAL);
    assert_null(f->src);
    assert_string_equal(err.file, "/nonexistent/klaxon.log");
    assert_string_equal(err.msg, "No such file or directory");
    assert_int_equal(
        kx_file_source_create(f->loop, missing, 0, 0, 10, on_batch, f, on_end, f, &f->src, &err),
        -EINVAL);
    assert_int_equal(
        kx_file_source_create(f->loop, missing, 0, 64, 0, on_batch, f, on_end, f, &f->src, &err),
        -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lines_crlf_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_spans_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_wait_for_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stdin_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
