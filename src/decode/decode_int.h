/*
 * Private to src/decode: the pieces kx_decode (decoder.c) strings together. json.c and
 * syslog.c turn bytes into fields, extract.c runs the PCRE2 extractors over them, and
 * rfc3339.c parses timestamps for all of them. Limits live here so the tests and the
 * internals doc (docs/internals/decode.md) can name them.
 */
#ifndef KLAXON_DECODE_INT_H
#define KLAXON_DECODE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "klaxon/decode.h"
#include "klaxon/log.h"
#include "klaxon/tz.h"

/* JSON limits. None makes the event malformed (a hostile value must not hide the event): each
 * cuts only what it concerns and sets a KX_EV_LIMIT_* bit (event.h) on the event. */
/* Objects and arrays nested deeper than this (the top-level object is level 1): a container
 * at level KX_DECODE_MAX_DEPTH + 1 is one field holding its raw JSON text. */
#define KX_DECODE_MAX_DEPTH 64
/* Fields from one JSON document: later ones are dropped. */
#define KX_DECODE_MAX_FIELDS 4096
/* Flattened field names ("a.b.c") are shorter than this, in bytes: a member whose name would
 * not be is dropped with its subtree. */
#define KX_DECODE_NAME_MAX 1024
/* PCRE2 match limit per extractor and event: bounds the work a hostile line can cause. */
#define KX_DECODE_MATCH_LIMIT 100000
#define KX_DECODE_DEPTH_LIMIT 1000
/* RFC 3164 year inference: a date further than this past the reference is last year's. */
/* How far after its reference time an RFC 3164 line may be dated and stay in the
 * reference's year (syslog.skew): clocks disagree a little, never by a year. */
#define KX_DECODE_SKEW_DEFAULT_MS (15LL * 60 * 1000)

/* A timestamp as written, before any zone is applied. */
typedef struct kx__iso {
    int year, month, day, hour, minute, second;
    int ms; /* fraction, truncated to milliseconds */
    bool has_zone;
    int32_t offset_s; /* seconds east of UTC when has_zone */
} kx__iso;

/* Parses "YYYY-MM-DD[T ]hh:mm:ss[.frac][Z|+HH:MM|+HHMM|+HH]" spanning exactly len bytes.
 * The zone is optional here; callers decide what a zoneless time means. 0 or -EINVAL. */
int kx__parse_iso(const char *s, size_t len, kx__iso *out);
/* UTC ms of a parsed time whose offset is known (offset_s applied when has_zone). */
int64_t kx__iso_to_ms(const kx__iso *t);
int kx__days_in_month(int year, int month);

/* JSON object -> fields. Returns 0 or -EINVAL with *why set. */
int kx__json_decode(const char *raw, size_t len, kx_event *ev, const char **why);

typedef struct kx__syslog_cfg {
    const kx_tz *tz; /* zone of RFC 3164 times (and zoneless ISO ones) */
    int year;        /* fixed year for RFC 3164, or 0 = infer from the reference time */
    int64_t skew_ms; /* with year 0: how far ahead of the reference a line may be; 0: default */
} kx__syslog_cfg;

/* Syslog line (RFC 5424 or RFC 3164) -> fields and event time. 0 or -EINVAL with *why. */
int kx__syslog_decode(const kx__syslog_cfg *cfg, const char *raw, size_t len, int64_t fallback_ms,
                      kx_event *ev, const char **why);
/* The RFC 3164 year rule on its own (tests pin it): UTC ms of a local month/day/time. */
int kx__syslog_bsd_time(const kx__syslog_cfg *cfg, int month, int day, int hour, int minute,
                        int second, int64_t ref_ms, int64_t *out_ms);

typedef struct kx__group {
    char *name;
    size_t name_len;
    uint32_t num;
} kx__group;

typedef struct kx__extractor {
    char *program; /* NULL = every event */
    char *field;
    pcre2_code *code;
    pcre2_match_data *md; /* made once at create: matching allocates nothing */
    kx__group *groups;
    size_t ngroups;
} kx__extractor;

/* Compiles the extractor map n ({program, field, pattern}). 0 or -EINVAL with err set. */
int kx__extractor_init(kx__extractor *x, const kx_yaml_node *n, const char *file, kx_err *err);
void kx__extractor_fini(kx__extractor *x);
/* Runs every extractor that applies to ev; matches add fields. Match errors (limits) skip
 * that extractor for this event and are logged through rl. 0 or -ENOMEM. */
int kx__extract_run(kx__extractor *xs, size_t n, pcre2_match_context *mctx, kx_ratelimit *rl,
                    kx_event *ev);

/* Copies a non-empty string scalar into *out (freeing what *out held: a repeated YAML key
 * keeps its last value). Errors at the node. */
int kx__dup_nonempty(const kx_yaml_node *n, const char *file, char **out, kx_err *err);

#endif
