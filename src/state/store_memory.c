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
#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "state/store_impl.h"

#define MEM_DEFAULT_MAX_KEYS 1000000u
#define MEM_SWEEP_INTERVAL_S 0.1
#define MEM_SWEEP_BUDGET 4096u
#define MEM_SLOT_EMPTY INT64_MIN

typedef struct mem_entry {
    int64_t t;
    uint64_t h;
    uint32_t off; /* into the window's string heap */
    uint32_t len;
} mem_entry;

typedef struct mem_slot {
    uint64_t h;
    int64_t t; /* MEM_SLOT_EMPTY when free (valid times are > -2^53) */
} mem_slot;

typedef struct mem_ev {
    char *p;
    size_t len;
    size_t cap;
} mem_ev;

/* An entry of a first-seen key (a value and its introducer) or of an absence key (a group
 * and its payload; fired = the last sighting whose silence was reported). */
typedef struct mem_seen {
    uint64_t h;
    int64_t last;
    char *val; /* value (group) bytes, then the introducer's identity (the payload) */
    uint32_t vlen, ilen;
    bool has_fired;
    int64_t fired;
    int64_t fired_wm; /* the watermark the silence was reported at (forgotten keep later) */
    int oc;           /* what the touch that set last reported (kx_absence_outcome) */
    int64_t oc_since;
    /* closing windows: the end of the group's earliest window with events */
    bool has_deadline;
    int64_t deadline;
} mem_seen;

typedef struct mem_win {
    uint64_t kh;
    int64_t expire_at; /* loop ms; expired when now > expire_at (Redis' rule) */
    mem_entry *ent;
    uint32_t head, n, ecap;
    mem_slot *set;
    uint32_t set_cap; /* 0 or a power of two, load <= 1/2 */
    char *str;
    uint32_t str_len, str_cap, str_dead;
    mem_ev *ev;
    uint32_t ev_n, ev_cap;
    /* KX_AGG_FIRST_SEEN (the script's :z and :a): values, an index of entry + 1 by hash */
    struct mem_seen *seen;
    uint32_t seen_n, seen_cap;
    uint32_t *seen_idx;
    uint32_t seen_idx_cap; /* 0 or a power of two, load <= 1/2 */
    /* KX_AGG_BASELINE (the script's :a hash); the members (:z) expire on their own */
    bool bl_has, bl_alerted;
    int64_t bl_folded, bl_n, bl_alerted_k;
    double bl_mean, bl_var;
    int64_t members_expire_at;
    /* closing windows: the largest watermark judged (the script's "|wm" field) */
    bool has_horizon;
    int64_t horizon_wm;
    bool alerted; /* the last window reported as crossed (the Lua script's :a key) */
    bool pruned;  /* horizon is set: the newest time pruned (the script's :h key) */
    int64_t horizon;
    int64_t alert_first, alert_last;
    int64_t nsup; /* crossings passed over since the last reported one (the script's 3rd
                   * number in :a) */
    size_t klen;
    char key[]; /* NUL-terminated */
} mem_win;

typedef struct kx_store_memory {
    kx_store base;
    struct ev_loop *loop;
    ev_timer sweep_timer;
    mem_win **tab; /* tab_cap slots, power of two, load <= 1/2 */
    size_t tab_cap;
    size_t nkeys;
    size_t max_keys;
    size_t sweep_cursor;
    int depth;            /* > 0 while a callback runs */
    bool destroy_pending; /* destroy was called from inside a callback */
    kx_ratelimit rl_keys;
    kx_ratelimit rl_members;
    uint32_t *dset; /* DISTINCT scratch: entry index + 1, open addressing, reused */
    size_t dset_cap;
    const char *res_ev[KX__STORE_MAX_EVIDENCE];
    size_t res_ev_len[KX__STORE_MAX_EVIDENCE];
    int64_t res_last[KX_STORE_ABSENCE_DUE_MAX];
    int64_t res_count[KX_STORE_ABSENCE_DUE_MAX];
    uint32_t *due; /* absence_due scratch: entry indexes */
    size_t due_cap;
    /* window_add_many scratch: results, and their evidence copied (later adds of the same
     * call reuse the window's evidence buffers) as offsets into many_ev */
    kx_window_result *many_res;
    size_t many_cap;
    size_t many_i;
    int many_status;
    kx_buf many_ev;
    size_t *many_ev_off;
    size_t *many_ev_len;
    size_t many_ev_n, many_ev_cap;
    const char **many_ev_ptr;
} kx_store_memory;

static int64_t loop_now_ms(const kx_store_memory *m)
{
    return (int64_t)(ev_now(m->loop) * 1000.0);
}

/* Redis orders equal scores by member bytes (memcmp, then the shorter first). */
static int member_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* ---- one window ---- */

static mem_entry *win_at(mem_win *w, uint32_t i)
{
    return &w->ent[w->head + i];
}

