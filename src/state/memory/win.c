/* A key's containers in the memory store (memory_int.h, store_memory.c's file comment). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* Redis orders equal scores by member bytes (memcmp, then the shorter first). */
int kx__mem_member_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* ---- the member slice, its set and its string heap, the evidence list ---- */

mem_entry *kx__mem_win_at(mem_win *w, uint32_t i)
{
    return &w->ent[w->head + i];
}

/* First index whose (t, member) >= (t, m). */
uint32_t kx__mem_win_lower(mem_win *w, int64_t t, const char *m, size_t mlen)
{
    uint32_t lo = 0, hi = w->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const mem_entry *e = kx__mem_win_at(w, mid);
        int c = e->t < t ? -1 : e->t > t;
        if (c == 0)
            c = kx__mem_member_cmp(w->str + e->off, e->len, m, mlen);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* First index with time >= t (strict = false) or > t (strict = true). */
uint32_t kx__mem_win_time_bound(mem_win *w, int64_t t, bool strict)
{
    uint32_t lo = 0, hi = w->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int64_t et = kx__mem_win_at(w, mid)->t;
        if (et < t || (strict && et == t))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void kx__mem_set_put(mem_slot *set, uint32_t cap, uint64_t h, int64_t t)
{
    uint32_t i = (uint32_t)h & (cap - 1);
    while (set[i].t != MEM_SLOT_EMPTY)
        i = (i + 1) & (cap - 1);
    set[i].h = h;
    set[i].t = t;
}

int kx__mem_set_resize(mem_win *w, uint32_t cap)
{
    mem_slot *set = malloc((size_t)cap * sizeof(*set));
    if (!set)
        return -ENOMEM;
    for (uint32_t i = 0; i < cap; i++)
        set[i].t = MEM_SLOT_EMPTY;
    for (uint32_t i = 0; i < w->n; i++)
        kx__mem_set_put(set, cap, kx__mem_win_at(w, i)->h, kx__mem_win_at(w, i)->t);
    free(w->set);
    w->set = set;
    w->set_cap = cap;
    return 0;
}

/* Backward-shift deletion keeps probe chains whole without tombstones. */
void kx__mem_set_del(mem_win *w, uint64_t h, int64_t t)
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

const mem_entry *kx__mem_win_find(mem_win *w, uint64_t h, const char *m, size_t mlen)
{
    if (!w->set_cap)
        return NULL;
    uint32_t mask = w->set_cap - 1;
    for (uint32_t i = (uint32_t)h & mask; w->set[i].t != MEM_SLOT_EMPTY; i = (i + 1) & mask) {
        if (w->set[i].h != h)
            continue;
        uint32_t pos = kx__mem_win_lower(w, w->set[i].t, m, mlen);
        if (pos < w->n) {
            const mem_entry *e = kx__mem_win_at(w, pos);
            if (e->t == w->set[i].t && kx__mem_member_cmp(w->str + e->off, e->len, m, mlen) == 0)
                return e;
        }
    }
    return NULL;
}

int kx__mem_str_append(mem_win *w, const char *m, uint32_t mlen, uint32_t *off)
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
void kx__mem_str_maybe_compact(mem_win *w)
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
        mem_entry *e = kx__mem_win_at(w, i);
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
void kx__mem_win_drop_front(mem_win *w, uint32_t k)
{
    for (uint32_t i = 0; i < k; i++) {
        const mem_entry *e = kx__mem_win_at(w, i);
        kx__mem_set_del(w, e->h, e->t);
        w->str_dead += e->len;
    }
    w->head += k;
    w->n -= k;
    if (w->n == 0)
        w->head = 0;
    kx__mem_str_maybe_compact(w);
}

/* Inserts a member known to be absent; keeps the slice sorted. */
int kx__mem_win_insert(mem_win *w, uint64_t h, int64_t t, const char *m, uint32_t mlen)
{
    if ((uint64_t)(w->n + 1) * 2 > w->set_cap) {
        int rc = kx__mem_set_resize(w, w->set_cap ? w->set_cap * 2 : 8);
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
    int rc = kx__mem_str_append(w, m, mlen, &off);
    if (rc)
        return rc;
    uint32_t pos = kx__mem_win_lower(w, t, m, mlen);
    mem_entry *at = kx__mem_win_at(w, pos);
    memmove(at + 1, at, (size_t)(w->n - pos) * sizeof(*at));
    at->t = t;
    at->h = h;
    at->off = off;
    at->len = mlen;
    size_t vlen;
    const char *v = kx__mem_entry_value(w, at, &vlen);
    at->vh = kx_hash64(v, vlen, 7);
    w->n++;
    kx__mem_set_put(w->set, w->set_cap, h, t);
    return 0;
}

/* LPUSH + LTRIM 0 max-1, reusing the buffer of the blob that falls off the end. */
int kx__mem_win_push_evidence(mem_win *w, const char *p, size_t len, uint32_t max)
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

mem_win *kx__mem_win_new(const char *key, size_t klen, uint64_t kh)
{
    mem_win *w = calloc(1, sizeof(*w) + klen + 1);
    if (!w)
        return NULL;
    w->kh = kh;
    w->klen = klen;
    memcpy(w->key, key, klen + 1);
    return w;
}

void kx__mem_win_free(mem_win *w)
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

void kx__mem_note_pruned(mem_win *w, int64_t t)
{
    if (!w->pruned || t > w->horizon) {
        w->pruned = true;
        w->horizon = t;
    }
}

/* Closing windows keep members "group|window|identity" sorted by bytes (time 0): a range of
 * them goes at once. */

/* Removes the members [lo, hi) of the slice. */
void kx__mem_win_remove_range(mem_win *w, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = lo; i < hi; i++) {
        const mem_entry *e = kx__mem_win_at(w, i);
        kx__mem_set_del(w, e->h, e->t);
        w->str_dead += e->len;
    }
    memmove(kx__mem_win_at(w, lo), kx__mem_win_at(w, hi), (size_t)(w->n - hi) * sizeof(mem_entry));
    w->n -= hi - lo;
    if (w->n == 0)
        w->head = 0;
    kx__mem_str_maybe_compact(w);
}

/* ---- the value array (mem_seen): first_seen's values, absence and closing groups ---- */

int32_t kx__mem_seen_find(const mem_win *w, uint64_t h, const char *v, size_t vlen)
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

int kx__mem_seen_reindex(mem_win *w, uint32_t cap)
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
void kx__mem_seen_compact(mem_win *w)
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
    if (kx__mem_seen_reindex(w, cap) != 0) {
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
int kx__mem_seen_set_intro(mem_seen *e, const char *id, size_t ilen)
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

int kx__mem_seen_append(mem_win *w, uint64_t h, const char *v, size_t vlen, int32_t *at)
{
    if ((uint64_t)(w->seen_n + 1) * 2 > w->seen_idx_cap) {
        int rc = kx__mem_seen_reindex(w, w->seen_idx_cap ? w->seen_idx_cap * 2 : 8);
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

/* qsort has no context argument: the entries sorted, and by which time. */
const mem_win *kx__mem_sort_win;
bool kx__mem_sort_by_deadline; /* closing windows' deadline, else (absence) last sighting */

/* Redis' order of a sorted set of groups: by score, then by group bytes. */
int kx__mem_group_cmp(const void *a, const void *b)
{
    const mem_seen *x = &kx__mem_sort_win->seen[*(const uint32_t *)a];
    const mem_seen *y = &kx__mem_sort_win->seen[*(const uint32_t *)b];
    int64_t tx = kx__mem_sort_by_deadline ? x->deadline : x->last;
    int64_t ty = kx__mem_sort_by_deadline ? y->deadline : y->last;
    if (tx != ty)
        return tx < ty ? -1 : 1;
    return kx__mem_member_cmp(x->val, x->vlen, y->val, y->vlen);
}

int kx__mem_due_groups(kx_store_memory *m, mem_win *w, bool by_deadline, kx__mem_due_fn is_due,
                       const void *arg, size_t *nd)
{
    if (m->due_cap < w->seen_n) {
        uint32_t *p = realloc(m->due, (size_t)w->seen_n * sizeof(*p));
        if (!p)
            return -ENOMEM;
        m->due = p;
        m->due_cap = w->seen_n;
    }
    size_t n = 0;
    for (uint32_t k = 0; k < w->seen_n; k++)
        if (is_due(&w->seen[k], arg))
            m->due[n++] = k;
    kx__mem_sort_win = w;
    kx__mem_sort_by_deadline = by_deadline;
    if (n > 1) /* (m->due is still NULL for a key without groups) */
        qsort(m->due, n, sizeof(*m->due), kx__mem_group_cmp);
    *nd = n;
    return 0;
}
