/*
 * alert: the alert record (JSON, contract in docs/alerts.md), routing by team to sinks,
 * duplicate suppression by dedup_key, the durable spool between detection and delivery
 * (klaxon/spool.h), per-sink queues with retries and a circuit breaker, and the sinks:
 * stdout, file (JSON Lines), webhook (HTTP POST with libcurl multi on the loop), kafka.
 *
 * Ownership: a kx_alert is the caller's and only borrowed during kx_router_send, which
 * renders it to JSON at once. The router is created from the config's `alerting:` map and
 * destroyed by its creator after kx_router_drain has reported that nothing is pending.
 */
#ifndef KLAXON_ALERT_H
#define KLAXON_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/event.h"
#include "klaxon/yaml.h"

struct ev_loop;

typedef struct kx_kv {
    const char *key;
    const char *value;
} kx_kv;

typedef struct kx_alert {
    const char *rule_id;
    const char *rule_title;
    const char *rule_level; /* Sigma level */
    const char *team;       /* NULL = default route; rendered as the route's team name */
    const char *tenant;
    const char *category; /* NULL = derived from the tags, see docs/alerts.md */
    const kx_kv *group;   /* group-by field -> value; empty for single-event rules */
    size_t ngroup;
    int64_t count;        /* events in the window */
    bool has_value;       /* value_count, temporal*, value_sum/avg/percentile: */
    double value;         /* the aggregate that met the condition ("value" in the JSON) */
    int64_t window_s;     /* 0 for single-event rules */
    const char *event_id; /* single-event rules: the event's identity (kx_event_id), part of
                           * the dedup_key; NULL for correlations */
    int64_t first_seen_ms;
    int64_t last_seen_ms;
    /* Correlations: events since the group's previous alert that kept the condition met
     * without raising one (its suppression); rendered as "suppressed" when > 0. */
    int64_t suppressed;
    /* "firing", or "resolved" (an absence's group came back; same dedup_key). NULL means
     * "firing": every alert carries a status. */
    const char *status;
    /* Single-event alerts whose rule was answered without one of its regexes (a limit or the
     * event's regex budget; docs/rules.md): the reason, e.g. "regex budget exceeded in
     * CommandLine|re". NULL for every other alert: no "degraded" in the JSON. (A correlation
     * alert marks each such event in its evidence instead: kx_evidence_render_degraded.) */
    const char *degraded;
    const char *const *tags;
    size_t ntags;
    /* The rule's words for whoever gets the alert (docs/alerts.md); NULL/0 when absent. */
    const char *description;
    const char *runbook;
    const char *author; /* Sigma `author`: who to ask about the rule */
    /* The rule's `realert` (ms; 0 = not set): its paged incidents are remembered this long by
     * every process on the store; the longest of this and the routes' `realert` applies. */
    int64_t realert_ms;
    const char *const *references;
    size_t nreferences;
    const char *const *falsepositives;
    size_t nfalsepositives;
    /* The values of the rule's `fields` in the event (single-event alerts); missing fields
     * are left out. */
    const kx_kv *fields;
    size_t nfields;
    /* Its events were older than alerting.backfill_after when it was raised (catching up
     * after downtime): "backfill":true, and paging sinks skip it unless told otherwise. */
    bool backfill;
    /* Rules with a time-of-day condition: the event's local time in its zone, RFC 3339
     * with the offset, and the zone; NULL otherwise. */
    const char *local_time;
    const char *timezone;
    /* evidence: each a JSON object rendered by kx_evidence_render */
    const char *const *events;
    const size_t *events_len;
    size_t nevents;
} kx_alert;

/* Severity for a Sigma level: critical->critical, high->error, medium->warning,
 * low/informational->info (PagerDuty Events v2 values). */
const char *kx_alert_severity(const char *level);
/* dedup_key: hex of a hash of rule id, tenant, group and window start. out >= 33 bytes. */
void kx_alert_dedup_key(const kx_alert *a, char *out, size_t outlen);
/* Renders the alert as one JSON object (no newline). id is derived from the dedup_key and
 * count, so rendering the same alert twice gives the same bytes. */
int kx_alert_render(const kx_alert *a, const char *team_name, kx_buf *out);
/* Renders an event as evidence: {"time":..., "raw":..., "fields":{...}} (repeated names
 * become arrays), then "decode_limits":[...] when ev->limits is not 0. Output capped at
 * max_bytes (raw truncated first, marked "truncated"). */
