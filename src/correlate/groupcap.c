/*
 * groupcap (klaxon/groupcap.h): per tenant, open addressing (linear probing, backward-shift
 * deletion) of group hash -> expiry, last update and event counts of the last two tumbling
 * windows. Expired entries are removed when a table is about to refuse or grow (at most once
 * a second when full: a flood of new groups must not cost a table walk per event). Hash 0 is
 * stored as 1 (0 marks a free slot).
 */
#include "correlate/groupcap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/common.h"

#define HALFWAY 128 /* progress (of 256) from which a group is never a victim */

typedef struct gc_slot {
    uint64_t h1, h2; /* h1 0 = free */
    int64_t expire_at;
    int64_t last_ms;    /* wall time of the last update: the older, the better a victim */
    int64_t win_start;  /* event time: the current tumbling window's start */
    int64_t last_ev_ms; /* the newest event time: idle groups go first */
    char *tenant;       /* the overflow table's groups only: whose group it is (owned) */
    uint16_t n_prev, n_cur;
} gc_slot;

typedef struct gc_table {
    uint64_t th;
    char *tenant; /* NULL for the shared overflow table */
    gc_slot *tab;
    size_t tab_cap; /* power of two */
    size_t n;
    int64_t last_sweep_ms;
    bool swept;
    uint64_t evicted, refused; /* since the last notice */
    bool noticed;
    int64_t noticed_ms;
} gc_table;

#define SKETCH_ROWS 4
#define SKETCH_COLS 4096 /* power of two */

struct kx_groupcap {
    size_t cap;
    /* Count-min sketch of the events of groups not (yet) admitted, per group and tumbling
     * window: a group that keeps coming back while refused earns its place. Cleared after
     * 8 * SKETCH_COLS increments, so old counts do not pile up. Allocated when a table first
     * fills (most rules never do). */
    uint8_t (*sketch)[SKETCH_COLS];
    uint32_t sketch_adds;
    gc_table tables[KX_GROUPCAP_TENANTS];
    size_t ntables;
    gc_table overflow;
    size_t last; /* the table of the last lookup */
    uint64_t rng;
    char *victim_tenant; /* the last victim's tenant, when from the overflow table */
};

kx_groupcap *kx_groupcap_create(size_t cap)
{
    if (!cap)
        return NULL;
    kx_groupcap *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->cap = cap;
    g->rng = 0x9e3779b97f4a7c15ULL;
    return g;
}

void kx_groupcap_destroy(kx_groupcap *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->ntables; i++) {
        free(g->tables[i].tenant);
        free(g->tables[i].tab);
    }
    for (size_t i = 0; i < g->overflow.tab_cap; i++)
        free(g->overflow.tab[i].tenant);
    free(g->overflow.tab);
    free(g->victim_tenant);
    free(g->sketch);
    free(g);
}

static gc_table *table_of(kx_groupcap *g, const char *tenant, bool create)
{
    uint64_t th = kx_hash64(tenant, strlen(tenant), 7);
    if (g->last < g->ntables && g->tables[g->last].th == th &&
        !strcmp(g->tables[g->last].tenant, tenant))
        return &g->tables[g->last];
    for (size_t i = 0; i < g->ntables; i++)
        if (g->tables[i].th == th && !strcmp(g->tables[i].tenant, tenant)) {
            g->last = i;
            return &g->tables[i];
        }
    if (g->ntables == KX_GROUPCAP_TENANTS)
        return &g->overflow; /* the tenants past the first ones share it */
    if (!create)
        return NULL;
    char *name = strdup(tenant);
    if (!name)
        return NULL;
    gc_table *t = &g->tables[g->ntables];
    *t = (gc_table){.th = th, .tenant = name};
    g->last = g->ntables++;
    return t;
}

bool kx_groupcap_shared(const kx_groupcap *g, const char *tenant)
{
    if (g->ntables < KX_GROUPCAP_TENANTS)
        return false;
    for (size_t i = 0; i < g->ntables; i++)
        if (!strcmp(g->tables[i].tenant, tenant))
            return false;
    return true;
}

static void del_at(gc_table *t, size_t i)
{
    free(t->tab[i].tenant);
    size_t mask = t->tab_cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->tab[j].h1)
            break;
        size_t k = (size_t)t->tab[j].h1 & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        t->tab[i] = t->tab[j];
        i = j;
    }
    t->tab[i].h1 = 0;
    t->tab[i].tenant = NULL;
    t->n--;
}

static void sweep(gc_table *t, int64_t now_ms)
{
    for (size_t i = 0; i < t->tab_cap;) {
        if (t->tab[i].h1 && now_ms > t->tab[i].expire_at) {
            del_at(t, i); /* a later entry may shift into i: look at i again */
            continue;
        }
        i++;
    }
}

