/*
 * Fixed-width binary fields (little-endian) for what klaxon writes into Redis as bytes and
 * reads back: the window log's records and snapshots (redis_log.c, memory/snapshot.c).
 * A reader never reads past its end: a short or damaged blob sets `bad` and yields zeros.
 */
#ifndef KLAXON_STATE_WIRE_H
#define KLAXON_STATE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "klaxon/common.h"

static inline int kx__wire_put_u64(kx_buf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    return kx_buf_append(b, (const char *)x, 8);
}

static inline int kx__wire_put_u32(kx_buf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    return kx_buf_append(b, (const char *)x, 4);
}

/* A length (u32), then the bytes. */
static inline int kx__wire_put_bytes(kx_buf *b, const char *p, size_t n)
{
    int rc = kx__wire_put_u32(b, (uint32_t)n);
    return rc ? rc : kx_buf_append(b, p, n);
}

typedef struct kx__wire_rd {
    const unsigned char *p, *end;
    bool bad;
} kx__wire_rd;

static inline kx__wire_rd kx__wire_reader(const char *p, size_t n)
{
    kx__wire_rd r = {(const unsigned char *)p, (const unsigned char *)p + n, false};
    return r;
}

static inline bool kx__wire_need(kx__wire_rd *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static inline uint64_t kx__wire_u64(kx__wire_rd *r)
{
    if (!kx__wire_need(r, 8))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    return v;
}

static inline uint32_t kx__wire_u32(kx__wire_rd *r)
{
    if (!kx__wire_need(r, 4))
        return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)r->p[i] << (8 * i);
    r->p += 4;
    return v;
}

static inline int64_t kx__wire_i64(kx__wire_rd *r)
{
    return (int64_t)kx__wire_u64(r);
}

/* Bytes written by kx__wire_put_bytes: *n and a pointer into the blob (not NUL-ended). */
static inline const char *kx__wire_bytes(kx__wire_rd *r, size_t *n)
{
    uint32_t len = kx__wire_u32(r);
    if (!kx__wire_need(r, len)) {
        *n = 0;
        return "";
    }
    const char *p = (const char *)r->p;
    r->p += len;
    *n = len;
    return p;
}

#endif