/* First index whose (t, member) >= (t, m). */
static uint32_t win_lower(mem_win *w, int64_t t, const char *m, size_t mlen)
{
    uint32_t lo = 0, hi = w->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const mem_entry *e = win_at(w, mid);
        int c = e->t < t ? -1 : e->t > t;
        if (c == 0)
            c = member_cmp(w->str + e->off, e->len, m, mlen);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* First index with time >= t (strict = false) or > t (strict = true). */
static uint32_t win_time_bound(mem_win *w, int64_t t, bool strict)
{
    uint32_t lo = 0, hi = w->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int64_t et = win_at(w, mid)->t;
        if (et < t || (strict && et == t))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void set_put(mem_slot *set, uint32_t cap, uint64_t h, int64_t t)
{
    uint32_t i = (uint32_t)h & (cap - 1);
    while (set[i].t != MEM_SLOT_EMPTY)
        i = (i + 1) & (cap - 1);
    set[i].h = h;
    set[i].t = t;
}

static int set_resize(mem_win *w, uint32_t cap)
{
    mem_slot *set = malloc((size_t)cap * sizeof(*set));
    if (!set)
        return -ENOMEM;
    for (uint32_t i = 0; i < cap; i++)
        set[i].t = MEM_SLOT_EMPTY;
    for (uint32_t i = 0; i < w->n; i++)
        set_put(set, cap, win_at(w, i)->h, win_at(w, i)->t);
    free(w->set);
    w->set = set;
    w->set_cap = cap;
    return 0;
}

/* Backward-shift deletion keeps probe chains whole without tombstones. */
static void set_del(mem_win *w, uint64_t h, int64_t t)
{
    uint32_t mask = w->set_cap - 1;
    uint32_t i = (uint32_t)h & mask;
    while (w->set[i].t != MEM_SLOT_EMPTY && !(w->set[i].h == h && w->set[i].t == t))
        i = (i + 1) & mask;
    if (w->set[i].t == MEM_SLOT_EMPTY)
        return; /* not reached: every entry has its slot */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (w->set[j].t == MEM_SLOT_EMPTY)
            break;
        uint32_t k = (uint32_t)w->set[j].h & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        w->set[i] = w->set[j];
        i = j;
    }
    w->set[i].t = MEM_SLOT_EMPTY;
}

static const mem_entry *win_find(mem_win *w, uint64_t h, const char *m, size_t mlen)
{
    if (!w->set_cap)
        return NULL;
    uint32_t mask = w->set_cap - 1;
    for (uint32_t i = (uint32_t)h & mask; w->set[i].t != MEM_SLOT_EMPTY; i = (i + 1) & mask) {
        if (w->set[i].h != h)
            continue;
        uint32_t pos = win_lower(w, w->set[i].t, m, mlen);
        if (pos < w->n) {
            const mem_entry *e = win_at(w, pos);
            if (e->t == w->set[i].t && member_cmp(w->str + e->off, e->len, m, mlen) == 0)
                return e;
        }
    }
    return NULL;
}

static int str_append(mem_win *w, const char *m, uint32_t mlen, uint32_t *off)
{
    if (w->str_len + mlen > w->str_cap) {
        size_t cap = w->str_cap ? w->str_cap : 64;
        while (cap < (size_t)w->str_len + mlen)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -ENOMEM;
        char *p = realloc(w->str, cap);
        if (!p)
            return -ENOMEM;
        w->str = p;
        w->str_cap = (uint32_t)cap;
    }
    memcpy(w->str + w->str_len, m, mlen);
    *off = w->str_len;
    w->str_len += mlen;
    return 0;
}

/* Rewrites the string heap with only live members once half of it is dead. */
static void str_maybe_compact(mem_win *w)
{
    if (w->n == 0) {
        w->str_len = w->str_dead = 0;
        return;
    }
    if (w->str_dead < 4096 || w->str_dead < w->str_len / 2)
        return;
    uint32_t live = w->str_len - w->str_dead;
    char *p = malloc(live ? live : 1);
    if (!p)
        return; /* keep the old heap: still correct, only larger */
    uint32_t off = 0;
    for (uint32_t i = 0; i < w->n; i++) {
        mem_entry *e = win_at(w, i);
        memcpy(p + off, w->str + e->off, e->len);
        e->off = off;
        off += e->len;
    }
    free(w->str);
    w->str = p;
    w->str_cap = live ? live : 1;
    w->str_len = off;
    w->str_dead = 0;
}

/* Removes the k oldest members. */
static void win_drop_front(mem_win *w, uint32_t k)
{
    for (uint32_t i = 0; i < k; i++) {
        const mem_entry *e = win_at(w, i);
        set_del(w, e->h, e->t);
        w->str_dead += e->len;
    }
    w->head += k;
    w->n -= k;
    if (w->n == 0)
        w->head = 0;
    str_maybe_compact(w);
}

/* Inserts a member known to be absent; keeps the slice sorted. */
static int win_insert(mem_win *w, uint64_t h, int64_t t, const char *m, uint32_t mlen)
{
    if ((uint64_t)(w->n + 1) * 2 > w->set_cap) {
        int rc = set_resize(w, w->set_cap ? w->set_cap * 2 : 8);
        if (rc)
            return rc;
    }
    if (w->head + w->n == w->ecap) {
        if (w->head > 0) {
            memmove(w->ent, w->ent + w->head, (size_t)w->n * sizeof(*w->ent));
            w->head = 0;
        } else {
            uint32_t cap = w->ecap ? w->ecap * 2 : 4;
            mem_entry *p = realloc(w->ent, (size_t)cap * sizeof(*p));
            if (!p)
                return -ENOMEM;
            w->ent = p;
            w->ecap = cap;
        }
    }
    uint32_t off;
    int rc = str_append(w, m, mlen, &off);
    if (rc)
        return rc;
    uint32_t pos = win_lower(w, t, m, mlen);
    mem_entry *at = win_at(w, pos);
    memmove(at + 1, at, (size_t)(w->n - pos) * sizeof(*at));
    at->t = t;
    at->h = h;
    at->off = off;
    at->len = mlen;
    w->n++;
    set_put(w->set, w->set_cap, h, t);
    return 0;
}

/* LPUSH + LTRIM 0 max-1, reusing the buffer of the blob that falls off the end. */
static int win_push_evidence(mem_win *w, const char *p, size_t len, uint32_t max)
{
    if (w->ev_n > max) {
        for (uint32_t i = max; i < w->ev_n; i++)
            free(w->ev[i].p);
        w->ev_n = max;
    }
    mem_ev slot = {NULL, 0, 0};
    if (w->ev_n == max) {
        slot = w->ev[max - 1];
        w->ev_n--;
    } else if (w->ev_n == w->ev_cap) {
        uint32_t cap = w->ev_cap ? w->ev_cap * 2 : 4;
        if (cap > max)
            cap = max;
        mem_ev *np = realloc(w->ev, (size_t)cap * sizeof(*np));
        if (!np)
            return -ENOMEM;
        w->ev = np;
        w->ev_cap = cap;
    }
    if (slot.cap < len + 1) {
        char *np = realloc(slot.p, len + 1);
        if (!np) {
            free(slot.p);
            return -ENOMEM;
        }
        slot.p = np;
        slot.cap = len + 1;
    }
    if (len)
        memcpy(slot.p, p, len);
    slot.p[len] = '\0';
    slot.len = len;
    memmove(w->ev + 1, w->ev, (size_t)w->ev_n * sizeof(*w->ev));
    w->ev[0] = slot;
    w->ev_n++;
    return 0;
}

static mem_win *win_new(const char *key, size_t klen, uint64_t kh)
{
    mem_win *w = calloc(1, sizeof(*w) + klen + 1);
    if (!w)
        return NULL;
    w->kh = kh;
    w->klen = klen;
    memcpy(w->key, key, klen + 1);
    return w;
}

static void win_free(mem_win *w)
{
    for (uint32_t i = 0; i < w->seen_n; i++)
        free(w->seen[i].val);
    free(w->seen);
    free(w->seen_idx);
    for (uint32_t i = 0; i < w->ev_n; i++)
        free(w->ev[i].p);
    free(w->ev);
    free(w->str);
    free(w->set);
    free(w->ent);
    free(w);
}

/* ---- key table ---- */

static size_t tab_find(const kx_store_memory *m, const char *key, size_t klen, uint64_t kh)
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

static void tab_del_at(kx_store_memory *m, size_t i)
{
    size_t mask = m->tab_cap - 1;
    win_free(m->tab[i]);
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
            tab_del_at(m, i);
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
    kx__store_memory_sweep(&m->base, loop_now_ms(m), MEM_SWEEP_BUDGET);
}

int64_t kx__store_memory_pttl(kx_store *s, const char *key, int64_t now_ms)
{
    kx_store_memory *m = (kx_store_memory *)s;
    size_t klen = strlen(key);
    size_t i = tab_find(m, key, klen, kx_hash64(key, klen, 0));
    if (!m->tab[i] || now_ms > m->tab[i]->expire_at)
        return -2;
    return m->tab[i]->expire_at - now_ms;
}

size_t kx__store_memory_nkeys(const kx_store *s)
{
    return ((const kx_store_memory *)s)->nkeys;
}

static void note_pruned(mem_win *w, int64_t t)
{
    if (!w->pruned || t > w->horizon) {
        w->pruned = true;
        w->horizon = t;
    }
}

/* ---- aggregates (the same arithmetic, in the same member order, as the Lua script) ---- */

/* The value of a member: the bytes after its first 0x1f ("" when there is none). */
static const char *entry_value(const mem_win *w, const mem_entry *e, size_t *len)
{
    const char *p = w->str + e->off;
    const char *sep = memchr(p, 0x1f, e->len);
    if (!sep) {
        *len = 0;
        return p + e->len;
    }
    *len = e->len - (size_t)(sep + 1 - p);
    return sep + 1;
}

/* Lua's tonumber on the value; a value that is not a number counts as 0 (as in the script). */
static double entry_number(const mem_win *w, const mem_entry *e)
{
    size_t len;
    const char *v = entry_value(w, e, &len);
    char tmp[64];
    if (len == 0 || len >= sizeof(tmp))
        return 0;
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    char *end;
    double d = strtod(tmp, &end);
    return *end == '\0' && d == d ? d : 0;
}

static bool value_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Distinct values among entries [lo, hi) except skip. */
static int64_t agg_distinct(kx_store_memory *m, mem_win *w, uint32_t lo, uint32_t hi, uint32_t skip)
{
    size_t need = 16;
    while (need < (size_t)(hi - lo) * 2)
        need *= 2;
    if (need > m->dset_cap) {
        uint32_t *p = realloc(m->dset, need * sizeof(*p));
        if (!p)
            return -1;
        m->dset = p;
        m->dset_cap = need;
    }
    memset(m->dset, 0, need * sizeof(*m->dset));
    int64_t n = 0;
    for (uint32_t i = lo; i < hi; i++) {
        if (i == skip)
            continue;
        size_t len;
        const char *v = entry_value(w, win_at(w, i), &len);
        size_t j = (size_t)kx_hash64(v, len, 7) & (need - 1);
        for (;; j = (j + 1) & (need - 1)) {
            if (!m->dset[j]) {
                m->dset[j] = i + 1;
                n++;
                break;
            }
            size_t olen;
            const char *o = entry_value(w, win_at(w, m->dset[j] - 1), &olen);
            if (value_eq(v, len, o, olen))
                break;
        }
    }
    return n;
}

/* The aggregate of entries [lo, hi) without entry skip (UINT32_MAX: none); own is the adding
 * member's value (SHARE). False when it is undefined (an average of nothing). */
static bool mem_agg(kx_store_memory *m, mem_win *w, kx_agg agg, uint32_t lo, uint32_t hi,
                    uint32_t skip, const char *own, size_t own_len, double *out)
{
    int64_t n = (int64_t)(hi - lo) - (skip >= lo && skip < hi);
    switch (agg) {
    case KX_AGG_COUNT:
        *out = (double)n;
        return true;
    case KX_AGG_DISTINCT: {
        int64_t d = agg_distinct(m, w, lo, hi, skip);
        *out = (double)d;
        return d >= 0;
    }
    case KX_AGG_SUM:
    case KX_AGG_AVG: {
        double sum = 0;
        for (uint32_t i = lo; i < hi; i++)
            if (i != skip)
                sum += entry_number(w, win_at(w, i));
        if (agg == KX_AGG_AVG) {
            if (n == 0)
                return false;
            sum /= (double)n;
        }
        *out = sum;
        return true;
    }
    case KX_AGG_SHARE: {
        if (n == 0)
            return false;
        int64_t same = 0;
        for (uint32_t i = lo; i < hi; i++) {
            size_t len;
            const char *v = entry_value(w, win_at(w, i), &len);
            if (i != skip && value_eq(v, len, own, own_len))
                same++;
        }
        *out = (double)same * 100.0 / (double)n;
        return true;
    }
    default: { /* ORDERED */
        int64_t k = 0;
        char want[24];
        int wl = snprintf(want, sizeof(want), "%lld", (long long)k);
        for (uint32_t i = lo; i < hi; i++) {
            size_t len;
            const char *v = entry_value(w, win_at(w, i), &len);
            if (i != skip && value_eq(v, len, want, (size_t)wl)) {
                k++;
                wl = snprintf(want, sizeof(want), "%lld", (long long)k);
            }
        }
        *out = (double)k;
        return true;
    }
    }
}

/* ---- the operation ---- */

static void mem_free(kx_store_memory *m)
{
    ev_timer_stop(m->loop, &m->sweep_timer);
    for (size_t i = 0; i < m->tab_cap; i++)
        if (m->tab[i])
            win_free(m->tab[i]);
    free(m->tab);
    free(m->dset);
    free(m->due);
    free(m->many_res);
    kx_buf_fini(&m->many_ev);
    free(m->many_ev_off);
    free(m->many_ev_len);
    free(m->many_ev_ptr);
    free(m);
}

static void run_cb(kx_store_memory *m, kx_store_cb cb, void *ud, int status,
                   const kx_window_result *res)
{
    m->depth++;
    cb(ud, status, res);
    m->depth--;
    if (m->depth == 0 && m->destroy_pending)
        mem_free(m);
}

/* Finds or creates the window for key; -ENOSPC at the key cap. */
static int mem_window(kx_store_memory *m, const char *key, int64_t now, int64_t ttl, mem_win **out)
{
    size_t klen = strlen(key);
    uint64_t kh = kx_hash64(key, klen, 0);
    size_t i = tab_find(m, key, klen, kh);
    if (m->tab[i] && now > m->tab[i]->expire_at) {
        tab_del_at(m, i); /* lazy expiry: the key starts over */
        i = tab_find(m, key, klen, kh);
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
    mem_win *w = win_new(key, klen, kh);
    if (!w)
        return -ENOMEM;
    w->expire_at = now + ttl;
    i = tab_find(m, key, klen, kh);
    m->tab[i] = w;
    m->nkeys++;
    *out = w;
    return 0;
}

/* ---- KX_AGG_FIRST_SEEN: values of a key, each with when it was last seen ---- */

static int32_t seen_find(const mem_win *w, uint64_t h, const char *v, size_t vlen)
{
    if (!w->seen_idx_cap)
        return -1;
    uint32_t mask = w->seen_idx_cap - 1;
    for (uint32_t i = (uint32_t)h & mask; w->seen_idx[i]; i = (i + 1) & mask) {
        const mem_seen *e = &w->seen[w->seen_idx[i] - 1];
        if (e->h == h && e->vlen == vlen && memcmp(e->val, v, vlen) == 0)
            return (int32_t)(w->seen_idx[i] - 1);
    }
    return -1;
}

static int seen_reindex(mem_win *w, uint32_t cap)
{
    uint32_t *idx = calloc(cap, sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    for (uint32_t k = 0; k < w->seen_n; k++) {
        uint32_t i = (uint32_t)w->seen[k].h & (cap - 1);
        while (idx[i])
            i = (i + 1) & (cap - 1);
        idx[i] = k + 1;
    }
    free(w->seen_idx);
    w->seen_idx = idx;
    w->seen_idx_cap = cap;
    return 0;
}

/* Removes the entries marked with last == INT64_MIN, then rebuilds the index. */
static void seen_compact(mem_win *w)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < w->seen_n; i++) {
        if (w->seen[i].last == INT64_MIN)
            free(w->seen[i].val);
        else
            w->seen[k++] = w->seen[i];
    }
    w->seen_n = k;
    uint32_t cap = w->seen_idx_cap ? w->seen_idx_cap : 8;
    if (seen_reindex(w, cap) != 0) {
        /* No memory for a new index: clear the old one in place and refill it. */
        memset(w->seen_idx, 0, (size_t)w->seen_idx_cap * sizeof(*w->seen_idx));
        for (uint32_t j = 0; j < w->seen_n; j++) {
            uint32_t i = (uint32_t)w->seen[j].h & (w->seen_idx_cap - 1);
            while (w->seen_idx[i])
                i = (i + 1) & (w->seen_idx_cap - 1);
            w->seen_idx[i] = j + 1;
        }
    }
}

/* Sets entry e's introducer to id (the value bytes stay in front). */
static int seen_set_intro(mem_seen *e, const char *id, size_t ilen)
{
    char *p = realloc(e->val, (size_t)e->vlen + ilen + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p + e->vlen, id, ilen);
    p[e->vlen + ilen] = '\0';
    e->val = p;
    e->ilen = (uint32_t)ilen;
    return 0;
}

static int seen_append(mem_win *w, uint64_t h, const char *v, size_t vlen, int32_t *at)
{
    if ((uint64_t)(w->seen_n + 1) * 2 > w->seen_idx_cap) {
        int rc = seen_reindex(w, w->seen_idx_cap ? w->seen_idx_cap * 2 : 8);
        if (rc)
            return rc;
    }
    if (w->seen_n == w->seen_cap) {
        uint32_t cap = w->seen_cap ? w->seen_cap * 2 : 4;
        mem_seen *p = realloc(w->seen, (size_t)cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        w->seen = p;
        w->seen_cap = cap;
    }
    mem_seen *e = &w->seen[w->seen_n];
    *e = (mem_seen){0};
    e->val = malloc(vlen + 1);
    if (!e->val)
        return -ENOMEM;
    memcpy(e->val, v, vlen);
    e->val[vlen] = '\0';
    e->h = h;
    e->vlen = (uint32_t)vlen;
    e->ilen = 0;
    e->last = 0;
    uint32_t mask = w->seen_idx_cap - 1;
    uint32_t i = (uint32_t)h & mask;
    while (w->seen_idx[i])
        i = (i + 1) & mask;
    w->seen_idx[i] = w->seen_n + 1;
    *at = (int32_t)w->seen_n++;
    return 0;
}

/* The script's first_seen branch, step for step (redis_scripts.h). */
static int mem_first_seen(kx_store_memory *m, mem_win *w, const kx_window_add *op,
                          kx_window_result *res)
{
    size_t mlen = strlen(op->member);
    const char *sep = memchr(op->member, 0x1f, mlen);
    const char *id = op->member, *v = sep + 1;
    size_t ilen = (size_t)(sep - op->member), vlen = mlen - ilen - 1;
    uint64_t h = kx_hash64(v, vlen, 0);
    int64_t t = op->time_ms;
    int32_t at = seen_find(w, h, v, vlen);
    int64_t prev = at >= 0 ? w->seen[at].last : -1;
    int rc;
    if (at < 0 || prev < t - op->window_ms) {
        if (at < 0 && (rc = seen_append(w, h, v, vlen, &at)))
            return rc;
        mem_seen *e = &w->seen[at];
        if ((rc = seen_set_intro(e, id, ilen)))
            return rc;
        e->last = t;
        res->added = res->crossed = true;
    } else {
        mem_seen *e = &w->seen[at];
        res->crossed = e->ilen == ilen && memcmp(e->val + e->vlen, id, ilen) == 0;
        if (t > e->last)
            e->last = t;
    }
    /* Forget values last seen before (newest - ttl), then the least recently seen (ties: by
     * value bytes, Redis' order) past the cap. */
    int64_t maxt = INT64_MIN, limit;
    for (uint32_t i = 0; i < w->seen_n; i++)
        if (w->seen[i].last > maxt)
            maxt = w->seen[i].last;
    limit = maxt - op->ttl_ms;
    uint32_t live = 0;
    bool gone = false;
    for (uint32_t i = 0; i < w->seen_n; i++) {
        if (w->seen[i].last < limit) {
            w->seen[i].last = INT64_MIN;
            gone = true;
        } else {
            live++;
        }
    }
    uint32_t cap =
        m->base.member_cap < KX__STORE_SEEN_CAP ? m->base.member_cap : KX__STORE_SEEN_CAP;
    uint32_t dropped = live > cap ? live - cap : 0;
    for (uint32_t d = 0; d < dropped; d++) {
        int32_t old = -1;
        for (uint32_t i = 0; i < w->seen_n; i++) {
            const mem_seen *e = &w->seen[i];
            if (e->last == INT64_MIN)
                continue;
            if (old < 0 || e->last < w->seen[old].last ||
                (e->last == w->seen[old].last &&
                 member_cmp(e->val, e->vlen, w->seen[old].val, w->seen[old].vlen) < 0))
                old = (int32_t)i;
        }
        w->seen[old].last = INT64_MIN;
        gone = true;
    }
    if (gone)
        seen_compact(w);
    if (dropped) {
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&m->rl_members, KX_LOG_WARN, "state",
                       "key \"%s\" over %u values: dropped the %u least recently seen", op->key,
                       cap, dropped);
    }
    res->count = res->cross_count = w->seen_n;
    res->first_ms = res->last_ms = res->cross_first_ms = res->cross_last_ms = t;
    res->cross_value = (double)prev;
    return 0;
}

/* ---- KX_AGG_BASELINE: counts per interval against their own history ---- */

static int64_t bl_interval(int64_t t, int64_t w)
{
    /* As the script computes it: math.floor(t / w) in doubles. */
    return (int64_t)floor((double)t / (double)w);
}

static int64_t bl_count(mem_win *w, int64_t j, int64_t iv)
{
    uint32_t lo = win_time_bound(w, j * iv, false);
    uint32_t hi = win_time_bound(w, (j + 1) * iv - 1, true);
    return hi > lo ? (int64_t)(hi - lo) : 0;
}

/* Folds the counts of intervals j0..j1 into (*mean, *var, *n): EWMA, as the script does. An
 * empty run is folded as zeros (none before the group's first events; past 3 * history + 2
 * zeros the mean and variance are 0). */
static void bl_fold(mem_win *w, int64_t j0, int64_t j1, int64_t iv, int64_t history, double alpha,
                    double *mean, double *var, int64_t *n)
{
    int64_t j = j0;
    while (j <= j1) {
        int64_t c = bl_count(w, j, iv);
        if (c == 0) {
            uint32_t i = win_time_bound(w, j * iv, false);
            int64_t nj = j1 + 1;
            if (i < w->n) {
                int64_t k = bl_interval(win_at(w, i)->t, iv);
                nj = k < j1 + 1 ? k : j1 + 1;
            }
            if (*n > 0) {
                int64_t g = nj - j, life = 3 * history + 2;
                for (int64_t z = 0; z < (g < life ? g : life); z++) {
                    double d = 0 - *mean;
                    double inc = alpha * d;
                    *mean = *mean + inc;
                    *var = (1 - alpha) * (*var + d * inc);
                }
                if (g > life)
                    *mean = *var = 0;
                *n += g;
            }
            j = nj;
            continue;
        }
        double d = (double)c - *mean;
        double inc = alpha * d;
        *mean = *mean + inc;
        *var = (1 - alpha) * (*var + d * inc);
        *n += 1;
        j++;
    }
}

/* The script's baseline branch, step for step (redis_scripts.h). */
static int mem_baseline(kx_store_memory *m, mem_win *w, const kx_window_add *op, int64_t now,
                        kx_window_result *res, bool *added_out)
{
    int64_t t = op->time_ms, iv = op->window_ms, late = op->ttl_ms - op->window_ms;
    double alpha = 2.0 / (double)(op->history + 1);
    if (now > w->members_expire_at && w->n > 0) {
        /* The script's :z and :e expired (wall clock) while its history lives on. */
        win_drop_front(w, w->n);
        for (uint32_t i = 0; i < w->ev_n; i++)
            free(w->ev[i].p);
        w->ev_n = 0;
    }
    int64_t k = bl_interval(t, iv);
    int64_t folded = w->bl_has ? w->bl_folded : bl_interval(t - late, iv) - 1;
    double mean = w->bl_has ? w->bl_mean : 0, var = w->bl_has ? w->bl_var : 0;
    int64_t n = w->bl_has ? w->bl_n : 0;
    size_t mlen = strlen(op->member);
    uint64_t h = kx_hash64(op->member, mlen, 0);
    /* A member already kept is a replay, never late: it may report its interval again. */
    bool added = win_find(w, h, op->member, mlen) == NULL;
    if (added && ((w->n > 0 && t < win_at(w, w->n - 1)->t - late) || k <= folded)) {
        res->late = true;
        return 0;
    }
    if (added) {
        int rc = win_insert(w, h, t, op->member, (uint32_t)mlen);
        if (rc)
            return rc;
    }
    int64_t maxt = win_at(w, w->n - 1)->t;
    int64_t lastclosed = bl_interval(maxt - late, iv) - 1;
    if (lastclosed > folded) {
        bl_fold(w, folded + 1, lastclosed, iv, op->history, alpha, &mean, &var, &n);
        folded = lastclosed;
    }
    win_drop_front(w, win_time_bound(w, maxt - op->ttl_ms, false));
    uint32_t cap = m->base.member_cap;
    if (w->n > cap) {
        uint32_t dropped = w->n - cap;
        win_drop_front(w, dropped);
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&m->rl_members, KX_LOG_WARN, "state",
                       "key \"%s\" over %u members: dropped the %u oldest", op->key, cap, dropped);
    }
    *added_out = added;
    int64_t c = bl_count(w, k, iv);
    double pm = mean, pv = var;
    int64_t pn = n;
    bl_fold(w, folded + 1, k - 1, iv, op->history, alpha, &pm, &pv, &pn);
    bool crossed = false;
    if (w->bl_alerted && w->bl_alerted_k == k) {
        crossed = !added;
    } else if (k > folded && pn >= op->history && (double)c > pm + op->deviations * sqrt(pv) &&
               kx_cmp_holds(op->cond, op->ncond, (double)c)) {
        crossed = true;
        w->bl_alerted = true;
        w->bl_alerted_k = k;
    }
    w->bl_has = true;
    w->bl_folded = folded;
    w->bl_mean = mean;
    w->bl_var = var;
    w->bl_n = n;
    /* The members expire with the history (:z and :e have the :a TTL): an open interval must
     * still be countable when the group's next event, however late in wall time, folds it. */
    w->expire_at = now + (3 * op->history + 2) * iv + late;
    w->members_expire_at = w->expire_at;
    res->added = added;
    res->count = res->cross_count = c;
    res->first_ms = res->cross_first_ms = k * iv;
    res->last_ms = res->cross_last_ms = t;
    res->crossed = crossed;
    res->cross_value = pm;
    return 0;
}

