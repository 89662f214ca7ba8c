/*
 * Memory backend: the same sliding windows as the Redis Lua script (redis_scripts.h), kept in
 * this process. State is lost on restart; use it for one instance or for tests.
 *
 * Layout. A key table (open addressing, linear probing, backward-shift deletion) maps the
 * caller's key to a window. A window holds:
 *   - its members sorted by (time, member bytes) -- the order of a Redis sorted set, so the
 *     member cap drops the same members in both backends -- as a slice ent[head, head + n)
 *     of one array, so pruning the oldest is `head += k`;
 *   - a membership set (open addressing of (hash, time)) to find a member whatever its time:
 *     the probe gives the time, a binary search of the sorted slice finds the entry;
 *   - the member bytes in one string heap per window, compacted when half of it is dead;
 *   - the evidence list, most recent first, whose buffers are reused when it is full.
 * Nothing here allocates per event once a window has warmed up, except growth.
 *
 * Expiry: a key dies ttl_ms after its last update (loop time, as PEXPIRE does with Redis'
 * clock). It is checked lazily on access and by a 100 ms sweep that looks at a bounded
 * number of table slots per tick, so a huge table never stalls the loop.
 *
 * Callbacks run synchronously inside kx_store_window_add. kx_store_destroy from inside one
 * is deferred to the end of that add.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

int64_t kx__mem_loop_now_ms(const kx_store_memory *m)
{
    return m->replica ? 0 : (int64_t)(ev_now(m->loop) * 1000.0);
}

/* ---- key table ---- */

size_t kx__mem_tab_find(const kx_store_memory *m, const char *key, size_t klen, uint64_t kh)
{
    size_t mask = m->tab_cap - 1;
    size_t i = (size_t)kh & mask;
    while (m->tab[i]) {
        const mem_win *w = m->tab[i];
        if (w->kh == kh && w->klen == klen && memcmp(w->key, key, klen) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i; /* the empty slot where it would go */
}

void kx__mem_tab_del_at(kx_store_memory *m, size_t i)
{
    size_t mask = m->tab_cap - 1;
    kx__mem_win_free(m->tab[i]);
    m->nkeys--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->tab[j])
            break;
        size_t k = (size_t)m->tab[j]->kh & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        m->tab[i] = m->tab[j];
        i = j;
    }
    m->tab[i] = NULL;
}

static int tab_grow(kx_store_memory *m)
{
    size_t cap = m->tab_cap * 2;
    mem_win **tab = calloc(cap, sizeof(*tab));
    if (!tab)
        return -ENOMEM;
    for (size_t i = 0; i < m->tab_cap; i++) {
        mem_win *w = m->tab[i];
        if (!w)
            continue;
        size_t j = (size_t)w->kh & (cap - 1);
        while (tab[j])
            j = (j + 1) & (cap - 1);
        tab[j] = w;
    }
    free(m->tab);
    m->tab = tab;
    m->tab_cap = cap;
    m->sweep_cursor = 0;
    return 0;
}

size_t kx__store_memory_sweep(kx_store *s, int64_t now_ms, size_t budget)
{
    kx_store_memory *m = (kx_store_memory *)s;
    if (budget == 0 || budget > m->tab_cap)
        budget = m->tab_cap;
    size_t removed = 0;
    size_t i = m->sweep_cursor & (m->tab_cap - 1);
    for (size_t seen = 0; seen < budget; seen++) {
        mem_win *w = m->tab[i];
        if (w && now_ms > w->expire_at) {
            /* A later entry may shift into slot i: look at i again. */
            kx__mem_tab_del_at(m, i);
            removed++;
            continue;
        }
        i = (i + 1) & (m->tab_cap - 1);
    }
    m->sweep_cursor = i;
    return removed;
}

static void sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    kx_store_memory *m = t->data;
    kx__store_memory_sweep(&m->base, kx__mem_loop_now_ms(m), MEM_SWEEP_BUDGET);
}

