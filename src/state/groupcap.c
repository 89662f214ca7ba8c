/*
 * groupcap: open addressing (linear probing, backward-shift deletion) of group hash ->
 * expiry. Expired entries are removed when the table is about to refuse or grow, so a rule
 * whose groups churn stays at its live size. Hash 0 is stored as 1 (0 marks a free slot):
 * two groups colliding on 64 bits share one slot, which only makes the cap count them once.
 */
#include "klaxon/groupcap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct gc_slot {
    uint64_t h; /* 0 = free */
    int64_t expire_at;
} gc_slot;

struct kx_groupcap {
    gc_slot *tab;
    size_t tab_cap; /* power of two */
    size_t n;
    size_t cap;
    int64_t last_sweep_ms; /* a full cap sweeps at most once a second: a flood of new groups
                            * must not cost a table walk per event */
    bool swept;
};

kx_groupcap *kx_groupcap_create(size_t cap)
{
    kx_groupcap *g = calloc(1, sizeof(*g));
    if (!g || !cap) {
        free(g);
        return NULL;
    }
    g->cap = cap;
    g->tab_cap = 16;
    g->tab = calloc(g->tab_cap, sizeof(*g->tab));
    if (!g->tab) {
        free(g);
        return NULL;
    }
    return g;
}

void kx_groupcap_destroy(kx_groupcap *g)
{
    if (!g)
        return;
    free(g->tab);
    free(g);
}

static void del_at(kx_groupcap *g, size_t i)
{
    size_t mask = g->tab_cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!g->tab[j].h)
            break;
        size_t k = (size_t)g->tab[j].h & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        g->tab[i] = g->tab[j];
        i = j;
    }
    g->tab[i].h = 0;
    g->n--;
}

static void sweep(kx_groupcap *g, int64_t now_ms)
{
    for (size_t i = 0; i < g->tab_cap;) {
        if (g->tab[i].h && now_ms > g->tab[i].expire_at) {
            del_at(g, i); /* a later entry may shift into i: look at i again */
            continue;
        }
        i++;
    }
}

static size_t find(const kx_groupcap *g, uint64_t h)
{
    size_t mask = g->tab_cap - 1, i = (size_t)h & mask;
    while (g->tab[i].h && g->tab[i].h != h)
        i = (i + 1) & mask;
    return i;
}

static int grow(kx_groupcap *g)
{
    size_t cap = g->tab_cap * 2;
    gc_slot *tab = calloc(cap, sizeof(*tab));
    if (!tab)
        return -ENOMEM;
    for (size_t i = 0; i < g->tab_cap; i++) {
        if (!g->tab[i].h)
            continue;
        size_t j = (size_t)g->tab[i].h & (cap - 1);
        while (tab[j].h)
            j = (j + 1) & (cap - 1);
        tab[j] = g->tab[i];
    }
    free(g->tab);
    g->tab = tab;
    g->tab_cap = cap;
    return 0;
}

int kx_groupcap_touch(kx_groupcap *g, uint64_t h, int64_t now_ms, int64_t ttl_ms)
{
    if (!h)
        h = 1;
    size_t i = find(g, h);
    if (g->tab[i].h && now_ms <= g->tab[i].expire_at) {
        if (now_ms + ttl_ms > g->tab[i].expire_at)
            g->tab[i].expire_at = now_ms + ttl_ms;
        return 0;
    }
    if (g->tab[i].h) { /* expired: the group starts over */
        g->tab[i].expire_at = now_ms + ttl_ms;
        return 0;
    }
    if (g->n >= g->cap || (g->n + 1) * 2 > g->tab_cap) {
        if (!g->swept || now_ms - g->last_sweep_ms >= 1000 || now_ms < g->last_sweep_ms) {
            sweep(g, now_ms);
            g->swept = true;
            g->last_sweep_ms = now_ms;
        }
        if (g->n >= g->cap)
            return -ENOSPC;
        if ((g->n + 1) * 2 > g->tab_cap) {
            int rc = grow(g);
            if (rc)
                return rc;
        }
        i = find(g, h);
    }
    g->tab[i].h = h;
    g->tab[i].expire_at = now_ms + ttl_ms;
    g->n++;
    return 0;
}

size_t kx_groupcap_live(kx_groupcap *g, int64_t now_ms)
{
    sweep(g, now_ms);
    return g->n;
}
