/*
 * A sliding window's whole state as bytes, and back: what the Redis window log keeps as a
 * snapshot so that it can drop the records before it (src/state/redis_log.c). Everything a
 * later add's answer depends on is in it: the members with their times, the evidence list,
 * the last reported window and the crossings passed over since, the newest pruned time. The
 * member set and the string heap are rebuilt from the members.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state/memory/memory_int.h"
#include "state/wire.h"

#define SNAP_VERSION 1u

int kx__store_memory_export(kx_store *s, const char *key, kx_buf *out)
{
    kx_store_memory *m = (kx_store_memory *)s;
    mem_win *w = kx__mem_lookup(m, key, kx__mem_loop_now_ms(m));
    int rc = kx__wire_put_u32(out, SNAP_VERSION);
    uint32_t flags = w ? (w->alerted ? 1u : 0u) | (w->pruned ? 2u : 0u) : 0u;
    if (!rc)
        rc = kx__wire_put_u32(out, flags);
    if (!rc)
        rc = kx__wire_put_u64(out, w ? (uint64_t)w->horizon : 0);
    if (!rc)
        rc = kx__wire_put_u64(out, w ? (uint64_t)w->alert_first : 0);
    if (!rc)
        rc = kx__wire_put_u64(out, w ? (uint64_t)w->alert_last : 0);
    if (!rc)
        rc = kx__wire_put_u64(out, w ? (uint64_t)w->nsup : 0);
    if (!rc)
        rc = kx__wire_put_u32(out, w ? w->n : 0);
    for (uint32_t i = 0; w && i < w->n && !rc; i++) {
        const mem_entry *e = kx__mem_win_at(w, i);
        rc = kx__wire_put_u64(out, (uint64_t)e->t);
        if (!rc)
            rc = kx__wire_put_bytes(out, w->str + e->off, e->len);
    }
    if (!rc)
        rc = kx__wire_put_u32(out, w ? w->ev_n : 0);
    for (uint32_t i = 0; w && i < w->ev_n && !rc; i++)
        rc = kx__wire_put_bytes(out, w->ev[i].p, w->ev[i].len);
    return rc;
}

static int import_into(mem_win *w, kx__wire_rd *rd)
{
    if (kx__wire_u32(rd) != SNAP_VERSION)
        return -EPROTO;
    uint32_t flags = kx__wire_u32(rd);
    w->alerted = flags & 1u;
    w->pruned = (flags & 2u) != 0;
    w->horizon = kx__wire_i64(rd);
    w->alert_first = kx__wire_i64(rd);
    w->alert_last = kx__wire_i64(rd);
    w->nsup = kx__wire_i64(rd);
    int64_t lim = KX__STORE_MAX_TIME;
    if (w->horizon <= -lim || w->horizon >= lim || w->alert_first <= -lim ||
        w->alert_first >= lim || w->alert_last <= -lim || w->alert_last >= lim || w->nsup < 0)
        return -EPROTO;
    uint32_t n = kx__wire_u32(rd);
    if (n > KX__STORE_MEMBER_CAP)
        return -EPROTO;
    /* Members in the window's order, (time, bytes) strictly rising: the bytes come from Redis
     * and may not be ours. */
    int64_t prev = INT64_MIN;
    const char *prev_m = NULL;
    size_t prev_len = 0;
    for (uint32_t i = 0; i < n && !rd->bad; i++) {
        int64_t t = kx__wire_i64(rd);
        size_t len;
        const char *mb = kx__wire_bytes(rd, &len);
        if (rd->bad || t <= -KX__STORE_MAX_TIME || t >= KX__STORE_MAX_TIME || t < prev ||
            len > KX__STORE_MAX_KEY_LEN || memchr(mb, '\0', len) ||
            (t == prev && kx__mem_member_cmp(prev_m, prev_len, mb, len) >= 0))
            return -EPROTO;
        prev = t;
        prev_m = mb;
        prev_len = len;
        int rc = kx__mem_win_insert(w, kx_hash64(mb, len, 0), t, mb, (uint32_t)len);
        if (rc)
            return rc;
    }
    uint32_t nev = kx__wire_u32(rd);
    if (rd->bad || nev > KX__STORE_MAX_EVIDENCE)
        return -EPROTO;
    /* The list is most recent first; each push goes in front. */
    const char *ev[KX__STORE_MAX_EVIDENCE];
    size_t evlen[KX__STORE_MAX_EVIDENCE];
    for (uint32_t i = 0; i < nev; i++) {
        ev[i] = kx__wire_bytes(rd, &evlen[i]);
        if (evlen[i] > KX__STORE_MAX_EVIDENCE_LEN)
            return -EPROTO;
    }
    if (rd->bad || rd->p != rd->end)
        return -EPROTO;
    for (uint32_t i = nev; i-- > 0;) {
        int rc = kx__mem_win_push_evidence(w, ev[i], evlen[i], KX__STORE_MAX_EVIDENCE);
        if (rc)
            return rc;
    }
    return 0;
}

int kx__store_memory_import(kx_store *s, const char *key, int64_t ttl_ms, const char *p, size_t n)
{
    kx_store_memory *m = (kx_store_memory *)s;
    kx_store_forget(s, key);
    mem_win *w;
    int rc = kx__mem_key(m, key, kx__mem_loop_now_ms(m), ttl_ms, &w);
    if (rc)
        return rc;
    kx__wire_rd rd = kx__wire_reader(p, n);
    rc = import_into(w, &rd);
    if (rc)
        kx_store_forget(s, key);
    return rc;
}

void kx__store_memory_set_quiet(kx_store *s, bool quiet)
{
    ((kx_store_memory *)s)->quiet = quiet;
}

size_t kx__store_memory_members(kx_store *s, const char *key)
{
    kx_store_memory *m = (kx_store_memory *)s;
    mem_win *w = kx__mem_lookup(m, key, kx__mem_loop_now_ms(m));
    return w ? w->n : 0;
}
