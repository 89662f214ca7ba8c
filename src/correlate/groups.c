/*
 * The per-rule, per-tenant cap on live groups (groupcap.h) as the correlator applies it: the
 * progress a rule's condition allows, the state of an evicted group dropped from the store,
 * and the "detection degraded" alert to the rule's team.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

void kx__group_key(char *out, size_t len, const char *tenant, const kx_rule *c, uint64_t h1,
                   uint64_t h2)
{
    /* "%.32s|%.24s|%016llx%016llx", built by hand: it runs for every matching event. */
    char tmp[32 + 1 + 24 + 1 + 32 + 1];
    size_t n = strnlen(tenant, 32);
    memcpy(tmp, tenant, n);
    tmp[n++] = '|';
    size_t il = strnlen(c->id, 24);
    memcpy(tmp + n, c->id, il);
    n += il;
    tmp[n++] = '|';
    kx_hex64(tmp + n, h1);
    kx_hex64(tmp + n + 16, h2);
    n += 32;
    if (!len)
        return;
    if (n > len - 1)
        n = len - 1;
    memcpy(out, tmp, n);
    out[n] = '\0';
}

/* The smallest count of events that can meet a count-like condition (event_count "at least
 * N", value_count, temporal*): how far a group is from firing. 0 where a count does not
 * tell (sums, averages, first_seen, baseline, absence, "at most N"). */
static uint32_t corr_need(const kx_rule *c)
{
    bool counted = (c->corr_type == KX_CORR_EVENT_COUNT && !c->closing) ||
                   c->corr_type == KX_CORR_VALUE_COUNT || c->corr_type == KX_CORR_TEMPORAL ||
                   c->corr_type == KX_CORR_TEMPORAL_ORDERED;
    if (!counted)
        return 0;
    double need = 1;
    for (size_t i = 0; i < c->ncond; i++) {
        double v = c->cond[i].value;
        double lo = c->cond[i].op == KX_CMP_GTE  ? v
                    : c->cond[i].op == KX_CMP_GT ? (double)(long long)v + 1
                    : c->cond[i].op == KX_CMP_EQ ? v
                                                 : 1;
        if (lo > need)
            need = lo;
    }
    return need > 1e6 ? 1000000u : (uint32_t)need;
}

#define KX_DEGRADED_PERIOD_MS (3600 * 1000LL) /* one "detection degraded" alert per hour */

/* The cap has evicted or refused groups of (rule, tenant): tell the rule's team, at most once
 * an hour, that the rule is running degraded. */
static void degraded_alert(kx_correlator *p, const kx_rule *c, const char *tenant, bool shared,
                           size_t cap, uint64_t evicted, uint64_t refused, int64_t now_ms)
{
    char title[320], capv[24], desc[800];
    snprintf(title, sizeof(title), "Detection degraded: %s", c->title);
    snprintf(capv, sizeof(capv), "%zu", cap);
    snprintf(desc, sizeof(desc),
             "klaxon reached this rule's group cap (max_groups %zu) for tenant \"%s\": %llu "
             "groups far from the threshold were dropped to make room for new ones, and %llu new "
             "groups were refused because no group could make room (halfway to the threshold, or "
             "as active as the new one). An attack spread over more groups than the cap can be "
             "missed: raise max_groups, or narrow the rule.",
             cap, tenant, (unsigned long long)evicted, (unsigned long long)refused);
    if (shared) {
        size_t n = strlen(desc);
        snprintf(desc + n, sizeof(desc) - n,
                 " This rule has more than %d tenants: the later ones, this one among them, "
                 "share one cap, and these counts are all of theirs.",
                 KX_GROUPCAP_TENANTS);
    }
    kx_kv group[1] = {{"max_groups", capv}};
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = title,
        .rule_level = c->level,
        .team = kx__corr_team(c),
        .tenant = tenant,
        .category = "detection-degraded",
        .group = group,
        .ngroup = 1,
        .count = (int64_t)(evicted + refused),
        .window_s = KX_DEGRADED_PERIOD_MS / 1000,
        /* One incident per hour of wall time: the same dedup_key for any process. */
        .first_seen_ms = now_ms - now_ms % KX_DEGRADED_PERIOD_MS,
        .last_seen_ms = now_ms,
        .description = desc,
        .tags = c->tags,
        .ntags = c->ntags,
    };
    kx__corr_send(p, &a, NULL, false); /* klaxon's words, not the rule's */
}