/* ---- absence: groups, their last sighting, and whether their silence was reported ---- */

/* The absence callback, as run_cb: a destroy from inside it is carried out after it. */
static void run_acb(kx_store_memory *m, kx_absence_cb cb, void *ud, int status,
                    const kx_absence_result *res)
{
    m->depth++;
    cb(ud, status, res);
    m->depth--;
    if (m->depth == 0 && m->destroy_pending)
        mem_free(m);
}

static int mem_absence_touch(kx_store *s, const kx_absence_touch *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_touch(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m);
    mem_win *w;
    kx_metric_inc(KX_M_STORE_OPS);
    if ((rc = mem_window(m, op->key, now, op->timespan_ms + op->keep_ms, &w)) == -ENOSPC) {
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        run_acb(m, cb, ud, -ENOSPC, NULL);
        return 0;
    }
    if (rc)
        return rc;
    size_t glen = strlen(op->group);
    uint64_t h = kx_hash64(op->group, glen, 0);
    int32_t at = seen_find(w, h, op->group, glen);
    kx_absence_result res = {0};
    char *old = NULL; /* the replaced payload, handed out with a report */
    const char *payload = NULL;
    size_t payload_len = 0;
    if (at >= 0 && op->time_ms == w->seen[at].last && w->seen[at].oc != KX_ABSENCE_NONE &&
        w->seen[at].ilen == op->payload_len &&
        (op->payload_len == 0 ||
         memcmp(w->seen[at].val + w->seen[at].vlen, op->payload, op->payload_len) == 0)) {
        /* The same sighting again (a retry after a lost reply, as the script sees it): the
         * same report, with the payload given now. */
        res.outcome = (kx_absence_outcome)w->seen[at].oc;
        res.since_ms = w->seen[at].oc_since;
        payload = op->payload ? op->payload : "";
        payload_len = op->payload_len;
    } else if (op->mode == KX_TOUCH_EXTEND &&
               (at < 0 || op->time_ms <= w->seen[at].last ||
                (w->seen[at].has_fired && w->seen[at].fired == w->seen[at].last) ||
                op->time_ms - w->seen[at].last > op->timespan_ms)) {
        /* Not an open group (none, reported, or silent a whole timespan): nothing changes. */
    } else if (at < 0 || op->time_ms > w->seen[at].last) {
        if (at >= 0) {
            mem_seen *e = &w->seen[at];
            if (e->has_fired && e->fired == e->last)
                res.outcome = KX_ABSENCE_RESOLVED;
            else if (op->time_ms - e->last > op->timespan_ms)
                res.outcome = KX_ABSENCE_GAP;
            else if (op->mode == KX_TOUCH_REPLACE)
                res.outcome = KX_ABSENCE_REPLACED;
            if (res.outcome != KX_ABSENCE_NONE) {
                res.since_ms = e->last;
                old = malloc((size_t)e->ilen + 1);
                if (!old)
                    return -ENOMEM;
                memcpy(old, e->val + e->vlen, e->ilen);
                payload = old;
                payload_len = e->ilen;
            }
        }
        if (at < 0 && (rc = seen_append(w, h, op->group, glen, &at))) {
            free(old);
            return rc;
        }
        mem_seen *e = &w->seen[at];
        if (op->mode != KX_TOUCH_EXTEND && /* (an extend keeps the payload) */
            (rc = seen_set_intro(e, op->payload ? op->payload : "", op->payload_len))) {
            free(old);
            return rc;
        }
        e->last = op->time_ms;
        e->has_fired = false;
        e->oc = res.outcome;
        e->oc_since = res.since_ms;
    }
    w->expire_at = now + op->timespan_ms + op->keep_ms;
    if (res.outcome != KX_ABSENCE_NONE) {
        res.n = 1;
        m->res_last[0] = res.since_ms;
        m->res_ev[0] = payload;
        m->res_ev_len[0] = payload_len;
        res.last_ms = m->res_last;
        res.payload = m->res_ev;
        res.payload_len = m->res_ev_len;
    }
    run_acb(m, cb, ud, 0, &res);
    free(old);
    return 0;
}

