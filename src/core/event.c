/*
 * kx_event storage: a flat field array and an arena, both kept across kx_event_reset so a
 * decoder that reuses one event allocates nothing in steady state.
 */
#include "klaxon/event.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kx_event_init(kx_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    kx_arena_init(&ev->arena, 8192);
    ev->partition = -1;
    ev->offset = -1;
}

void kx_event_fini(kx_event *ev)
{
    free(ev->fields);
    kx_arena_fini(&ev->arena);
    memset(ev, 0, sizeof(*ev));
}

void kx_event_reset(kx_event *ev)
{
    kx_arena_reset(&ev->arena);
    ev->nfields = 0;
    ev->limits = 0;
    ev->raw = NULL;
    ev->raw_len = 0;
    ev->time_ms = 0;
    ev->time_from_log = false;
    ev->tenant = NULL;
    ev->product = ev->service = ev->category = NULL;
    ev->topic = NULL;
    ev->partition = -1;
    ev->offset = -1;
}

int kx_event_add_ref(kx_event *ev, const char *name, size_t name_len, const char *value,
                     size_t value_len, kx_val_type type)
{
    if (name_len > UINT32_MAX || value_len > UINT32_MAX)
        return -E2BIG;
    if (ev->nfields == ev->fields_cap) {
        size_t ncap = ev->fields_cap ? ev->fields_cap * 2 : 32;
        kx_field *nf = realloc(ev->fields, ncap * sizeof(*nf));
        if (!nf)
            return -ENOMEM;
        ev->fields = nf;
        ev->fields_cap = ncap;
    }
    kx_field *f = &ev->fields[ev->nfields++];
    f->name = name;
    f->name_len = (uint32_t)name_len;
    f->value = value;
    f->value_len = (uint32_t)value_len;
    f->type = type;
    return 0;
}

int kx_event_add(kx_event *ev, const char *name, size_t name_len, const char *value,
                 size_t value_len, kx_val_type type)
{
    char *n = kx_arena_strndup(&ev->arena, name, name_len);
    char *v = kx_arena_strndup(&ev->arena, value, value_len);
    if (!n || !v)
        return -ENOMEM;
    return kx_event_add_ref(ev, n, name_len, v, value_len, type);
}

const char *kx_event_limit_name(unsigned i)
{
    static const char *const names[KX_EV_LIMIT__COUNT] = {"depth", "key", "fields", "number"};
    return i < KX_EV_LIMIT__COUNT ? names[i] : NULL;
}

const kx_field *kx_event_next(const kx_event *ev, const char *name, const kx_field *prev)
{
    size_t i = prev ? (size_t)(prev - ev->fields) + 1 : 0;
    size_t nl = strlen(name);
    for (; i < ev->nfields; i++) {
        const kx_field *f = &ev->fields[i];
        if (f->name_len == nl && memcmp(f->name, name, nl) == 0)
            return f;
    }
    return NULL;
}

const kx_field *kx_event_get(const kx_event *ev, const char *name)
{
    return kx_event_next(ev, name, NULL);
}

void kx_event_id(const kx_event *ev, char *out, size_t outlen)
{
    uint64_t h;
    if (ev->topic && ev->offset >= 0) {
        /* "topic/partition/offset" (a Kafka topic name is at most 249 bytes). */
        char tmp[320];
        size_t n = strnlen(ev->topic, 256);
        memcpy(tmp, ev->topic, n);
        tmp[n++] = '/';
        n += kx_fmt_i64(tmp + n, ev->partition);
        tmp[n++] = '/';
        n += kx_fmt_i64(tmp + n, ev->offset);
        h = kx_hash64(tmp, n, 0);
    } else {
        /* Files and stdin: content, time and line number are the identity, so replaying the
         * same log twice finds the same ids while two identical lines stay distinct. */
        uint64_t seed = (uint64_t)ev->time_ms * 1000003ULL + (uint64_t)(ev->offset + 1);
        h = kx_hash64(ev->raw, ev->raw_len, seed);
    }
    char hex[16];
    kx_hex64(hex, h);
    if (!outlen)
        return;
    size_t n = outlen - 1 < sizeof(hex) ? outlen - 1 : sizeof(hex);
    memcpy(out, hex, n);
    out[n] = '\0';
}
