/*
 * kx_event: one decoded log event, the unit every stage after decode works on.
 *
 * Fields are a flat list of (name, value) string pairs; nested JSON objects are flattened
 * with dots ("userIdentity.arn"), and array elements repeat the same name once per element
 * (Sigma matches a list field if any element matches). All strings live in the event's
 * arena, which kx_event_reset empties while keeping its memory: the decoder of a long-running
 * stream reuses one kx_event and allocates nothing in steady state.
 *
 * Ownership: the caller owns the kx_event (init/fini in its own storage). raw and the
 * origin strings (topic) are borrowed from the caller for as long as the event is in use.
 */
#ifndef KLAXON_EVENT_H
#define KLAXON_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"

typedef enum {
    KX_VAL_STR = 0,
    KX_VAL_NUM,  /* JSON number; value holds its text as written */
    KX_VAL_BOOL, /* "true" / "false" */
    KX_VAL_NULL, /* JSON null; value is "" */
} kx_val_type;

/*
 * Decode limits an event hit (kx_event.limits, a bitmask). The event was still decoded and is
 * matched like any other: only the part the limit concerns is cut, so no input can hide a
 * whole event. Alerts show the names (kx_event_limit_name) in the evidence's
 * "decode_limits"; docs/internals/decode.md has the limits' values.
 */
/* a container nested too deep is one field holding its raw JSON text */
#define KX_EV_LIMIT_DEPTH (1u << 0)
/* a member whose flattened name is too long was dropped, with its subtree */
#define KX_EV_LIMIT_KEY (1u << 1)
/* fields past the per-event cap were dropped */
#define KX_EV_LIMIT_FIELDS (1u << 2)
/* a number beyond int64 (integer) or double (real): its text is kept, but a numeric
 * comparison reads it rounded or infinite */
#define KX_EV_LIMIT_NUMBER (1u << 3)
#define KX_EV_LIMIT__COUNT 4

typedef struct kx_field {
    const char *name;
    const char *value; /* NUL-terminated; may contain no NUL (decoders reject those) */
    uint32_t name_len;
    uint32_t value_len;
    kx_val_type type;
} kx_field;

typedef struct kx_event {
    /* the original bytes, borrowed */
    const char *raw;
    size_t raw_len;
    /* event time: from the log; the source's timestamp (Kafka) when the log has none */
    int64_t time_ms;
    bool time_from_log;
    /* routing and filtering context; strings borrowed (config or arena) */
    const char *tenant;  /* never NULL after decode; "default" unless configured */
    const char *product; /* logsource; NULL = unknown */
    const char *service;
    const char *category;
    /* origin, for event identity (idempotent state updates) and diagnostics */
    const char *topic; /* NULL for files/stdin */
    int32_t partition;
    int64_t offset; /* Kafka offset, or line number for files */
    /* decoded fields */
    kx_field *fields;
    size_t nfields;
    size_t fields_cap;
    uint32_t limits; /* KX_EV_LIMIT_* the decoder hit; 0 for most events */
    kx_arena arena;
} kx_event;

void kx_event_init(kx_event *ev);
void kx_event_fini(kx_event *ev);
/* Empties fields and arena (keeps memory), clears time/logsource/origin/limits. */
void kx_event_reset(kx_event *ev);

/* Adds a field, copying name and value into the arena. Returns 0 or -ENOMEM. */
int kx_event_add(kx_event *ev, const char *name, size_t name_len, const char *value,
                 size_t value_len, kx_val_type type);
/* Adds a field whose strings already live in the arena or outlive the event (no copy). */
int kx_event_add_ref(kx_event *ev, const char *name, size_t name_len, const char *value,
                     size_t value_len, kx_val_type type);

/* The name of limit bit i (KX_EV_LIMIT_DEPTH is bit 0): "depth", "key", "fields", "number";
 * NULL past KX_EV_LIMIT__COUNT. Names are part of the alert format (docs/alerts.md). */
const char *kx_event_limit_name(unsigned i);

/* First field called name (exact), or NULL. */
const kx_field *kx_event_get(const kx_event *ev, const char *name);
/* Iterates over every field called name: pass NULL as prev to start. */
const kx_field *kx_event_next(const kx_event *ev, const char *name, const kx_field *prev);

/* Deterministic identity of the event: topic/partition/offset when it came from Kafka,
 * otherwise a hash of the raw bytes and time. Written as hex into out (>= 17 bytes). */
void kx_event_id(const kx_event *ev, char *out, size_t outlen);

#endif
