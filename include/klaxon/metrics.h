/*
 * Process-wide counters. One registry per process (klaxon is one loop, one thread), so the
 * counters are plain globals behind an enum; per-rule counters live with the rules.
 * Rendering to Prometheus text is kx_metrics_render (the HTTP endpoint lives in src/app).
 */
#ifndef KLAXON_METRICS_H
#define KLAXON_METRICS_H

#include <stdint.h>

#include "klaxon/common.h"

typedef enum {
    KX_M_EVENTS_CONSUMED,            /* messages/lines taken from a source */
    KX_M_EVENTS_DECODED,             /* decoded into an event */
    KX_M_EVENTS_MALFORMED,           /* rejected by decode (counted, logged, skipped) */
    KX_M_EVENTS_MATCHED,             /* events that matched at least one rule */
    KX_M_RULE_MATCHES,               /* detection rule matches, all rules */
    KX_M_ALERTS_RAISED,              /* alerts produced by detect/state */
    KX_M_ALERTS_DEDUPED,             /* alerts not sent again: same dedup_key seen recently */
    KX_M_ALERTS_DELIVERED,           /* alert deliveries acknowledged by a sink */
    KX_M_ALERTS_FAILED,              /* deliveries that failed after all retries */
    KX_M_ALERT_RETRIES,              /* delivery retries */
    KX_M_STORE_OPS,                  /* state operations issued */
    KX_M_STORE_ERRORS,               /* state operations that failed (will be retried) */
    KX_M_STORE_RECONNECTS,           /* reconnect attempts to the state store */
    KX_M_STORE_REDIRECTS,            /* Redis Cluster MOVED, ASK and TRYAGAIN replies followed */
    KX_M_STATE_LOG_CONFLICTS,        /* window log appends another process got in before */
    KX_M_STATE_LOG_DROPPED,          /* window log replicas dropped (least recently used) */
    KX_M_STATE_LOG_EVIDENCE_MISSING, /* window log evidence blobs that could not be read */
    KX_M_SOURCE_PAUSES,              /* times consumption was paused (store down, back-pressure) */
    KX_M_OFFSETS_COMMITTED,          /* offsets stored for commit */
    KX_M_STATE_KEYS_CAPPED,          /* state updates refused by a cap */
    KX_M_EVENTS_TIME_CLAMPED,        /* event time far in the future replaced by arrival time */
    KX_M_EVENTS_SANITIZED,           /* JSON with invalid UTF-8 or \u0000 decoded with U+FFFD */
    KX_M_EVENTS_LATE,         /* correlation updates later than the allowed lateness: not counted */
    KX_M_CORR_SKIPPED,        /* correlation updates without the value their rule needs */
    KX_M_GROUPS_CAPPED,       /* new groups refused by a rule's max_groups cap */
    KX_M_GROUPS_EVICTED,      /* groups dropped to make room for new ones (max_groups) */
    KX_M_RULES_EVALUATED,     /* detection rules evaluated exactly (the prefilter's candidates) */
    KX_M_ROUTE_OVERFLOWS,     /* events past the route table, matched by the interpreter */
    KX_M_DETECT_FALLBACKS,    /* events matched by the plain interpreter: out of memory */
    KX_M_LIMIT_DEPTH,         /* decoded events with KX_EV_LIMIT_DEPTH set (event.h) */
    KX_M_LIMIT_KEY,           /* ... with KX_EV_LIMIT_KEY */
    KX_M_LIMIT_FIELDS,        /* ... with KX_EV_LIMIT_FIELDS */
    KX_M_LIMIT_NUMBER,        /* ... with KX_EV_LIMIT_NUMBER */
    KX_M_REGEX_GIVEN_UP,      /* PCRE2 regex runs given up: a limit, or the event's budget */
    KX_M_REGEX_FAILED_CLOSED, /* rule evaluations a given-up regex turned into a match */
    KX_M_REGEX_FAILED_OPEN,   /* rule evaluations with a given-up regex reported as no match */
    KX_M_LIST_FAILED_CLOSED,  /* rule evaluations a live list not read yet turned into a match */
    KX_M_SPOOL_CORRUPT_BYTES, /* spool bytes skipped when read back: torn or corrupt */
    KX_M_SPOOL_FULL,          /* times an alert waited because the spool was full */
    KX_M_SPOOL_ERRORS,        /* spool writes or syncs that failed (retried) */
    KX_M_ALERTS_MUTED,        /* alerts a route's flood valve muted (a notice says so) */
    KX_M_ALERTS_BACKFILL_HELD, /* backfill alerts a paging sink did not get */
    KX_M__COUNT
} kx_metric;

void kx_metric_inc(kx_metric m);
void kx_metric_add(kx_metric m, uint64_t n);
uint64_t kx_metric_get(kx_metric m);
const char *kx_metric_name(kx_metric m); /* Prometheus name, e.g. "klaxon_events_consumed_total" */
const char *kx_metric_help(kx_metric m);
void kx_metrics_reset(void); /* tests */

/* Gauge: 1 when the state store is connected (redis), else 0. */
void kx_metric_set_store_up(int up);
/* Spool gauges (klaxon_spool_bytes, klaxon_spool_pending_alerts): set by the router. */
void kx_metric_set_spool(uint64_t bytes, uint64_t pending);

/* Appends all process counters in Prometheus text exposition format. */
int kx_metrics_render(kx_buf *out);
/* Appends value as a label value of that format (without the quotes): backslash, double
 * quote and newline escaped, so no rule id can break the page. */
int kx_metrics_put_label(kx_buf *out, const char *value);

#endif
