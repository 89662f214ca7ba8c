/*
 * `resolve: auto`. An alerted group of a sliding-window rule is an open incident, kept as an
 * absence-like sighting under the rule's resolve key: its time is the last time the condition
 * held, its payload the group and the alert's first_seen and count. The watermark passing a
 * timespan after that time resolves it (a due question, as for absence); a new alert of the
 * group while it is open replaces it and resolves it at once.
 */
#include <stdio.h>
#include <string.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

/* The firing alert a resolve payload holds: "first_seen count" after the group. */
static bool resolve_payload_alert(const char *payload, size_t len, size_t ng, kx_buf *scratch,
                                  int64_t *af, int64_t *count)
{
    size_t offs[KX_MAX_GROUP_BY + 1];
    const char *ev;
    size_t evl;
    char num[48];
    if (!kx__payload_split(payload, len, ng, scratch, offs, &ev, &evl) || evl >= sizeof(num))
        return false;
    memcpy(num, ev, evl);
    num[evl] = '\0';
    long long a, n;
    if (sscanf(num, "%lld %lld", &a, &n) != 2)
        return false;
    *af = a;
    *count = n;
    return true;
}

/* The incident the payload holds is over; last_ms: the last time its condition held.
 * af_override: its first_seen when the caller knows it better than the payload. */
static void resolve_alert(kx_correlator *p, kx_rule *c, const char *payload, size_t len,
                          int64_t last_ms, const int64_t *af_override)
{
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    int64_t af, count;
    size_t offs[KX_MAX_GROUP_BY + 1];
    const char *ev;
    size_t evl;
    if (!resolve_payload_alert(payload, len, ng, &p->payload, &af, &count) ||
        !kx__payload_split(payload, len, ng, &p->payload, offs, &ev, &evl)) {
        kx_log(KX_LOG_ERROR, "correlate", "rule %s: stored incident is damaged: not resolved",
               c->id);
        return;
    }
    if (af_override)
        af = *af_override;
    kx_kv group[KX_MAX_GROUP_BY];
    for (size_t i = 0; i < ng; i++) {
        group[i].key = c->group_by[i];
        group[i].value = p->payload.data + offs[i + 1];
    }
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = c->title,
        .rule_level = c->level,
        .team = kx__corr_team(c),
        .tenant = p->payload.data + offs[0],
        .category = kx__corr_category(c),
        .group = group,
        .ngroup = ng,
        .count = count,
        .window_s = c->timespan_ms / 1000,
        .first_seen_ms = af, /* the firing alert's: the same dedup_key */
        .last_seen_ms = last_ms,
        .status = "resolved",
        .tags = c->tags,
        .ntags = c->ntags,
    };
    /* Never backfill a resolve: the incident it closes may have been paged. */
    kx__corr_send(p, &a, c, false);
}

/* After a window update of a `resolve: auto` rule: a crossing opens an incident (replacing
 * the group's open one), an event that keeps the condition met extends the open one. */
void kx__resolve_track(const kx_op *op, const kx_window_result *res)
{
    kx_correlator *p = op->p;
    kx_rule *c = op->corr;
    if (!res->met || (!res->crossed && !res->prev_alerted))
        return;
    kx_op *t = kx__op_get(p);
    if (!t) {
        kx_log(KX_LOG_ERROR, "correlate",
               "out of memory: rule %s: incident not kept for its resolve", c->id);
        return;
    }
    t->kind = KX_OP_TOUCH;
    t->token = kx__op_token(p);
    t->corr = c;
    t->time_ms = res->crossed ? res->cross_last_ms : res->met_ms; /* the last time it held */
    kx__absence_key(c, t->key, sizeof(t->key));
    kx_buf_puts(&t->member, op->group);
    if (res->crossed) {
        t->touch_mode = KX_TOUCH_REPLACE;
        t->has_prev_af = res->prev_alerted && res->prev_alert_first_ms != res->cross_first_ms;
        t->prev_af_ms = res->prev_alert_first_ms;
        kx__payload_group(&t->evidence, op,
                          c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY);
        kx_buf_printf(&t->evidence, "%lld %lld", (long long)res->cross_first_ms,
                      (long long)res->cross_count);
    } else {
        t->touch_mode = KX_TOUCH_EXTEND; /* the payload stays the incident's */
    }
    p->pending++;
    kx__op_issue(t);
}

/* A touch or due answer for a `resolve: auto` rule. */
void kx__resolve_answer(kx_op *op, const kx_absence_result *res)
{
    kx_correlator *p = op->p;
    kx_rule *c = op->corr;
    if (op->kind == KX_OP_TOUCH && res->n &&
        (res->outcome == KX_ABSENCE_REPLACED || res->outcome == KX_ABSENCE_GAP)) {
        /* A new incident while the last one was open (or drained, unreported): that one is
         * over. Its first_seen is the one the window reported before this crossing when
         * known (a retried touch is answered with the new payload); a replay of the same
         * crossing replaces nothing. */
        size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
        int64_t old_af, new_af, n;
        if (!resolve_payload_alert(op->evidence.data, op->evidence.len, ng, &p->payload, &new_af,
                                   &n) ||
            !resolve_payload_alert(res->payload[0], res->payload_len[0], ng, &p->payload, &old_af,
                                   &n))
            old_af = new_af = 0;
        if (op->has_prev_af)
            old_af = op->prev_af_ms;
        if (old_af != new_af)
            resolve_alert(p, c, res->payload[0], res->payload_len[0], res->since_ms, &old_af);
    } else if (op->kind == KX_OP_DUE) {
        for (size_t i = 0; i < res->n; i++)
            resolve_alert(p, c, res->payload[i], res->payload_len[i], res->last_ms[i], NULL);
        if (res->n == KX_ABSENCE_DUE_BATCH) /* more may be due */
            kx__absence_reask(p, c, op->watermark_ms);
    }
}