int64_t kx__store_memory_pttl(kx_store *s, const char *key, int64_t now_ms)
{
    kx_store_memory *m = (kx_store_memory *)s;
    size_t klen = strlen(key);
    size_t i = kx__mem_tab_find(m, key, klen, kx_hash64(key, klen, 0));
    if (!m->tab[i] || now_ms > m->tab[i]->expire_at)
        return -2;
    return m->tab[i]->expire_at - now_ms;
}

size_t kx__store_memory_nkeys(const kx_store *s)
{
    return ((const kx_store_memory *)s)->nkeys;
}

void kx__mem_free(kx_store_memory *m)
{
    ev_timer_stop(m->loop, &m->sweep_timer);
    for (size_t i = 0; i < m->tab_cap; i++)
        if (m->tab[i])
            kx__mem_win_free(m->tab[i]);
    free(m->tab);
    free(m->dset);
    free(m->due);
    free(m->many_res);
    kx_buf_fini(&m->many_ev);
    free(m->many_ev_off);
    free(m->many_ev_len);
    free(m->many_ev_ptr);
    free(m->tm.res);
    free(m->tm.since);
    free(m->tm.off);
    free(m->tm.len);
    free(m->tm.ptr);
    kx_buf_fini(&m->tm.pl);
    free(m);
}

/* The re-entrancy guard: callbacks run inside the caller's store call, and a destroy from
 * inside one is carried out once the outermost call is done. */
void kx__mem_enter(kx_store_memory *m)
{
    m->depth++;
}

void kx__mem_leave(kx_store_memory *m)
{
    m->depth--;
    if (m->depth == 0 && m->destroy_pending)
        kx__mem_free(m);
}

void kx__mem_run_cb(kx_store_memory *m, kx_store_cb cb, void *ud, int status,
                    const kx_window_result *res)
{
    kx__mem_enter(m);
    cb(ud, status, res);
    kx__mem_leave(m);
}

void kx__mem_run_acb(kx_store_memory *m, kx_absence_cb cb, void *ud, int status,
                     const kx_absence_result *res)
{
    kx__mem_enter(m);
    cb(ud, status, res);
    kx__mem_leave(m);
}

/* Finds or creates the window for key; -ENOSPC at the key cap. */
int kx__mem_update_key(kx_store_memory *m, const char *key, int64_t now, int64_t ttl, mem_win **out)
{
    int rc = kx__mem_key(m, key, now, ttl, out);
    if (rc == -ENOSPC)
        kx__mem_key_refused(m, key);
    else
        kx__mem_count_op(m);
    return rc;
}

void kx__mem_key_refused(kx_store_memory *m, const char *key)
{
    kx__mem_count_op(m);
    kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
    kx_log_limited(&m->rl_keys, KX_LOG_WARN, "state",
                   "memory store full (%zu keys): update to new key \"%s\" refused", m->nkeys, key);
}

int kx__mem_key(kx_store_memory *m, const char *key, int64_t now, int64_t ttl, mem_win **out)
{
    size_t klen = strlen(key);
    uint64_t kh = kx_hash64(key, klen, 0);
    size_t i = kx__mem_tab_find(m, key, klen, kh);
    if (m->tab[i] && now > m->tab[i]->expire_at) {
        kx__mem_tab_del_at(m, i); /* lazy expiry: the key starts over */
        i = kx__mem_tab_find(m, key, klen, kh);
    }
    if (m->tab[i]) {
        *out = m->tab[i];
        return 0;
    }
    if (m->nkeys >= m->max_keys) {
        /* Expired keys the sweep has not reached yet should not count against the cap. */
        kx__store_memory_sweep(&m->base, now, MEM_SWEEP_BUDGET);
        if (m->nkeys >= m->max_keys)
            return -ENOSPC;
    }
    if ((m->nkeys + 1) * 2 > m->tab_cap) {
        int rc = tab_grow(m);
        if (rc)
            return rc;
    }
    mem_win *w = kx__mem_win_new(key, klen, kh);
    if (!w)
        return -ENOMEM;
    w->expire_at = now + ttl;
    i = kx__mem_tab_find(m, key, klen, kh);
    m->tab[i] = w;
    m->nkeys++;
    *out = w;
    return 0;
}

