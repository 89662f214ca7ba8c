/*
 * Interned field names and the per-event field index.
 *
 * At load every field name a rule reads (a field condition's field, a fieldref's other
 * field) gets a dense id. Matching an event first indexes its fields once: each field's
 * name is hashed and looked up here, and fields of the same id are chained in document
 * order (first[id], next[i]). From then on a rule reads a field by id in O(1) however many
 * values, rules and fields there are, where the interpreter scanned the event's field list
 * by name (with strlen) once per value.
 *
 * Generations instead of clearing: first[id] is valid only when fgen[id] equals the event's
 * generation, so indexing costs one hash per event field and nothing per interned id.
 *
 * Ownership: the table and its scratch belong to the compiled set (match.c), built at load
 * and freed with it. Matching allocates nothing unless an event has more fields than any
 * before it (the next[] array then grows once).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "detect_int.h"
#include "detect_set.h"

static uint32_t name_hash(const char *s, size_t n)
{
    return (uint32_t)(kx__hash_bytes(s, n, 0) >> 32);
}

void kx__fieldix_fini(kx__fieldix *fx)
{
    free(fx->names);
    free(fx->lens);
    free(fx->slots);
    free(fx->fgen);
    free(fx->first);
    free(fx->next);
    memset(fx, 0, sizeof(*fx));
}

static int grow_slots(kx__fieldix *fx)
{
    uint32_t cap = fx->mask ? (fx->mask + 1) * 2 : 64;
    uint32_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (uint32_t id = 0; id < fx->n; id++) {
        uint32_t h = name_hash(fx->names[id], fx->lens[id]) & (cap - 1);
        while (slots[h])
            h = (h + 1) & (cap - 1);
        slots[h] = id + 1;
    }
    free(fx->slots);
    fx->slots = slots;
    fx->mask = cap - 1;
    return 0;
}

uint32_t kx__fieldix_find(const kx__fieldix *fx, const char *name, size_t len)
{
    if (!fx->slots)
        return KX__IX_NONE;
    uint32_t h = name_hash(name, len) & fx->mask;
    for (uint32_t id; (id = fx->slots[h]) != 0; h = (h + 1) & fx->mask) {
        id--;
        if (fx->lens[id] == len && memcmp(fx->names[id], name, len) == 0)
            return id;
    }
    return KX__IX_NONE;
}

int kx__fieldix_intern(kx__fieldix *fx, const char *name, uint32_t *id)
{
    size_t len = strlen(name);
    uint32_t found = kx__fieldix_find(fx, name, len);
    if (found != KX__IX_NONE) {
        *id = found;
        return 0;
    }
    if (fx->n == fx->cap) {
        uint32_t cap = fx->cap ? fx->cap * 2 : 64;
        const char **names = realloc(fx->names, cap * sizeof(*names));
        if (!names)
            return -ENOMEM;
        fx->names = names;
        uint32_t *lens = realloc(fx->lens, cap * sizeof(*lens));
        if (!lens)
            return -ENOMEM;
        fx->lens = lens;
        fx->cap = cap;
    }
    /* Keep the table at most half full. */
    if (!fx->slots || (fx->n + 1) * 2 > fx->mask + 1) {
        int rc = grow_slots(fx);
        if (rc)
            return rc;
    }
    uint32_t nid = fx->n++;
    fx->names[nid] = name; /* owned by the ruleset's arena, which outlives the table */
    fx->lens[nid] = (uint32_t)len;
    uint32_t h = name_hash(name, len) & fx->mask;
    while (fx->slots[h])
        h = (h + 1) & fx->mask;
    fx->slots[h] = nid + 1;
    *id = nid;
    return 0;
}

int kx__fieldix_ready(kx__fieldix *fx)
{
    size_t n = fx->n ? fx->n : 1;
    fx->fgen = calloc(n, sizeof(*fx->fgen));
    fx->first = calloc(n, sizeof(*fx->first));
    return fx->fgen && fx->first ? 0 : -ENOMEM;
}

int kx__fieldix_index(kx__fieldix *fx, const kx_event *ev, uint32_t gen)
{
    if (ev->nfields > fx->next_cap) {
        size_t cap = fx->next_cap ? fx->next_cap : 64;
        while (cap < ev->nfields)
            cap *= 2;
        uint32_t *next = realloc(fx->next, cap * sizeof(*next));
        if (!next)
            return -ENOMEM;
        fx->next = next;
        fx->next_cap = cap;
    }
    /* Backwards, so each chain comes out in document order. */
    for (size_t i = ev->nfields; i-- > 0;) {
        const kx_field *f = &ev->fields[i];
        uint32_t id = kx__fieldix_find(fx, f->name, f->name_len);
        if (id == KX__IX_NONE) {
            fx->next[i] = KX__IX_NONE;
            continue;
        }
        fx->next[i] = fx->fgen[id] == gen ? fx->first[id] : KX__IX_NONE;
        fx->fgen[id] = gen;
        fx->first[id] = (uint32_t)i;
    }
    return 0;
}

void kx__fieldix_reset_gen(kx__fieldix *fx)
{
    if (fx->fgen)
        memset(fx->fgen, 0, (fx->n ? fx->n : 1) * sizeof(*fx->fgen));
}
