/*
 * Window updates and the alerts of their crossings. A correlation alert fires when an update
 * brings a window to the crossing count (it satisfies the condition and one less would not).
 * Windows are [e - W, e] for each member time e; the store reports the earliest one, among
 * those ending at or after the event's own time, that this update completed: in time order
 * that is the event's own window, and a late event still completes the later window it
 * belongs to. Re-applying the same events after a store outage gives the same windows and
 * the same dedup_key (rule, group, window start): the router drops the repeat.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

/* Team and category of a correlation default to those of its first referenced rule. */
const char *kx__corr_team(const kx_rule *c)
{
    if (c->team || !c->nrefs)
        return c->team;
    return c->refs[0]->team;
}

const char *kx__corr_category(const kx_rule *c)
{
    if (c->category || !c->nrefs)
        return c->category;
    return c->refs[0]->category;
}

/* Entries of a correlation's alert group: its group-by fields, then for first_seen the
 * watched value fields (the alert is about one new value of its group). */
size_t kx__corr_ngroup(const kx_rule *c)
{
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    if (c->corr_type == KX_CORR_FIRST_SEEN)
        ng += c->nvalue_fields < KX_MAX_GROUP_BY ? c->nvalue_fields : KX_MAX_GROUP_BY;
    return ng;
}

const char *kx__corr_group_name(const kx_rule *c, size_t i)
{
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    return i < ng ? c->group_by[i] : c->value_names[i - ng];
}

kx_agg kx__corr_agg(kx_corr_type t)
{
    switch (t) {
    case KX_CORR_EVENT_COUNT:
        return KX_AGG_COUNT;
    case KX_CORR_VALUE_COUNT:
    case KX_CORR_TEMPORAL:
        return KX_AGG_DISTINCT; /* temporal: distinct rule positions */
    case KX_CORR_TEMPORAL_ORDERED:
        return KX_AGG_ORDERED;
    case KX_CORR_VALUE_SUM:
        return KX_AGG_SUM;
    case KX_CORR_VALUE_AVG:
        return KX_AGG_AVG;
    case KX_CORR_FIRST_SEEN:
        return KX_AGG_FIRST_SEEN;
    case KX_CORR_BASELINE:
        return KX_AGG_BASELINE;
    default:
        return KX_AGG_SHARE;
    }
}

static void corr_alert(kx_op *op, const kx_window_result *res, const kx_kv *group, size_t ng);

/* The op's group as (name, value) pairs into group (2 * KX_MAX_GROUP_BY); how many. */
static size_t op_group(const kx_op *op, kx_kv *group)
{
    size_t ng = kx__corr_ngroup(op->corr);
    for (size_t i = 0; i < ng; i++) {
        group[i].key = kx__corr_group_name(op->corr, i);
        group[i].value = op->strs.data + op->val_off[i];
    }
    return ng;
}

static void corr_fire(kx_op *op, const kx_window_result *res)
{
    kx_correlator *p = op->p;
    kx_rule *c = op->corr;
    kx_kv group[2 * KX_MAX_GROUP_BY];
    size_t ng = op_group(op, group);
    c->matches++;
    if (c->generate)
        corr_alert(op, res, group, ng);
    /* Chaining: this correlation's alert is an event for the correlations that reference it,
     * whether or not it is generated as an alert of its own (Sigma `generate`). */
    for (size_t i = 0; i < c->ncorrelations; i++)
        kx__corr_feed_alert(p, (kx_rule *)c->correlations[i], c, op, res);
}