/* qsort has no context argument: the entries sorted, and by which time. */
static const mem_win *g_sort_win;
static bool g_sort_by_deadline; /* closing windows' deadline, else (absence) last sighting */

/* Redis' order of a sorted set of groups: by score, then by group bytes. */
static int group_cmp(const void *a, const void *b)
{
    const mem_seen *x = &g_sort_win->seen[*(const uint32_t *)a];
    const mem_seen *y = &g_sort_win->seen[*(const uint32_t *)b];
    int64_t tx = g_sort_by_deadline ? x->deadline : x->last;
    int64_t ty = g_sort_by_deadline ? y->deadline : y->last;
    if (tx != ty)
        return tx < ty ? -1 : 1;
    return member_cmp(x->val, x->vlen, y->val, y->vlen);
}

/* The live window of key, or NULL (an expired one is removed, as Redis would have). */
static mem_win *mem_lookup(kx_store_memory *m, const char *key, int64_t now)
{
    size_t klen = strlen(key);
    size_t i = tab_find(m, key, klen, kx_hash64(key, klen, 0));
    mem_win *w = m->tab[i];
    if (w && now > w->expire_at) {
        tab_del_at(m, i);
        w = NULL;
    }
    return w;
}

static int mem_absence_due(kx_store *s, const kx_absence_due *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_due(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m);
    kx_absence_result res = {0};
    kx_metric_inc(KX_M_STORE_OPS);
    mem_win *w = mem_lookup(m, op->key, now);
    if (w) {
        w->expire_at = now + op->timespan_ms + op->keep_ms;
        /* Forget groups reported more than keep ago. */
        bool gone = false;
        for (uint32_t k = 0; k < w->seen_n; k++) {
            mem_seen *e = &w->seen[k];
            if (e->has_fired && e->fired == e->last &&
                e->fired_wm < op->watermark_ms - op->keep_ms) {
                e->last = INT64_MIN;
                gone = true;
            }
        }
        if (gone)
            seen_compact(w);
        if (m->due_cap < w->seen_n) {
            uint32_t *p = realloc(m->due, (size_t)w->seen_n * sizeof(*p));
            if (!p)
                return -ENOMEM;
            m->due = p;
            m->due_cap = w->seen_n;
        }
        size_t nd = 0;
        for (uint32_t k = 0; k < w->seen_n; k++) {
            const mem_seen *e = &w->seen[k];
            if (!(e->has_fired && e->fired == e->last) &&
                e->last + op->timespan_ms < op->watermark_ms)
                m->due[nd++] = k;
        }
        g_sort_win = w;
        g_sort_by_deadline = false;
        if (nd > 1) /* (m->due is still NULL for a key without groups) */
            qsort(m->due, nd, sizeof(*m->due), group_cmp);
        if (nd > op->limit)
            nd = op->limit;
        for (size_t k = 0; k < nd; k++) {
            mem_seen *e = &w->seen[m->due[k]];
            e->has_fired = true;
            e->fired = e->last;
            e->fired_wm = op->watermark_ms;
            m->res_last[k] = e->last;
            m->res_ev[k] = e->val + e->vlen;
            m->res_ev_len[k] = e->ilen;
        }
        res.n = nd;
        res.last_ms = m->res_last;
        res.payload = m->res_ev;
        res.payload_len = m->res_ev_len;
    }
    run_acb(m, cb, ud, 0, &res);
    return 0;
}

