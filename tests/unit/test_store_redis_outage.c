/*
 * The Redis store across outages, against a real redis-server we stop and restart by pid:
 * pending ops fail with -EIO, the state callback hears down then up, calls while down are
 * refused with -EAGAIN, and replaying the failed ops after the restart gives exactly the
 * answers an uninterrupted run gives (window adds are idempotent).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>
#include <hiredis/hiredis.h>

#include "kx_test.h"
#include "redis_server.h"
#include "klaxon/metrics.h"
#include "klaxon/store.h"
#include "state/store_impl.h"

#define T0 INT64_C(1700000000000)
#define NOPS 6

typedef struct res {
    int calls;
    int status;
    int64_t count, first, last;
    bool added;
} res;

typedef struct fx {
    kx_test_redis srv;
    struct ev_loop *loop;
    kx_store *s;
    int ups, downs; /* state callback transitions */
    bool up;
    res r[NOPS];
} fx;

static void state_cb(void *ud, bool up)
{
    fx *f = ud;
    f->up = up;
    if (up)
        f->ups++;
    else
        f->downs++;
}

static void res_cb(void *ud, int status, const kx_window_result *wr)
{
    res *r = ud;
    r->calls++;
    r->status = status;
    if (status == 0) {
        r->count = wr->count;
        r->first = wr->first_ms;
        r->last = wr->last_ms;
        r->added = wr->added;
    }
}

static int issue(fx *f, int i)
{
    char member[16];
    snprintf(member, sizeof(member), "m%d", i);
    kx_window_add op = {.key = "ssh/brute/10.0.0.9",
                        .member = member,
                        .time_ms = T0 + i * 1000,
                        .window_ms = 60000,
                        .ttl_ms = 120000};
    memset(&f->r[i], 0, sizeof(f->r[i]));
    return kx_store_window_add(f->s, &op, res_cb, &f->r[i]);
}

typedef struct range {
    fx *f;
    int from, to;
} range;

static bool all_done(void *ud)
{
    range *g = ud;
    for (int i = g->from; i < g->to; i++)
        if (g->f->r[i].calls == 0)
            return false;
    return true;
}

static bool is_up(void *ud)
{
    return ((fx *)ud)->up;
}

static bool is_down(void *ud)
{
    return ((fx *)ud)->downs > 0 && !((fx *)ud)->up;
}

static void run_ops(fx *f, int from, int to)
{
    for (int i = from; i < to; i++)
        assert_int_equal(issue(f, i), 0);
    range g = {f, from, to};
    assert_true(kx_test_run_until(f->loop, all_done, &g, 10000));
}

/* What an uninterrupted run answers for op i: all earlier members are inside the window. */
static void assert_clean(const res *r, int i, bool added)
{
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->count, i + 1);
    assert_int_equal(r->first, T0);
    assert_int_equal(r->last, T0 + i * 1000);
    assert_int_equal(r->added, added);
}

static void sync_cmd(int port, const char *c)
{
    redisContext *rc = redisConnect("127.0.0.1", port);
    assert_non_null(rc);
    assert_int_equal(rc->err, 0);
    redisReply *r = redisCommand(rc, c);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    redisFree(rc);
}

/* The klaxon_store_up gauge as /metrics shows it. */
static bool gauge_up(void)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_metrics_render(&b), 0);
    bool up = strstr(b.data, "\nklaxon_store_up 1\n") != NULL;
    kx_buf_fini(&b);
    return up;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (kx_test_redis_start(&f->srv) != 0)
        return -1;
    f->loop = ev_loop_new(EVFLAG_AUTO);
    kx_metrics_reset();
    if (kx_store_redis_create(f->loop, "127.0.0.1", f->srv.port, "kxtest:", &f->s) != 0)
        return -1;
    kx_store_set_state_cb(f->s, state_cb, f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->s)
        kx_store_destroy(f->s);
    assert_false(ev_run(f->loop, EVRUN_NOWAIT));
    ev_loop_destroy(f->loop);
    kx_test_redis_stop(&f->srv);
    free(f);
    return 0;
}

static void test_outage_and_replay(void **state)
{
    fx *f = *state;
    assert_true(kx_test_run_until(f->loop, is_up, f, 5000));
    assert_int_equal(f->ups, 1);

    run_ops(f, 0, 3);
    for (int i = 0; i < 3; i++)
        assert_clean(&f->r[i], i, true);
    /* Persist what is acknowledged so far: the restarted server loads it back. */
    sync_cmd(f->srv.port, "SAVE");

    /* Issue three more and kill the server before they are answered. */
    for (int i = 3; i < NOPS; i++)
        assert_int_equal(issue(f, i), 0);
    assert_int_equal(kx_store_pending(f->s), 3);
    assert_int_equal(kx_test_redis_halt(&f->srv), 0);
    range g = {f, 3, NOPS};
    assert_true(kx_test_run_until(f->loop, all_done, &g, 10000));
    for (int i = 3; i < NOPS; i++) {
        assert_int_equal(f->r[i].calls, 1);
        assert_int_equal(f->r[i].status, -EIO);
    }
    assert_int_equal(kx_store_pending(f->s), 0);
    assert_int_equal(f->downs, 1);
    assert_false(f->up);
    assert_false(kx_store_is_up(f->s));
    assert_false(gauge_up());
    assert_int_equal(kx_metric_get(KX_M_STORE_ERRORS), 3);

    /* While down: refused at once, the callback never runs. */
    assert_int_equal(issue(f, 3), -EAGAIN);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(f->r[3].calls, 0);
    assert_int_equal(kx_metric_get(KX_M_STORE_ERRORS), 4);

    assert_int_equal(kx_test_redis_restart(&f->srv), 0);
    assert_true(kx_test_run_until(f->loop, is_up, f, 10000));
    assert_int_equal(f->ups, 2);
    assert_int_equal(f->downs, 1);
    assert_true(gauge_up());
    assert_true(kx_metric_get(KX_M_STORE_RECONNECTS) >= 1);

    /* Replay everything since the last commit: the same answers as without the outage. */
    run_ops(f, 0, NOPS);
    for (int i = 0; i < NOPS; i++)
        assert_clean(&f->r[i], i, i >= 3);
    assert_int_equal(kx_metric_get(KX_M_STORE_ERRORS), 4);
}