static void corr_alert(kx_op *op, const kx_window_result *res, const kx_kv *group, size_t ng)
{
    kx_correlator *p = op->p;
    kx_rule *c = op->corr;
    /* The store gives evidence most recent first; alerts list it in time order. */
    const char *evs[64];
    size_t evl[64];
    size_t ne = res->nevidence < 64 ? res->nevidence : 64;
    /* The store keeps the key's most recent evidence, which can reach back past this
     * window (an earlier incident of the same group): keep only as many as were counted. */
    if ((uint64_t)ne > (uint64_t)res->cross_count)
        ne = (size_t)res->cross_count;
    for (size_t i = 0; i < ne; i++) {
        evs[i] = res->evidence[ne - 1 - i];
        evl[i] = res->evidence_len[ne - 1 - i];
    }
    bool first_seen = c->corr_type == KX_CORR_FIRST_SEEN;
    if (first_seen) {
        /* One event is the whole story: the store keeps no evidence for it, the op does. */
        ne = op->evidence.len ? 1 : 0;
        evs[0] = op->evidence.data;
        evl[0] = op->evidence.len;
    }
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = c->title,
        .rule_level = c->level,
        .team = kx__corr_team(c),
        .tenant = op->strs.data + op->tenant_off,
        .category = kx__corr_category(c),
        .group = group,
        .ngroup = ng,
        .count = first_seen ? 1 : res->cross_count,
        .has_value = c->corr_type != KX_CORR_EVENT_COUNT && !first_seen,
        .value = res->cross_value,
        .window_s = c->timespan_ms / 1000,
        .first_seen_ms = res->cross_first_ms,
        .last_seen_ms = res->cross_last_ms,
        .suppressed = res->suppressed,
        .tags = c->tags,
        .ntags = c->ntags,
        .events = evs,
        .events_len = evl,
        .nevents = ne,
    };
    kx__corr_send(p, &a, c, true);
}

void kx__window_cb(void *ud, int status, const kx_window_result *res)
{
    kx_op *op = ud;
    kx_correlator *p = op->p;
    if (kx__op_failed(op, status))
        return;
    if (status == 0 && p->host.window) {
        kx_kv group[2 * KX_MAX_GROUP_BY];
        size_t ng = op_group(op, group);
        p->host.window(p->host.ud, op->corr, group, ng, op->time_ms, res);
    }
    if (status == 0 && res->late) {
        kx_metric_inc(KX_M_EVENTS_LATE);
        char t[40];
        kx_time_format(op->time_ms, t, sizeof(t));
        kx_log_limited(&p->rl_late, KX_LOG_WARN, "correlate",
                       "rule %s: event at %s is later than the allowed lateness for its group "
                       "(%llds after its window): not counted",
                       op->corr->id, t, (long long)(kx__corr_lateness(p, op->corr) / 1000));
    } else if (status == 0 && res->crossed)
        corr_fire(op, res);
    else if (status == -ENOSPC)
        kx_log_limited(&p->rl_store, KX_LOG_WARN, "correlate",
                       "rule %s: state key cap reached, event not counted", op->corr->id);
    else if (status && status != -ECANCELED)
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "correlate", "rule %s: state update failed: %s",
                       op->corr->id, strerror(-status));
    if (status == 0 && !res->late && op->corr->resolve_auto && op->corr->generate)
        kx__resolve_track(op, res);
    kx__op_done(op);
}

/* The store call for a window update. */
void kx__window_add_of(const kx_op *op, kx_window_add *out)
{
    const kx_correlator *p = op->p;
    const kx_rule *c = op->corr;
    *out = (kx_window_add){
        .key = op->key,
        .member = op->member.data,
        .time_ms = op->time_ms,
        .window_ms = c->timespan_ms,
        .ttl_ms = c->timespan_ms + kx__corr_lateness(p, c),
        .evidence = op->evidence.len ? op->evidence.data : NULL,
        .evidence_len = op->evidence.len,
        .max_evidence = p->opts.max_evidence,
        .agg = kx__corr_agg(c->corr_type),
        .cond = c->cond, /* the rule's own terms (klaxon/compare.h) */
        .ncond = c->ncond,
        .suppress_ms = c->suppress_ms,
        .deviations = c->deviations,
        .history = c->history,
        .evidence_if_crossed = true,
    };
}

int kx__window_issue(kx_op *op)
{
    kx_correlator *p = op->p;
    kx_window_add add;
    kx__window_add_of(op, &add);
    return p->store_down ? -EAGAIN : kx_store_window_add(p->store, &add, kx__window_cb, op);
}
