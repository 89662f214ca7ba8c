/*
 * groupcap: the cap on a correlation rule's active groups, per tenant. A rule keyed by an
 * attacker-chosen field (a source port, a random user name) could otherwise create state
 * without bound; and a cap that simply refuses new groups lets 1,000 noise groups blind the
 * rule to the real attack that comes next (for every tenant, when the cap is shared).
 *
 * So each tenant of a rule has its own table of live groups (a group lives until its window
 * state expires), up to `cap` groups. When a tenant's table is full, a new group takes the
 * place of a victim: the group furthest from the rule's threshold, the least recently
 * active (event time, then wall time) among equals, chosen among a sample of KX_GROUPCAP_SAMPLE
 * live groups (Redis' LRU approximation: O(1) per admission, not a walk of the table). A group at
 * least halfway to the threshold is never a victim: when every sampled group is, the new group is
 * refused (KX_GC_FULL). The caller drops the victim's state, and counts and reports both outcomes;
 * rules whose progress cannot be told from a count (need 0: sums, averages, first_seen,
 * baseline, absence) never evict and are refused when full.
 *
 * Progress: the events of the group the caller admitted in the current and the previous
 * tumbling timespan of event time, over `need` (the smallest count that can meet the
 * condition). It over-estimates the sliding count, which errs toward keeping a group.
 *
 * Tenants: the first KX_GROUPCAP_TENANTS tenants of a rule get tables of their own; later
 * ones share one more table (logged by the caller through kx_groupcap_shared), whose groups
 * remember their tenant: a victim there may be another tenant's group, and the victim's
 * tenant is returned so its state is the one dropped. The notices of the shared table are
 * one series for all its tenants. Memory: a table's slots are a power of two, at most
 * 4 * (cap + 1) slots of 64 bytes (load at most one half), so up to
 * (KX_GROUPCAP_TENANTS + 1) * 4 * (cap + 1) slots per rule, allocated as groups come, plus
 * the shared table's tenant names and a 16 KiB sketch once a table is full.
 *
 * Who may make room: a group less than halfway that has been idle a quarter of a timespan
 * (event time), or that has had fewer events in this timespan than the newcomer (counted in
 * a count-min sketch while it is refused): groups that all keep coming, more than the cap,
 * keep their places instead of evicting each other in turn.
 *
 * The sets are per process: several klaxon processes sharing one Redis each cap the groups
 * they have seen (docs/scaling.md).
 *
 * Ownership: the caller owns the set (create/destroy). Not thread-safe (one loop).
 */
#ifndef KLAXON_GROUPCAP_H
#define KLAXON_GROUPCAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KX_GROUPCAP_TENANTS 64
#define KX_GROUPCAP_SAMPLE 32

typedef struct kx_groupcap kx_groupcap;

typedef struct kx_group_id {
    uint64_t h1, h2; /* the group's 128-bit hash (its state key's) */
} kx_group_id;

/* The group that made room (KX_GC_EVICTED): its id and tenant. tenant is valid until the
 * next touch of the set. */
typedef struct kx_group_victim {
    kx_group_id id;
    const char *tenant;
} kx_group_victim;

typedef enum {
    KX_GC_KNOWN = 0, /* a live group */
    KX_GC_NEW,       /* a new group, with room */
    KX_GC_EVICTED,   /* a new group in the place of *victim (drop its state) */
    KX_GC_FULL,      /* refused: the tenant's table is full of groups close to firing */
} kx_gc_outcome;

/* One update to admit: the group, its tenant, and the rule's window. */
typedef struct kx_group_touch {
    const char *tenant;
    kx_group_id id;
    int64_t now_ms;    /* wall (loop) time: expiry */
    int64_t ttl_ms;    /* how long the group's state lives after this update */
    int64_t event_ms;  /* event time: progress */
    int64_t window_ms; /* the rule's timespan */
    uint32_t need;     /* events that can meet the condition; 0 = progress unknown */
} kx_group_touch;

/* cap > 0 (per tenant). NULL when out of memory. */
kx_groupcap *kx_groupcap_create(size_t cap);
void kx_groupcap_destroy(kx_groupcap *g);
/* Admits the update. Returns its outcome (victim set with KX_GC_EVICTED), or -ENOMEM. */
int kx_groupcap_touch(kx_groupcap *g, const kx_group_touch *t, kx_group_victim *victim);
/* Live groups of tenant at now_ms (drops the expired). */
size_t kx_groupcap_live(kx_groupcap *g, const char *tenant, int64_t now_ms);
/* A "detection degraded" notice for tenant: true at most once per period_ms (the first time
 * right away) while the tenant's table has evicted or refused groups since the last notice;
 * then *evicted and *refused are those counts, which start again from 0. */
bool kx_groupcap_notice(kx_groupcap *g, const char *tenant, int64_t now_ms, int64_t period_ms,
                        uint64_t *evicted, uint64_t *refused);
/* True once tenant shares the overflow table (more than KX_GROUPCAP_TENANTS tenants). */
bool kx_groupcap_shared(const kx_groupcap *g, const char *tenant);

#endif
