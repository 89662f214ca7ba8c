/*
 * `klaxon rules explain` for a correlation rule: the events go through the engine of `run` --
 * the compiled rules (kx_ruleset_match), then the correlate stage with an in-memory store, on
 * the events' own time -- and after each event the explanation gains what the store answered
 * for the rule's window of the event's group (how many events it holds, from when to when,
 * whether the condition holds) and the alerts the rule raised. At the end of the events, rules
 * judged as time passes (absence, "at most") are judged once, as `replay` does.
 *
 * Ownership: the driver owns its loop, store and correlator; it borrows the ruleset and the
 * rule, which must outlive it.
 */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "klaxon/correlate.h"

struct kx__corr_explain {
    struct ev_loop *loop;
    kx_store *store;
    kx_correlator *cor;
    kx_ruleset *rs;
    const kx_rule *rule;
    const kx_event *ev; /* the event being explained */
    json_t *windows;    /* this event's window answers for the rule */
    json_t *alerts;     /* the alerts the rule raised since the last event */
};

static json_t *time_json(int64_t ms)
{
    char t[40];
    kx_time_format(ms, t, sizeof(t));
    return json_string(t);
}

static json_t *group_json(const kx_kv *group, size_t ng)
{
    json_t *g = json_object();
    for (size_t i = 0; i < ng; i++)
        json_object_set_new(g, group[i].key, json_string(group[i].value));
    return g;
}

static void on_window(void *ud, const kx_rule *r, const kx_kv *group, size_t ng, int64_t time_ms,
                      const kx_window_result *res)
{
    kx__corr_explain *x = ud;
    if (r != x->rule)
        return;
    json_t *w = json_object();
    json_object_set_new(w, "group", group_json(group, ng));
    json_object_set_new(w, "time", time_json(time_ms));
    if (res->late) {
        json_object_set_new(w, "late", json_true());
    } else {
        json_object_set_new(w, "count", json_integer(res->count));
        json_object_set_new(w, "first", time_json(res->first_ms));
        json_object_set_new(w, "last", time_json(res->last_ms));
        json_object_set_new(w, "condition_met", json_boolean(res->met || res->crossed));
        json_object_set_new(w, "fired", json_boolean(res->crossed));
    }
    json_array_append_new(x->windows, w);
}

static void on_alert(void *ud, kx_alert *a, const kx_rule *r, bool may_backfill)
{
    (void)may_backfill;
    kx__corr_explain *x = ud;
    if (r != x->rule)
        return;
    json_t *j = json_object();
    json_object_set_new(j, "group", group_json(a->group, a->ngroup));
    json_object_set_new(j, "count", json_integer(a->count));
    if (a->has_value)
        json_object_set_new(j, "value", json_real(a->value));
    json_object_set_new(j, "first_seen", time_json(a->first_seen_ms));
    json_object_set_new(j, "last_seen", time_json(a->last_seen_ms));
    if (a->status)
        json_object_set_new(j, "status", json_string(a->status));
    json_array_append_new(x->alerts, j);
}

static void on_idle(void *ud)
{
    (void)ud;
}

static void on_pause(void *ud, bool pause)
{
    (void)ud, (void)pause;
}

/* As the pipeline does: each correlation referencing a matched rule counts the event. */
static void on_match(kx_rule *r, void *ud)
{
    kx__corr_explain *x = ud;
    const char *degraded = kx_ruleset_match_reason(x->rs);
    for (size_t i = 0; i < r->ncorrelations; i++)
        kx_correlate_event(x->cor, (kx_rule *)r->correlations[i], r, x->ev, degraded);
}

int kx__corr_explain_create(kx_ruleset *rs, const kx_rule *rule, int64_t lateness_ms,
                            kx__corr_explain **out)
{
    kx__corr_explain *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->rs = rs;
    x->rule = rule;
    x->loop = ev_loop_new(EVFLAG_AUTO);
    x->windows = json_array();
    x->alerts = json_array();
    kx_correlate_opts co = {.evidence_bytes = 16 << 10,
                            .max_evidence = 5,
                            .lateness_ms = lateness_ms,
                            .max_groups = 100000};
    kx_correlate_host host = {
        .ud = x, .alert = on_alert, .idle = on_idle, .pause = on_pause, .window = on_window};
    int rc = !x->loop || !x->windows || !x->alerts ? -ENOMEM
                                                   : kx_store_memory_create(x->loop, 0, &x->store);
    if (!rc)
        rc = kx_correlator_create(x->loop, rs, x->store, &co, &host, &x->cor);
    if (rc) {
        kx__corr_explain_destroy(x);
        return rc;
    }
    *out = x;
    return 0;
}

void kx__corr_explain_destroy(kx__corr_explain *x)
{
    if (!x)
        return;
    kx_correlator_destroy(x->cor);
    kx_store_destroy(x->store);
    if (x->loop)
        ev_loop_destroy(x->loop);
    json_decref(x->windows);
    json_decref(x->alerts);
    free(x);
}

/* Runs the loop until the correlator has nothing in flight; hands over what was seen. */
static void drain(kx__corr_explain *x, json_t *e)
{
    while (kx_correlate_pending(x->cor))
        ev_run(x->loop, EVRUN_ONCE);
    kx_correlate_batch_done(x->cor);
    json_object_set_new(e, "windows", x->windows);
    json_object_set_new(e, "alerts", x->alerts);
    x->windows = json_array();
    x->alerts = json_array();
}

void kx__corr_explain_event(kx__corr_explain *x, const kx_event *ev, json_t *e)
{
    static const kx_msg msg = {.topic = "explain"};
    x->ev = ev;
    kx_correlate_batch_begin(x->cor);
    kx_correlate_seen(x->cor, &msg, ev->time_ms);
    kx_ruleset_match(x->rs, ev, on_match, x);
    kx_correlate_batch_end(x->cor);
    x->ev = NULL;
    drain(x, e);
}

json_t *kx__corr_explain_finish(kx__corr_explain *x)
{
    kx_correlate_finish(x->cor);
    json_t *e = json_object();
    drain(x, e);
    json_object_del(e, "windows");
    return e;
}