/* ---- closing windows: members "group|window|identity" sorted by bytes (time 0) ---- */

/* Removes the members [lo, hi) of the slice. */
static void win_remove_range(mem_win *w, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = lo; i < hi; i++) {
        const mem_entry *e = win_at(w, i);
        set_del(w, e->h, e->t);
        w->str_dead += e->len;
    }
    memmove(win_at(w, lo), win_at(w, hi), (size_t)(w->n - hi) * sizeof(mem_entry));
    w->n -= hi - lo;
    if (w->n == 0)
        w->head = 0;
    str_maybe_compact(w);
}

/* "group|%017lld|" of window k, as the script's kfmt: k + 2^52 (never negative, exact in the
 * script's doubles), zero-padded so byte order is number order. end gives the bound just
 * after the window's members ("...}"). */
static size_t close_prefix(char *out, size_t cap, const char *g, size_t glen, int64_t k, bool end)
{
    int n = snprintf(out, cap, "%.*s|%017lld%c", (int)glen, g, (long long)(k + ((int64_t)1 << 52)),
                     end ? '}' : '|');
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static int mem_close_touch(kx_store *s, const kx_close_touch *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_close_touch(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m);
    mem_win *w;
    kx_metric_inc(KX_M_STORE_OPS);
    if ((rc = mem_window(m, op->key, now, op->ttl_ms, &w)) == -ENOSPC) {
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        run_acb(m, cb, ud, -ENOSPC, NULL);
        return 0;
    }
    if (rc)
        return rc;
    size_t glen = strlen(op->group);
    uint64_t h = kx_hash64(op->group, glen, 0);
    int32_t at = seen_find(w, h, op->group, glen);
    int64_t k = kx__store_close_window(op->time_ms, op->timespan_ms);
    kx_absence_result res = {0};
    if (w->has_horizon && (k + 1) * op->timespan_ms <= w->horizon_wm) {
        res.late = true;
        run_acb(m, cb, ud, 0, &res);
        return 0;
    }
    char prefix[KX__STORE_MAX_KEY_LEN + 32];
    size_t plen = close_prefix(prefix, sizeof(prefix), op->group, glen, k, false);
    kx_buf member;
    kx_buf_init(&member, 0);
    if (!plen || kx_buf_append(&member, prefix, plen) || kx_buf_puts(&member, op->identity)) {
        kx_buf_fini(&member);
        return -ENOMEM;
    }
    uint64_t mh = kx_hash64(member.data, member.len, 0);
    if (!win_find(w, mh, member.data, member.len))
        rc = win_insert(w, mh, 0, member.data, (uint32_t)member.len);
    kx_buf_fini(&member);
    if (rc)
        return rc;
    bool fresh = at < 0;
    if (fresh && (rc = seen_append(w, h, op->group, glen, &at)))
        return rc;
    mem_seen *e = &w->seen[at];
    int64_t end = (k + 1) * op->timespan_ms;
    if (!e->has_deadline || end < e->deadline) {
        e->has_deadline = true;
        e->deadline = end;
    }
    if (fresh || op->time_ms >= e->last) {
        if ((rc = seen_set_intro(e, op->payload ? op->payload : "", op->payload_len)))
            return rc;
        e->last = op->time_ms;
    }
    w->expire_at = now + op->ttl_ms;
    run_acb(m, cb, ud, 0, &res);
    return 0;
}

static int mem_close_due(kx_store *s, const kx_close_due *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_close_due(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m);
    kx_absence_result res = {0};
    kx_metric_inc(KX_M_STORE_OPS);
    mem_win *w = mem_lookup(m, op->key, now);
    size_t n = 0, iter = 0, nd = 0, at = 0;
    bool gone = false;
    if (w) {
        if (!w->has_horizon || op->watermark_ms > w->horizon_wm) {
            w->has_horizon = true;
            w->horizon_wm = op->watermark_ms;
        }
        /* The due groups in the script's order, sorted once; a group whose next window is due
         * too goes back in its place. */
        if (m->due_cap < w->seen_n) {
            uint32_t *p = realloc(m->due, (size_t)w->seen_n * sizeof(*p));
            if (!p)
                return -ENOMEM;
            m->due = p;
            m->due_cap = w->seen_n;
        }
        for (uint32_t i = 0; i < w->seen_n; i++)
            if (w->seen[i].has_deadline && w->seen[i].deadline <= op->watermark_ms)
                m->due[nd++] = i;
        g_sort_win = w;
        g_sort_by_deadline = true;
        qsort(m->due, nd, sizeof(*m->due), group_cmp);
    }
    while (at < nd) {
        if (n >= op->limit || iter >= 4 * op->limit) {
            res.more = true;
            break;
        }
        iter++;
        mem_seen *e = &w->seen[m->due[at]];
        int64_t k = (int64_t)floor((double)e->deadline / (double)op->timespan_ms) - 1;
        char lo[KX__STORE_MAX_KEY_LEN + 32], hi[KX__STORE_MAX_KEY_LEN + 32];
        size_t lol = close_prefix(lo, sizeof(lo), e->val, e->vlen, k, false);
        size_t hil = close_prefix(hi, sizeof(hi), e->val, e->vlen, k, true);
        uint32_t a = win_lower(w, 0, lo, lol), b = win_lower(w, 0, hi, hil);
        int64_t c = (int64_t)(b - a);
        win_remove_range(w, a, b);
        /* The group's next window with events: the first member after this window's. */
        e->has_deadline = false;
        if (a < w->n) {
            const mem_entry *nx = win_at(w, a);
            const char *mb = w->str + nx->off;
            if (nx->len > e->vlen + 18 && memcmp(mb, e->val, e->vlen) == 0 && mb[e->vlen] == '|') {
                char num[18];
                memcpy(num, mb + e->vlen + 1, 17);
                num[17] = '\0';
                int64_t k2 = strtoll(num, NULL, 10) - ((int64_t)1 << 52);
                e->has_deadline = true;
                e->deadline = (k2 + 1) * op->timespan_ms;
            }
        }
        if (c > 0 && kx_cmp_holds(op->cond, op->ncond, (double)c)) {
            m->res_last[n] = k * op->timespan_ms;
            m->res_count[n] = c;
            m->res_ev[n] = e->val + e->vlen; /* freed only after the callback */
            m->res_ev_len[n] = e->ilen;
            n++;
        }
        uint32_t cur = m->due[at++];
        if (!e->has_deadline) {
            e->last = INT64_MIN; /* no window left: forgotten (seen_compact, below) */
            gone = true;
        } else if (e->deadline <= op->watermark_ms) {
            /* Due again: back into the rest of the list, in order. */
            size_t lo_i = at, hi_i = nd;
            while (lo_i < hi_i) {
                size_t mid = lo_i + (hi_i - lo_i) / 2;
                if (group_cmp(&m->due[mid], &cur) < 0)
                    lo_i = mid + 1;
                else
                    hi_i = mid;
            }
            at--;
            memmove(&m->due[at], &m->due[at + 1], (lo_i - 1 - at) * sizeof(*m->due));
            m->due[lo_i - 1] = cur;
        }
    }
    bool keep_alive = false;
    for (uint32_t i = 0; w && i < w->seen_n && !keep_alive; i++)
        keep_alive = w->seen[i].has_deadline;
    if (w && keep_alive)
        w->expire_at = now + op->ttl_ms;
    res.n = n;
    res.last_ms = m->res_last;
    res.count = m->res_count;
    res.payload = m->res_ev;
    res.payload_len = m->res_ev_len;
    m->depth++;
    cb(ud, 0, &res);
    m->depth--;
    if (gone && !m->destroy_pending)
        seen_compact(w); /* w is still in the table: nothing in the callback frees keys */
    if (m->depth == 0 && m->destroy_pending)
        mem_free(m);
    return 0;
}

/* ---- shared watermark: entries "topic/partition" -> newest time (last), moved (oc_since) */

static int mem_watermark(kx_store *s, const kx_watermark_op *op, kx_watermark_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_watermark(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m), t = op->now_ms;
    kx_metric_inc(KX_M_STORE_OPS);
    mem_win *w = mem_lookup(m, op->key, now);
    if (!w && op->n > 0 && (rc = mem_window(m, op->key, now, op->ttl_ms, &w))) {
        if (rc != -ENOSPC)
            return rc;
        /* The key table is full: no shared watermark (the caller judges by its own). */
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        w = NULL;
    }
    bool known = false, gone = false;
    int64_t wm = 0;
    if (w) {
        for (size_t i = 0; i < op->n; i++) {
            size_t len = strlen(op->mine[i].name);
            uint64_t h = kx_hash64(op->mine[i].name, len, 0);
            int32_t at = seen_find(w, h, op->mine[i].name, len);
            bool fresh = at < 0;
            if (fresh && (rc = seen_append(w, h, op->mine[i].name, len, &at)))
                return rc;
            mem_seen *e = &w->seen[at];
            if (fresh || op->mine[i].max_ms > e->last) {
                e->last = op->mine[i].max_ms;
                e->oc_since = t;
            } else if (op->mine[i].live) {
                e->oc_since = t;
            }
        }
        for (uint32_t i = 0; i < w->seen_n; i++) {
            mem_seen *e = &w->seen[i];
            if (t - e->oc_since > op->ttl_ms) {
                e->last = INT64_MIN;
                gone = true;
                continue;
            }
            int64_t eff = e->last;
            if (t - e->oc_since > op->quiet_ms) {
                eff = e->last + (t - e->oc_since - op->quiet_ms);
                if (eff < t - op->quiet_ms)
                    eff = t - op->quiet_ms;
            }
            if (!known || eff < wm)
                wm = eff;
            known = true;
        }
        if (gone)
            seen_compact(w);
        if (w->seen_n > 0)
            w->expire_at = now + op->ttl_ms;
    }
    m->depth++;
    cb(ud, 0, known, wm);
    m->depth--;
    if (m->depth == 0 && m->destroy_pending)
        mem_free(m);
    return 0;
}

/* ---- claims: the key's string heap holds the holder's name or "d" (done) ---- */

static int mem_claim(kx_store *s, const kx_claim_op *op, kx_claim_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_claim(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m);
    kx_metric_inc(KX_M_STORE_OPS);
    size_t hlen = strlen(op->holder);
    mem_win *w = mem_lookup(m, op->key, now);
    bool done = w && w->str_len == 1 && w->str[0] == 'd';
    bool other = w && !done && (w->str_len != hlen || memcmp(w->str, op->holder, hlen));
    kx_claim_state st;
    int64_t ttl = 0;
    const char *set = NULL;
    if (done) {
        st = KX_CLAIM_DONE_STATE;
        ttl = w->expire_at - now;
    } else if (op->mode == KX_CLAIM_DONE) {
        st = KX_CLAIM_DONE_STATE;
        set = "d";
        ttl = op->keep_ms;
    } else if (other) {
        st = KX_CLAIM_HELD;
        ttl = w->expire_at - now;
    } else if (op->mode == KX_CLAIM_RELEASE) {
        st = KX_CLAIM_MINE;
        if (w) {
            size_t klen = strlen(op->key);
            tab_del_at(m, tab_find(m, op->key, klen, kx_hash64(op->key, klen, 0)));
        }
    } else {
        st = KX_CLAIM_MINE;
        set = op->holder;
        ttl = op->lease_ms;
    }
    if (set) {
        if (!w && (rc = mem_window(m, op->key, now, ttl, &w))) {
            if (rc == -ENOSPC)
                kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
            return rc;
        }
        uint32_t off;
        w->str_len = 0;
        if ((rc = str_append(w, set, (uint32_t)strlen(set), &off))) {
            /* Leave no key that would read as another holder's claim. */
            size_t klen = strlen(op->key);
            tab_del_at(m, tab_find(m, op->key, klen, kx_hash64(op->key, klen, 0)));
            return rc;
        }
        w->expire_at = now + ttl;
    }
    m->depth++;
    cb(ud, 0, st, ttl < 0 ? 0 : ttl);
    m->depth--;
    if (m->depth == 0 && m->destroy_pending)
        mem_free(m);
    return 0;
}

static int mem_window_add(kx_store *s, const kx_window_add *op, kx_store_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = loop_now_ms(m);
    mem_win *w;
    int64_t key_ttl = op->ttl_ms;
    if (op->agg == KX_AGG_BASELINE) /* the history outlives the members */
        key_ttl = (3 * op->history + 2) * op->window_ms + (op->ttl_ms - op->window_ms);
    rc = mem_window(m, op->key, now, key_ttl, &w);
    if (rc == -ENOSPC) {
        kx_metric_inc(KX_M_STORE_OPS);
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&m->rl_keys, KX_LOG_WARN, "state",
                       "memory store full (%zu keys): update to new key \"%s\" refused", m->nkeys,
                       op->key);
        run_cb(m, cb, ud, -ENOSPC, NULL);
        return 0;
    }
    if (rc)
        return rc;

    size_t max_ev =
        op->max_evidence < KX__STORE_MAX_EVIDENCE ? op->max_evidence : KX__STORE_MAX_EVIDENCE;
    kx_window_result res = {0};
    if (op->agg == KX_AGG_FIRST_SEEN) {
        kx_metric_inc(KX_M_STORE_OPS);
        if ((rc = mem_first_seen(m, w, op, &res)))
            return rc;
        w->expire_at = now + op->ttl_ms;
        run_cb(m, cb, ud, 0, &res);
        return 0;
    }
    if (op->agg == KX_AGG_BASELINE) {
        bool bl_added = false;
        kx_metric_inc(KX_M_STORE_OPS);
        if ((rc = mem_baseline(m, w, op, now, &res, &bl_added)))
            return rc;
        if (!res.late && bl_added && op->evidence && max_ev > 0 &&
            (rc = win_push_evidence(w, op->evidence, op->evidence_len, (uint32_t)max_ev)))
            return rc;
        if (!res.late) {
            res.nevidence = w->ev_n < max_ev ? w->ev_n : max_ev;
            if (op->evidence_if_crossed && !res.crossed)
                res.nevidence = 0;
            for (size_t i = 0; i < res.nevidence; i++) {
                m->res_ev[i] = w->ev[i].p;
                m->res_ev_len[i] = w->ev[i].len;
            }
            res.evidence = m->res_ev;
            res.evidence_len = m->res_ev_len;
        }
        run_cb(m, cb, ud, 0, &res);
        return 0;
    }
    size_t mlen = strlen(op->member);
    uint64_t h = kx_hash64(op->member, mlen, 0);
    /* Older than the key keeps (newest - ttl): the script refuses it before ZADD. */
    if (w->n > 0 && op->time_ms < win_at(w, w->n - 1)->t - op->ttl_ms) {
        kx_metric_inc(KX_M_STORE_OPS);
        res.late = true;
        run_cb(m, cb, ud, 0, &res);
        return 0;
    }
    bool added = win_find(w, h, op->member, mlen) == NULL;
    if (added) {
        rc = win_insert(w, h, op->time_ms, op->member, (uint32_t)mlen);
        if (rc)
            return rc;
    }
    kx_metric_inc(KX_M_STORE_OPS);
    /* Same order as the Lua script: prune by the newest time seen, cap, then count. */
    int64_t max_t = win_at(w, w->n - 1)->t;
    uint32_t old = win_time_bound(w, max_t - op->ttl_ms, false);
    if (old > 0)
        note_pruned(w, win_at(w, old - 1)->t);
    win_drop_front(w, old);
    uint32_t cap = s->member_cap;
    if (w->n > cap) {
        uint32_t dropped = w->n - cap;
        note_pruned(w, win_at(w, dropped - 1)->t);
        win_drop_front(w, dropped);
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&m->rl_members, KX_LOG_WARN, "state",
                       "key \"%s\" over %u members: dropped the %u oldest", op->key, cap, dropped);
    }
    if (added && op->evidence && max_ev > 0) {
        rc = win_push_evidence(w, op->evidence, op->evidence_len, (uint32_t)max_ev);
        if (rc)
            return rc;
    }
    w->expire_at = now + op->ttl_ms;

    uint32_t lo = win_time_bound(w, op->time_ms - op->window_ms, false);
    uint32_t hi = win_time_bound(w, op->time_ms, true);
    if (hi > lo) {
        res.count = hi - lo;
        res.first_ms = win_at(w, lo)->t;
        res.last_ms = win_at(w, hi - 1)->t;
    }
    res.added = added;
    res.prev_alerted = w->alerted; /* the mark before this add (the scan below may move it) */
    res.prev_alert_first_ms = w->alerted ? w->alert_first : 0;
    kx_cmp_term cond[KX_CMP_MAX_TERMS];
    size_t ncond = kx__store_cond(op, cond);
    const mem_entry *self = ncond > 0 ? win_find(w, h, op->member, mlen) : NULL;
    if (self) { /* absent: dropped by the member cap just now */
        /* The same scan as the Lua script: the earliest window ending at a member time in
         * [t, t + window] (at most KX_STORE_CROSS_SCAN members) that this member makes satisfy
         * the condition; SHARE judges the add's own window only. */
        uint32_t self_i = (uint32_t)(self - win_at(w, 0));
        size_t own_len;
        const char *own = entry_value(w, self, &own_len);
        uint32_t i = win_time_bound(w, op->time_ms, false);
        uint32_t end = win_time_bound(w, op->time_ms + op->window_ms, true);
        if (op->agg == KX_AGG_SHARE)
            end = i + 1;
        bool have_prev = false, passed = false;
        int64_t prev = 0;
        for (uint32_t seen = 0; i < end && seen < KX_STORE_CROSS_SCAN; i++, seen++) {
            int64_t s_t = win_at(w, i)->t;
            if (have_prev && s_t == prev)
                continue;
            have_prev = true;
            prev = s_t;
            if (op->agg == KX_AGG_SHARE)
                s_t = op->time_ms;
            if (!added && w->pruned && s_t - op->window_ms <= w->horizon)
                continue; /* a re-delivery into a window that lost members to pruning */
            uint32_t clo = win_time_bound(w, s_t - op->window_ms, false);
            uint32_t chi = win_time_bound(w, s_t, true);
            double with, without;
            if (!mem_agg(m, w, op->agg, clo, chi, UINT32_MAX, own, own_len, &with) ||
                !kx_cmp_holds(cond, ncond, with))
                continue;
            if (!passed) {
                res.met = true;
                res.met_ms = s_t;
            }
            passed = true; /* met: a crossing now, or one the suppression swallows */
            int64_t f = win_at(w, clo)->t;
            /* Due: starts after the last reported window's end + suppress. A condition that
             * stays met (a dense, ongoing attack) then alerts again once per suppress period,
             * although no single add makes it hold. */
            bool due = w->alerted && f > w->alert_last + op->suppress_ms;
            if (!due && op->agg != KX_AGG_SHARE &&
                mem_agg(m, w, op->agg, clo, chi, self_i, own, own_len, &without) &&
                kx_cmp_holds(cond, ncond, without))
                continue; /* held already without this member: not its crossing */
            bool same = w->alerted && f == w->alert_first && s_t == w->alert_last;
            bool overlaps =
                w->alerted && f <= w->alert_last + op->suppress_ms && s_t >= w->alert_first;
            if (!same && overlaps)
                continue; /* part of the burst already reported, or suppressed */
            res.crossed = true;
            res.suppressed = w->nsup;
            w->nsup = 0;
            res.cross_first_ms = f;
            res.cross_last_ms = s_t;
            res.cross_count = (int64_t)(chi - clo);
            res.cross_value = with;
            w->alerted = true;
            w->alert_first = f;
            w->alert_last = s_t;
            break;
        }
        /* Counted from the group's first alert on: before it nothing was suppressed. */
        if (!res.crossed && passed && added && w->alerted)
            w->nsup++;
    }
    res.nevidence = w->ev_n < max_ev ? w->ev_n : max_ev;
    if (op->evidence_if_crossed && !res.crossed)
        res.nevidence = 0;
    for (size_t i = 0; i < res.nevidence; i++) {
        m->res_ev[i] = w->ev[i].p;
        m->res_ev_len[i] = w->ev[i].len;
    }
    res.evidence = m->res_ev;
    res.evidence_len = m->res_ev_len;
    run_cb(m, cb, ud, 0, &res);
    return 0;
}