int kx_evidence_render(const kx_event *ev, size_t max_bytes, kx_buf *out);
/* The same, with "degraded":REASON after decode_limits when degraded is not NULL: the event
 * matched its rule without one of the rule's regexes (kx_ruleset_match_reason). Correlation
 * alerts carry it per event this way; a single-event alert has it at the top level. */
int kx_evidence_render_degraded(const kx_event *ev, const char *degraded, size_t max_bytes,
                                kx_buf *out);

typedef struct kx_router kx_router;
typedef struct kx_store kx_store;
typedef void (*kx_router_done_cb)(void *ud, int status);

typedef struct kx_router_opts {
    /* true: ignore alerting.spool and keep alerts in memory only (`replay`, which must not
     * touch a running process's spool). */
    bool no_spool;
    /* true: check the config only (`klaxon config check`, `klaxon route`): no spool, and
     * sinks open nothing; the router must not be sent alerts. */
    bool dry_run;
    /* with dry_run: file sinks check that their files can be written (config check) */
    bool check_files;
    /* The state store incidents are claimed in before a page goes out (alerting.claims), so
     * that one incident is paged once by every process sharing the store, and still paged
     * when the process that took it dies. NULL: no claims. It must outlive the router. */
    kx_store *store;
} kx_router_opts;

/* cfg: the `alerting:` map (see docs/internals/alert.md); NULL = one stdout sink for all.
 * file: the config's name for error messages. opts NULL: defaults. With `alerting.spool`
 * the spool is opened here and what it holds undelivered is queued again at once. */
int kx_router_create(struct ev_loop *loop, const kx_yaml_node *cfg, const char *file,
                     const kx_router_opts *opts, kx_router **out, kx_err *err);
/* Routes the alert to its team's sinks (or the default route) through the spool. done runs
 * once, with 0, when the alert is in the spool: with a spool directory after it was made
 * durable (the next group sync, once per loop iteration), without one at once. Delivery goes
 * on after that, per sink, with retries (docs/internals/alert.md); the caller's Kafka offsets
 * may be stored from done on. While the spool is full done waits (back-pressure). May run
 * before this returns. An alert whose dedup_key was sent recently is not sent again (done
 * runs with 0). Returns 0, or < 0 (-E2BIG, -ENOMEM) and then done never runs. done and the
 * drain callback must not destroy the router. */
int kx_router_send(kx_router *r, const kx_alert *a, kx_router_done_cb done, void *ud);
/* `klaxon route`: for one alert JSON, the routes that take it and the sinks it reaches at
 * now_ms, as text lines appended to out. -EINVAL: not an alert object. */
int kx_router_explain(const kx_router *r, const char *json, size_t len, int64_t now_ms,
                      kx_buf *out);
/* Per-sink Prometheus lines: delivered, dead letters, retries, queue depth, in flight,
 * circuit open, delivery latency histogram (label sink, and type on the counters). */
int kx_router_render_metrics(const kx_router *r, kx_buf *out);
/* Ready: the spool takes alerts (else consumption is paused). Healthy: ready, and no
 * sink's circuit is open. Otherwise a one-line reason is appended. */
bool kx_router_ready(const kx_router *r, kx_buf *reason);
bool kx_router_healthy(const kx_router *r, kx_buf *reason);
/* Sinks and routes configured (routes 0: every alert to every sink). */
size_t kx_router_sinks(const kx_router *r);
size_t kx_router_routes(const kx_router *r);
/* Reopens the sinks' files (SIGHUP, after log rotation). */
void kx_router_reopen(kx_router *r);
/* Alerts not yet delivered to (or given up by) all their sinks. */
size_t kx_router_pending(const kx_router *r);
/* Runs cb once the router may be destroyed without losing anything (at once if so). With a
 * spool directory: when every alert is durable and no attempt is in flight (no new attempts
 * start; what is undelivered stays spooled). Without: when every delivery has ended. */
void kx_router_drain(kx_router *r, void (*cb)(void *ud), void *ud);
/* Cancels attempts in flight. With a spool directory undelivered alerts stay in it for the
 * next start; without one they are lost (logged with their count). */
void kx_router_destroy(kx_router *r);
/* alerting.backfill_after: alerts whose last event is older than this when raised (by the
 * wall clock, `run` only) are backfill (default 1h; 0 = never). */
int64_t kx_router_backfill_after_ms(const kx_router *r);
/* Max evidence events per alert, from the config (default 5). */
size_t kx_router_max_evidence(const kx_router *r);

#endif
