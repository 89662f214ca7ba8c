/*
 * The router's memory of recently sent dedup_keys. Bounded: at most `cap` keys, sized once
 * at init; when full the oldest inserted key is evicted and counted (an alert evicted early
 * may be sent twice, which downstream dedup_key handling absorbs; memory never grows).
 *
 * The table is open addressing with linear probing and backward-shift deletion (no
 * tombstones, so lookups stay short however many keys were evicted). The ring remembers the
 * insertion order so eviction needs no scan.
 */
#include <errno.h>
#include <stdlib.h>

#include "alert_int.h"

int kx__dedup_init(kx__dedup *d, size_t cap)
{
    size_t size = 16;
    if (cap == 0)
        cap = 1;
    while (size < cap * 2)
        size *= 2;
    d->table = calloc(size, sizeof(*d->table));
    d->ring = calloc(cap, sizeof(*d->ring));
    if (!d->table || !d->ring) {
        free(d->table);
        free(d->ring);
        d->table = NULL;
        d->ring = NULL;
        return -ENOMEM;
    }
    d->mask = size - 1;
    d->cap = cap;
    d->head = d->count = 0;
    d->evictions = 0;
    return 0;
}

void kx__dedup_fini(kx__dedup *d)
{
    free(d->table);
    free(d->ring);
    d->table = NULL;
    d->ring = NULL;
}

static size_t find(const kx__dedup *d, uint64_t h1, uint64_t h2)
{
    size_t i = (size_t)h1 & d->mask;
    while (d->table[i].used && (d->table[i].h1 != h1 || d->table[i].h2 != h2))
        i = (i + 1) & d->mask;
    return i;
}

static void remove_at(kx__dedup *d, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & d->mask;
        if (!d->table[j].used)
            break;
        size_t k = (size_t)d->table[j].h1 & d->mask;
        /* Move j into the hole at i unless its home k lies cyclically in (i, j]. */
        bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            d->table[i] = d->table[j];
            i = j;
        }
    }
    d->table[i].used = 0;
}

bool kx__dedup_check(kx__dedup *d, uint64_t h1, uint64_t h2, int64_t now_ms, int64_t window_ms)
{
    size_t i = find(d, h1, h2);
    if (d->table[i].used) {
        if (now_ms - d->table[i].seen_ms < window_ms)
            return true;
        d->table[i].seen_ms = now_ms;
        return false;
    }
    if (d->count == d->cap) {
        uint64_t *old = d->ring[d->head];
        size_t j = find(d, old[0], old[1]);
        if (d->table[j].used)
            remove_at(d, j);
        d->head = (d->head + 1) % d->cap;
        d->count--;
        d->evictions++;
        i = find(d, h1, h2); /* the removal may have shifted our probe chain */
    }
    d->table[i] = (kx__dedup_slot){.h1 = h1, .h2 = h2, .seen_ms = now_ms, .used = 1};
    size_t tail = (d->head + d->count) % d->cap;
    d->ring[tail][0] = h1;
    d->ring[tail][1] = h2;
    d->count++;
    return false;
}