/* The live window of key, or NULL (an expired one is removed, as Redis would have). */
mem_win *kx__mem_lookup(kx_store_memory *m, const char *key, int64_t now)
{
    size_t klen = strlen(key);
    size_t i = kx__mem_tab_find(m, key, klen, kx_hash64(key, klen, 0));
    mem_win *w = m->tab[i];
    if (w && now > w->expire_at) {
        kx__mem_tab_del_at(m, i);
        w = NULL;
    }
    return w;
}

/* Marked expired rather than freed: the window may be in use further up the stack (a
 * callback of this store); the next lookup or the key cap's sweep removes it. */
static int mem_forget(kx_store *s, const char *key)
{
    kx_store_memory *m = (kx_store_memory *)s;
    if (m->destroy_pending)
        return -ECANCELED;
    size_t klen = strlen(key);
    size_t i = kx__mem_tab_find(m, key, klen, kx_hash64(key, klen, 0));
    mem_win *w = m->tab[i];
    /* A replica is never swept: its owner's forget frees the key (outside any callback). */
    if (w && m->replica && m->depth == 0)
        kx__mem_tab_del_at(m, i);
    else if (w)
        w->expire_at = INT64_MIN;
    return 0;
}

static bool mem_is_up(const kx_store *s)
{
    (void)s;
    return true;
}

static size_t mem_pending(const kx_store *s)
{
    (void)s;
    return 0;
}

static void mem_destroy(kx_store *s)
{
    kx_store_memory *m = (kx_store_memory *)s;
    if (m->depth > 0) {
        m->destroy_pending = true;
        return;
    }
    kx__mem_free(m);
}

static const kx__store_vtbl mem_vtbl = {
    .kind = "memory",
    .window_add = kx__mem_window_add,
    .window_add_many = kx__mem_window_add_many,
    .absence_touch = kx__mem_absence_touch,
    .absence_touch_many = kx__mem_absence_touch_many,
    .absence_due = kx__mem_absence_due,
    .close_touch = kx__mem_close_touch,
    .close_touch_many = kx__mem_close_touch_many,
    .close_due = kx__mem_close_due,
    .watermark = kx__mem_watermark,
    .claim = kx__mem_claim,
    .forget = mem_forget,
    .is_up = mem_is_up,
    .pending = mem_pending,
    .destroy = mem_destroy,
};

int kx_store_memory_create(struct ev_loop *loop, size_t max_keys, kx_store **out)
{
    if (!loop || !out)
        return -EINVAL;
    kx_store_memory *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    kx__store_base_init(&m->base, &mem_vtbl);
    m->loop = loop;
    m->max_keys = max_keys ? max_keys : MEM_DEFAULT_MAX_KEYS;
    m->tab_cap = 64;
    m->tab = calloc(m->tab_cap, sizeof(*m->tab));
    if (!m->tab) {
        free(m);
        return -ENOMEM;
    }
    ev_timer_init(&m->sweep_timer, sweep_cb, MEM_SWEEP_INTERVAL_S, MEM_SWEEP_INTERVAL_S);
    m->sweep_timer.data = m;
    ev_timer_start(loop, &m->sweep_timer);
    *out = &m->base;
    return 0;
}

int kx__store_memory_create_replica(struct ev_loop *loop, size_t max_keys, kx_store **out)
{
    int rc = kx_store_memory_create(loop, max_keys, out);
    if (rc)
        return rc;
    kx_store_memory *m = (kx_store_memory *)*out;
    m->replica = true;
    ev_timer_stop(loop, &m->sweep_timer); /* nothing expires by time */
    return 0;
}