static size_t find(const gc_table *t, uint64_t h1, uint64_t h2)
{
    size_t mask = t->tab_cap - 1, i = (size_t)h1 & mask;
    while (t->tab[i].h1 && (t->tab[i].h1 != h1 || t->tab[i].h2 != h2))
        i = (i + 1) & mask;
    return i;
}

static int grow(gc_table *t)
{
    size_t cap = t->tab_cap ? t->tab_cap * 2 : 16;
    gc_slot *tab = calloc(cap, sizeof(*tab));
    if (!tab)
        return -ENOMEM;
    for (size_t i = 0; i < t->tab_cap; i++) {
        if (!t->tab[i].h1)
            continue;
        size_t j = (size_t)t->tab[i].h1 & (cap - 1);
        while (tab[j].h1)
            j = (j + 1) & (cap - 1);
        tab[j] = t->tab[i];
    }
    free(t->tab);
    t->tab = tab;
    t->tab_cap = cap;
    return 0;
}

static int64_t window_of(int64_t t, int64_t w)
{
    int64_t k = t / w;
    if (t % w < 0)
        k--;
    return k * w;
}

static void count(gc_slot *s, int64_t event_ms, int64_t w)
{
    if (w <= 0)
        return;
    int64_t k = window_of(event_ms, w);
    if (k == s->win_start) {
        if (s->n_cur < UINT16_MAX)
            s->n_cur++;
    } else if (k > s->win_start) {
        s->n_prev = k == s->win_start + w ? s->n_cur : 0;
        s->n_cur = 1;
        s->win_start = k;
    } else if (k == s->win_start - w && s->n_prev < UINT16_MAX) {
        s->n_prev++; /* a late event of the previous window */
    }
}

/* The group's events in the update's tumbling window and the one before (event time). */
static unsigned events(const gc_slot *s, const kx_group_touch *t)
{
    int64_t k = window_of(t->event_ms, t->window_ms);
    return s->win_start >= k                  ? (unsigned)s->n_prev + s->n_cur
           : s->win_start == k - t->window_ms ? s->n_cur
                                              : 0;
}

/* 0..256: how far n events are toward `need` (256: there). */
static unsigned progress(unsigned n, uint32_t need)
{
    unsigned long p = (unsigned long)n * 256 / need;
    return p > 256 ? 256 : (unsigned)p;
}

