/*
 * The values of a live list (a list backed by a Redis set, docs/rules.md "Lists backed by
 * Redis"): an immutable hash set built in one go from the values read and swapped whole into
 * the list, so matching reads a complete set, old or new, never a half-built one.
 *
 * Two open-addressing tables over one pool of values: one keyed by the value with ASCII
 * letters folded (Sigma's default, case-insensitive equality), one by its exact bytes
 * (`|cased`). A lookup hashes the field's value once per table and compares bytes: O(1)
 * whatever the set's size, no allocation.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "detect_int.h"

struct kx__liveset {
    char *pool;    /* the values, each NUL-ended */
    uint32_t *off; /* n: where each value starts in pool */
    uint32_t *len; /* n: its length */
    uint32_t *ci;  /* cap slots: 1 + the index of a value, keyed caseless; 0 empty */
    uint32_t *cs;  /* the same, keyed by the exact bytes */
    size_t n, cap;
    size_t pool_len;
    size_t tail_off, tail_n; /* where the values after the first nhead start, how many */
};

static inline unsigned char fold(unsigned char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch;
}

/* FNV-1a, 64 bits, over the bytes (folded when caseless). */
static uint64_t hash(const char *s, size_t n, bool caseless)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= caseless ? fold((unsigned char)s[i]) : (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static bool same(const char *a, const char *b, size_t n, bool caseless)
{
    if (!caseless)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (fold((unsigned char)a[i]) != fold((unsigned char)b[i]))
            return false;
    return true;
}

/* The slot holding s in tab, or the empty slot where it would go. */
static size_t probe(const kx__liveset *ls, const uint32_t *tab, const char *s, size_t n,
                    bool caseless)
{
    size_t mask = ls->cap - 1, i = (size_t)hash(s, n, caseless) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t e = tab[i];
        if (!e)
            return i;
        if (ls->len[e - 1] == n && same(ls->pool + ls->off[e - 1], s, n, caseless))
            return i;
    }
}

int kx__liveset_build(const char *vals, size_t len, size_t n, size_t nhead, kx__liveset **out)
{
    if (n > UINT32_MAX / 4 || len > UINT32_MAX)
        return -E2BIG;
    kx__liveset *ls = calloc(1, sizeof(*ls));
    if (!ls)
        return -ENOMEM;
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    ls->cap = cap;
    ls->pool = malloc(len ? len : 1);
    ls->off = malloc((n ? n : 1) * sizeof(*ls->off));
    ls->len = malloc((n ? n : 1) * sizeof(*ls->len));
    ls->ci = calloc(cap, sizeof(*ls->ci));
    ls->cs = calloc(cap, sizeof(*ls->cs));
    if (!ls->pool || !ls->off || !ls->len || !ls->ci || !ls->cs) {
        kx__liveset_free(ls);
        return -ENOMEM;
    }
    if (len)
        memcpy(ls->pool, vals, len);
    ls->pool_len = len;
    ls->tail_off = len;
    for (size_t p = 0, i = 0; i < n && p < len; i++) {
        if (i == nhead) {
            ls->tail_off = p;
            ls->tail_n = n - nhead;
        }
        size_t l = strnlen(ls->pool + p, len - p);
        ls->off[ls->n] = (uint32_t)p;
        ls->len[ls->n] = (uint32_t)l;
        p += l + 1;
        size_t s = probe(ls, ls->cs, ls->pool + ls->off[ls->n], l, false);
        if (ls->cs[s])
            continue; /* given twice: one is enough */
        ls->cs[s] = (uint32_t)++ls->n;
        s = probe(ls, ls->ci, ls->pool + ls->off[ls->n - 1], l, true);
        if (!ls->ci[s])
            ls->ci[s] = (uint32_t)ls->n;
    }
    *out = ls;
    return 0;
}

void kx__liveset_free(kx__liveset *ls)
{
    if (!ls)
        return;
    free(ls->pool);
    free(ls->off);
    free(ls->len);
    free(ls->ci);
    free(ls->cs);
    free(ls);
}

bool kx__liveset_has(const kx__liveset *ls, const char *s, size_t n, bool cased)
{
    if (!ls || !ls->n)
        return false;
    const uint32_t *tab = cased ? ls->cs : ls->ci;
    return tab[probe(ls, tab, s, n, !cased)] != 0;
}

size_t kx__liveset_size(const kx__liveset *ls)
{
    return ls ? ls->n : 0;
}

void kx__liveset_tail(const kx__liveset *ls, const char **vals, size_t *len, size_t *n)
{
    *vals = ls->pool + ls->tail_off;
    *len = ls->pool_len - ls->tail_off;
    *n = ls->tail_n;
}