/* One add of a window_add_many: keep its result and a copy of its evidence. */
static void many_one_cb(void *ud, int status, const kx_window_result *res)
{
    kx_store_memory *m = ud;
    if (status) {
        m->many_status = status;
        return;
    }
    kx_window_result *r = &m->many_res[m->many_i];
    *r = *res;
    r->count = r->first_ms = r->last_ms = 0; /* as the Redis backend: not computed */
    if (m->many_ev_n + res->nevidence > m->many_ev_cap) {
        size_t cap = m->many_ev_cap ? m->many_ev_cap * 2 : 16;
        while (cap < m->many_ev_n + res->nevidence)
            cap *= 2;
        size_t *o = realloc(m->many_ev_off, cap * sizeof(*o));
        size_t *l = o ? realloc(m->many_ev_len, cap * sizeof(*l)) : NULL;
        if (o)
            m->many_ev_off = o;
        if (!l) {
            m->many_status = -ENOMEM;
            return;
        }
        m->many_ev_len = l;
        m->many_ev_cap = cap;
    }
    /* evidence = index of its first blob until the pointers are fixed up */
    r->evidence = (const char *const *)(uintptr_t)m->many_ev_n;
    for (size_t i = 0; i < res->nevidence; i++) {
        m->many_ev_off[m->many_ev_n] = m->many_ev.len;
        m->many_ev_len[m->many_ev_n++] = res->evidence_len[i];
        if (kx_buf_append(&m->many_ev, res->evidence[i], res->evidence_len[i]))
            m->many_status = -ENOMEM;
    }
}