/* The per-rule, per-tenant cap on live groups (klaxon/groupcap.h). A new group past it takes
 * the place of the group furthest from firing, whose state is dropped; false when none may
 * go (every group sampled is close to firing, or progress is unknown). Both are counted,
 * logged, and reported to the rule's team as a "detection degraded" alert. */
bool kx__group_admit(kx_correlator *p, const kx_rule *c, const char *tenant, uint64_t h1,
                     uint64_t h2, int64_t time_ms)
{
    if (c->index >= p->ngroups)
        return true; /* not reached: sized to the ruleset */
    size_t cap = c->max_groups > 0 ? (size_t)c->max_groups : p->opts.max_groups;
    if (!p->groups[c->index] && !(p->groups[c->index] = kx_groupcap_create(cap)))
        return true; /* out of memory: count the event rather than drop it */
    int64_t now = (int64_t)(ev_now(p->loop) * 1000.0);
    /* An absence group is remembered for keep after its silence was reported. */
    int64_t live = c->timespan_ms + (c->corr_type == KX_CORR_ABSENCE ? c->keep_ms : 0);
    kx_group_touch t = {.tenant = tenant,
                        .id = {h1, h2},
                        .now_ms = now,
                        .ttl_ms = live + kx__corr_lateness(p, c),
                        .event_ms = time_ms,
                        .window_ms = c->timespan_ms,
                        .need = corr_need(c)};
    kx_group_victim victim;
    kx_groupcap *g = p->groups[c->index];
    int rc = kx_groupcap_touch(g, &t, &victim);
    if (rc == KX_GC_KNOWN)
        return true;
    if (rc == KX_GC_NEW) {
        if (kx_groupcap_shared(g, tenant))
            kx_log_limited(&p->rl_groups, KX_LOG_WARN, "correlate",
                           "rule %s: more than %d tenants: tenant \"%s\" shares one group cap "
                           "with the later ones",
                           c->id, KX_GROUPCAP_TENANTS, tenant);
        return true;
    }
    if (rc < 0)
        return true; /* out of memory: count the event */
    if (rc == KX_GC_EVICTED) {
        /* The victim's window goes with it: the cap bounds the state, not just the set. The
         * victim may be another tenant's group when the tenants share a table. */
        char key[96];
        kx__group_key(key, sizeof(key), victim.tenant, c, victim.id.h1, victim.id.h2);
        kx_store_forget(p->store, key);
        kx_metric_inc(KX_M_GROUPS_EVICTED);
        kx_log_limited(&p->rl_evicted, KX_LOG_WARN, "correlate",
                       "rule %s, tenant %s: %zu groups are active (max_groups): the group furthest "
                       "from the threshold was dropped for a new one",
                       c->id, tenant, cap);
    } else {
        kx_metric_inc(KX_M_GROUPS_CAPPED);
        kx_log_limited(&p->rl_groups, KX_LOG_WARN, "correlate",
                       "rule %s, tenant %s: %zu groups are active (max_groups) and none may make "
                       "room (halfway to the threshold, or as active as the new group): a new "
                       "group is not counted",
                       c->id, tenant, cap);
    }
    uint64_t evicted, refused;
    if (kx_groupcap_notice(g, tenant, now, KX_DEGRADED_PERIOD_MS, &evicted, &refused))
        degraded_alert(p, c, tenant, kx_groupcap_shared(g, tenant), cap, evicted, refused, now);
    return rc == KX_GC_EVICTED;
}

void kx__groups_reset(kx_correlator *p, size_t n)
{
    for (size_t i = 0; i < p->ngroups; i++)
        kx_groupcap_destroy(p->groups[i]);
    free(p->groups);
    p->groups = n ? calloc(n, sizeof(*p->groups)) : NULL;
    p->ngroups = p->groups ? n : 0;
}