static uint64_t rnd(kx_groupcap *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

/* Counts one event of a group not admitted; returns its events in this window so far. */
static unsigned sketch_add(kx_groupcap *g, const kx_group_touch *tc)
{
    if (!g->sketch && !(g->sketch = calloc(SKETCH_ROWS, sizeof(*g->sketch))))
        return 1; /* out of memory: as if first seen */
    if (++g->sketch_adds > 8 * SKETCH_COLS) {
        memset(g->sketch, 0, SKETCH_ROWS * sizeof(*g->sketch));
        g->sketch_adds = 1;
    }
    uint64_t w = tc->window_ms > 0 ? (uint64_t)window_of(tc->event_ms, tc->window_ms) : 0;
    unsigned min = 255;
    for (int r = 0; r < SKETCH_ROWS; r++) {
        uint64_t k = kx_hash64(&w, sizeof(w), tc->id.h1 + (uint64_t)r * 0x9e3779b97f4a7c15ULL);
        uint8_t *c = &g->sketch[r][k & (SKETCH_COLS - 1)];
        if (*c < 255)
            (*c)++;
        if (*c < min)
            min = *c;
    }
    return min;
}

/* The best victim among up to KX_GROUPCAP_SAMPLE live groups from a random place, or -1. A
 * group may go when it is less than halfway to the threshold and the newcomer has more
 * events in this window than it has (`newcomer`), or as many and it has been idle a quarter of
 * a timespan of event time: a burst of groups that all keep coming (more than the cap) keeps
 * the ones it has instead of evicting each other in turn. */
static long pick_victim(kx_groupcap *g, gc_table *t, const kx_group_touch *tc, unsigned newcomer)
{
    size_t mask = t->tab_cap - 1, i = (size_t)rnd(g) & mask, seen = 0;
    long best = -1;
    unsigned best_p = 0;
    for (size_t step = 0; step < t->tab_cap && seen < KX_GROUPCAP_SAMPLE;
         step++, i = (i + 1) & mask) {
        const gc_slot *s = &t->tab[i];
        if (!s->h1)
            continue;
        seen++;
        unsigned n = events(s, tc), p = progress(n, tc->need);
        if (p >= HALFWAY)
            continue;
        bool idle = s->last_ev_ms <= tc->event_ms - tc->window_ms / 4;
        if (!(newcomer > n || (newcomer == n && idle)))
            continue;
        if (best < 0 || p < best_p || (p == best_p && s->last_ev_ms < t->tab[best].last_ev_ms) ||
            (p == best_p && s->last_ev_ms == t->tab[best].last_ev_ms &&
             s->last_ms < t->tab[best].last_ms)) {
            best = (long)i;
            best_p = p;
        }
    }
    return best;
}

int kx_groupcap_touch(kx_groupcap *g, const kx_group_touch *tc, kx_group_victim *victim)
{
    const char *tenant = tc->tenant ? tc->tenant : "";
    gc_table *t = table_of(g, tenant, true);
    if (!t)
        return -ENOMEM;
    uint64_t h1 = tc->id.h1 ? tc->id.h1 : 1, h2 = tc->id.h2;
    int64_t now = tc->now_ms;
    if (!t->tab && grow(t))
        return -ENOMEM;
    size_t i = find(t, h1, h2);
    if (t->tab[i].h1) {
        gc_slot *s = &t->tab[i];
        if (now > s->expire_at) { /* expired: the group starts over */
            s->n_prev = s->n_cur = 0;
            s->win_start = INT64_MIN;
        }
        if (now + tc->ttl_ms > s->expire_at)
            s->expire_at = now + tc->ttl_ms;
        s->last_ms = now;
        if (tc->event_ms > s->last_ev_ms)
            s->last_ev_ms = tc->event_ms;
        count(s, tc->event_ms, tc->window_ms);
        return KX_GC_KNOWN;
    }
    /* A group of the shared table remembers its tenant: it may be another's victim. */
    char *owner = NULL;
    if (!t->tenant && !(owner = strdup(tenant)))
        return -ENOMEM;
    int outcome = KX_GC_NEW;
    size_t cap = g->cap;
    if (t->n >= cap || (t->n + 1) * 2 > t->tab_cap) {
        if (!t->swept || now - t->last_sweep_ms >= 1000 || now < t->last_sweep_ms) {
            sweep(t, now);
            t->swept = true;
            t->last_sweep_ms = now;
        }
        if (t->n >= cap) {
            /* Progress unknown (need 0): nothing may go. */
            long v = tc->need && tc->window_ms > 0 ? pick_victim(g, t, tc, sketch_add(g, tc)) : -1;
            if (v < 0) {
                t->refused++;
                free(owner);
                return KX_GC_FULL;
            }
            t->evicted++;
            victim->id.h1 = t->tab[v].h1;
            victim->id.h2 = t->tab[v].h2;
            free(g->victim_tenant);
            g->victim_tenant = t->tab[v].tenant; /* kept until the next eviction */
            t->tab[v].tenant = NULL;
            victim->tenant = t->tenant ? t->tenant : g->victim_tenant;
            del_at(t, (size_t)v);
            outcome = KX_GC_EVICTED;
            /* No growth after an eviction: the table grew to 2 * cap slots when it reached
             * cap groups, so the victim's place is never lost to an allocation failure. */
        } else if ((t->n + 1) * 2 > t->tab_cap && grow(t)) {
            free(owner);
            return -ENOMEM;
        }
        i = find(t, h1, h2);
    }
    t->tab[i] =
        (gc_slot){.h1 = h1,
                  .h2 = h2,
                  .expire_at = now + tc->ttl_ms,
                  .last_ms = now,
                  .last_ev_ms = tc->event_ms,
                  .tenant = owner,
                  .win_start = tc->window_ms > 0 ? window_of(tc->event_ms, tc->window_ms) : 0,
                  .n_cur = 1};
    t->n++;
    return outcome;
}

bool kx_groupcap_notice(kx_groupcap *g, const char *tenant, int64_t now_ms, int64_t period_ms,
                        uint64_t *evicted, uint64_t *refused)
{
    gc_table *t = table_of(g, tenant, false);
    if (!t || (!t->evicted && !t->refused) ||
        (t->noticed && now_ms - t->noticed_ms < period_ms && now_ms >= t->noticed_ms))
        return false;
    *evicted = t->evicted;
    *refused = t->refused;
    t->evicted = t->refused = 0;
    t->noticed = true;
    t->noticed_ms = now_ms;
    return true;
}

size_t kx_groupcap_live(kx_groupcap *g, const char *tenant, int64_t now_ms)
{
    gc_table *t = table_of(g, tenant, false);
    if (!t || !t->tab)
        return 0;
    sweep(t, now_ms);
    return t->n;
}