/* The adds one by one, then one callback with all the results (as the Redis backend's one
 * script call). */
static int mem_window_add_many(kx_store *s, const kx_window_add *ops, size_t n, kx_store_many_cb cb,
                               void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_many(ops, n);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    if (n > m->many_cap) {
        kx_window_result *p = realloc(m->many_res, n * sizeof(*p));
        if (!p)
            return -ENOMEM;
        m->many_res = p;
        m->many_cap = n;
    }
    m->many_status = 0;
    m->many_ev_n = 0;
    kx_buf_reset(&m->many_ev);
    m->depth++; /* a destroy from the caller's callback waits for the end of this call */
    for (m->many_i = 0; m->many_i < n && !m->many_status; m->many_i++) {
        rc = mem_window_add(s, &ops[m->many_i], many_one_cb, m);
        if (rc) {
            m->depth--;
            return rc;
        }
    }
    m->depth--;
    if (m->many_status == 0) {
        const char **ptr =
            realloc(m->many_ev_ptr, (m->many_ev_n ? m->many_ev_n : 1) * sizeof(*ptr));
        if (!ptr) {
            m->many_status = -ENOMEM;
        } else {
            m->many_ev_ptr = ptr;
            for (size_t i = 0; i < m->many_ev_n; i++)
                ptr[i] = m->many_ev.data + m->many_ev_off[i];
            for (size_t i = 0; i < n; i++) {
                size_t first = (size_t)(uintptr_t)m->many_res[i].evidence;
                m->many_res[i].evidence = ptr + first;
                m->many_res[i].evidence_len = m->many_ev_len + first;
            }
        }
    }
    m->depth++;
    if (m->many_status)
        cb(ud, m->many_status, NULL, 0);
    else
        cb(ud, 0, m->many_res, n);
    m->depth--;
    if (m->depth == 0 && m->destroy_pending)
        mem_free(m);
    return 0;
}

/* Marked expired rather than freed: the window may be in use further up the stack (a
 * callback of this store); the next lookup or the key cap's sweep removes it. */
static int mem_forget(kx_store *s, const char *key)
{
    kx_store_memory *m = (kx_store_memory *)s;
    if (m->destroy_pending)
        return -ECANCELED;
    size_t klen = strlen(key);
    mem_win *w = m->tab[tab_find(m, key, klen, kx_hash64(key, klen, 0))];
    if (w)
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
    mem_free(m);
}

static const kx__store_vtbl mem_vtbl = {
    .kind = "memory",
    .window_add = mem_window_add,
    .window_add_many = mem_window_add_many,
    .absence_touch = mem_absence_touch,
    .absence_due = mem_absence_due,
    .close_touch = mem_close_touch,
    .close_due = mem_close_due,
    .watermark = mem_watermark,
    .claim = mem_claim,
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