static void test_down_at_start(void **state)
{
    fx *f = *state;
    assert_true(kx_test_run_until(f->loop, is_up, f, 5000));
    /* A second store pointed at a server that is not running yet. */
    assert_int_equal(kx_test_redis_halt(&f->srv), 0);
    assert_true(kx_test_run_until(f->loop, is_down, f, 5000));
    fx g = {0};
    g.loop = f->loop;
    assert_int_equal(kx_store_redis_create(f->loop, "127.0.0.1", f->srv.port, "kxtest:", &g.s), 0);
    kx_store_set_state_cb(g.s, state_cb, &g);
    assert_false(kx_store_is_up(g.s));
    assert_int_equal(issue(&g, 0), -EAGAIN);
    /* Never up, so no "down" transition to report. */
    assert_int_equal(g.downs, 0);
    assert_int_equal(kx_test_redis_restart(&f->srv), 0);
    assert_true(kx_test_run_until(f->loop, is_up, &g, 10000));
    assert_true(kx_test_run_until(f->loop, is_up, f, 10000));
    assert_int_equal(g.ups, 1);
    assert_int_equal(g.downs, 0);
    run_ops(&g, 0, 1);
    assert_clean(&g.r[0], 0, true);
    kx_store_destroy(g.s);
}

static void test_command_timeout(void **state)
{
    fx *f = *state;
    assert_true(kx_test_run_until(f->loop, is_up, f, 5000));
    kx__store_redis_set_timeout(f->s, 300);
    /* A server that accepts but never answers: stopped, not gone. */
    assert_int_equal(kill(f->srv.pid, SIGSTOP), 0);
    assert_int_equal(issue(f, 0), 0);
    range g = {f, 0, 1};
    assert_true(kx_test_run_until(f->loop, all_done, &g, 5000));
    assert_int_equal(f->r[0].status, -EIO);
    assert_int_equal(f->downs, 1);
    assert_false(kx_store_is_up(f->s));
    assert_int_equal(kill(f->srv.pid, SIGCONT), 0);
    assert_true(kx_test_run_until(f->loop, is_up, f, 10000));
    assert_int_equal(f->ups, 2);
    /* Idle after the reconnect, for longer than the timeout: nothing is awaited, so the
     * connection stays (the watchdog runs only while something is). */
    assert_false(kx_test_run_until(f->loop, is_down, f, 1000));
    assert_int_equal(f->downs, 1);
    assert_true(kx_store_is_up(f->s));
    run_ops(f, 0, 2);
    /* Whether the stopped server applied op 0 before it saw the close is up to it: `added`
     * may go either way, the counts may not. */
    assert_int_equal(f->r[0].status, 0);
    assert_int_equal(f->r[0].count, 1);
    assert_int_equal(f->r[0].first, T0);
    assert_clean(&f->r[1], 1, true);
}

typedef struct killer {
    kx_store **s;
    int calls;
    int status[2];
} killer;

static void kill_store_cb(void *ud, int status, const kx_window_result *wr)
{
    (void)wr;
    killer *k = ud;
    k->status[k->calls++] = status;
    if (k->calls == 1) {
        kx_store_destroy(*k->s);
        *k->s = NULL;
    }
}

static bool killer_done(void *ud)
{
    return ((killer *)ud)->calls == 2;
}

static void test_destroy_in_eio_callback(void **state)
{
    fx *f = *state;
    assert_true(kx_test_run_until(f->loop, is_up, f, 5000));
    killer k = {.s = &f->s};
    kx_window_add op = {.key = "k", .member = "m", .time_ms = T0, .window_ms = 1, .ttl_ms = 1};
    assert_int_equal(kx_store_window_add(f->s, &op, kill_store_cb, &k), 0);
    assert_int_equal(kx_store_window_add(f->s, &op, kill_store_cb, &k), 0);
    assert_int_equal(kx_test_redis_halt(&f->srv), 0);
    /* The first -EIO callback destroys the store while hiredis is failing the queue. */
    assert_true(kx_test_run_until(f->loop, killer_done, &k, 5000));
    assert_int_equal(k.status[0], -EIO);
    assert_int_equal(k.status[1], -ECANCELED);
    assert_null(f->s);
    assert_int_equal(f->downs, 0); /* a destroyed store reports nothing */
}

int main(void)
{
    /* hiredis writes with write(2): a peer that went away must give EPIPE, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outage_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_eio_callback, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
