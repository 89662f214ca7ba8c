/*
 * Process counters (one loop, one thread: plain integers) and their Prometheus rendering.
 * Names follow Prometheus conventions: klaxon_<thing>_total for counters.
 */
#include "klaxon/metrics.h"

#include <string.h>

static uint64_t g_counters[KX_M__COUNT];
static int g_store_up;
static uint64_t g_spool_bytes, g_spool_pending;

static const struct {
    const char *name;
    const char *help;
} g_defs[KX_M__COUNT] = {
    [KX_M_EVENTS_CONSUMED] = {"klaxon_events_consumed_total",
                              "Messages or lines read from a source."},
    [KX_M_EVENTS_DECODED] = {"klaxon_events_decoded_total", "Events decoded successfully."},
    [KX_M_EVENTS_MALFORMED] = {"klaxon_events_malformed_total",
                               "Events rejected by decode and skipped."},
    [KX_M_EVENTS_MATCHED] = {"klaxon_events_matched_total",
                             "Events that matched at least one rule."},
    [KX_M_RULE_MATCHES] = {"klaxon_detection_matches_total",
                           "Detection rule matches over all rules (per rule: "
                           "klaxon_rule_matches_total{rule})."},
    [KX_M_ALERTS_RAISED] = {"klaxon_alerts_raised_total",
                            "Alerts produced by detection and correlation."},
    [KX_M_ALERTS_DEDUPED] = {"klaxon_alerts_deduplicated_total",
                             "Alerts not sent again because their dedup_key was sent recently."},
    [KX_M_ALERTS_DELIVERED] = {"klaxon_alerts_delivered_total",
                               "Alert deliveries acknowledged by a sink."},
    [KX_M_ALERTS_FAILED] = {"klaxon_alerts_failed_total",
                            "Alert deliveries a sink gave up on after retries."},
    [KX_M_ALERT_RETRIES] = {"klaxon_alert_retries_total", "Alert delivery retries."},
    [KX_M_STORE_OPS] = {"klaxon_store_ops_total", "State store operations issued."},
    [KX_M_STORE_ERRORS] = {"klaxon_store_errors_total",
                           "State store operations that failed and are retried."},
    [KX_M_STORE_RECONNECTS] = {"klaxon_store_reconnects_total",
                               "Reconnect attempts to the state store."},
    [KX_M_STORE_REDIRECTS] = {"klaxon_store_redirects_total",
                              "Redis Cluster redirections (MOVED, ASK) and TRYAGAIN replies "
                              "followed."},
    [KX_M_STATE_LOG_CONFLICTS] = {"klaxon_state_log_conflicts_total",
                                  "Window log appends that found another process's records "
                                  "first (read, then appended again)."},
    [KX_M_STATE_LOG_DROPPED] = {"klaxon_state_log_replicas_dropped_total",
                                "Window log replicas dropped to stay within the cap (rebuilt "
                                "from Redis when used again)."},
    [KX_M_STATE_LOG_EVIDENCE_MISSING] = {"klaxon_state_log_evidence_missing_total",
                                         "Window log evidence blobs left out of an alert: "
                                         "their page expired or was not written."},
    [KX_M_SOURCE_PAUSES] = {"klaxon_source_pauses_total", "Times consumption was paused."},
    [KX_M_OFFSETS_COMMITTED] =
        {"klaxon_offsets_stored_total",
         "Kafka offsets stored for commit after their alerts were handed on."},
    [KX_M_STATE_KEYS_CAPPED] = {"klaxon_state_keys_capped_total",
                                "State updates refused because a key cap was reached."},
    [KX_M_EVENTS_TIME_CLAMPED] = {"klaxon_events_time_clamped_total",
                                  "Events dated over 15 minutes after arrival; arrival time used."},
    [KX_M_EVENTS_SANITIZED] =
        {"klaxon_events_sanitized_total",
         "JSON events with invalid UTF-8 or NUL escapes, decoded with U+FFFD."},
    [KX_M_EVENTS_LATE] = {"klaxon_events_late_total",
                          "Correlation updates later than the rule's allowed lateness; not "
                          "counted."},
    [KX_M_CORR_SKIPPED] = {"klaxon_correlation_skipped_total",
                           "Correlation updates skipped: the field the rule aggregates was "
                           "missing or not a number."},
    [KX_M_GROUPS_CAPPED] = {"klaxon_groups_capped_total",
                            "Updates to new groups refused because a rule reached max_groups for "
                            "a tenant and no group could make room."},
    [KX_M_GROUPS_EVICTED] = {"klaxon_groups_evicted_total",
                             "Groups far from their threshold dropped to make room for new ones "
                             "(a rule at max_groups for a tenant)."},
    [KX_M_RULES_EVALUATED] = {"klaxon_rules_evaluated_total",
                              "Detection rules evaluated exactly: those the literal prefilter "
                              "could not rule out, and those without literals"},
    [KX_M_ROUTE_OVERFLOWS] = {"klaxon_route_overflows_total",
                              "Events of a logsource past the route table (64 logsources), "
                              "matched by the plain interpreter (exact, slow)"},
    [KX_M_DETECT_FALLBACKS] = {"klaxon_detect_fallbacks_total",
                               "Events matched by the plain interpreter (exact, slow): no memory "
                               "for the compiled rule set's route or field index"},
    [KX_M_LIMIT_DEPTH] = {"klaxon_decode_limit_depth_total",
                          "Events with a subtree nested too deep, kept as one raw JSON field."},
    [KX_M_LIMIT_KEY] = {"klaxon_decode_limit_key_total",
                        "Events with a field name too long: that member was dropped."},
    [KX_M_LIMIT_FIELDS] = {"klaxon_decode_limit_fields_total",
                           "Events with more fields than the cap: the rest were dropped."},
    [KX_M_LIMIT_NUMBER] = {"klaxon_decode_limit_number_total",
                           "Events with a number beyond int64 or double range, kept as text."},
    [KX_M_REGEX_GIVEN_UP] = {"klaxon_regex_given_up_total",
                             "Regular expression runs given up at a PCRE2 limit or for the "
                             "event's regex budget."},
    [KX_M_REGEX_FAILED_CLOSED] = {"klaxon_regex_failed_closed_total",
                                  "Rule evaluations reported as a match because a regular "
                                  "expression was given up (regex_budget: fail_closed)."},
    [KX_M_REGEX_FAILED_OPEN] = {"klaxon_regex_failed_open_total",
                                "Rule evaluations reported as no match with a regular expression "
                                "given up (regex_budget: fail_open)."},
    [KX_M_LIST_FAILED_CLOSED] = {"klaxon_list_failed_closed_total",
                                 "Rule evaluations reported as a match because a live list "
                                 "(Redis-backed) they depend on was not read yet."},
    [KX_M_SPOOL_CORRUPT_BYTES] = {"klaxon_spool_corrupt_bytes_total",
                                  "Alert spool bytes skipped when read back at start: a torn "
                                  "tail or a corrupt record."},
    [KX_M_SPOOL_FULL] = {"klaxon_spool_full_total",
                         "Alerts that waited for room because the alert spool was full "
                         "(consumption pauses meanwhile)."},
    [KX_M_ALERTS_BACKFILL_HELD] = {"klaxon_alerts_backfill_held_total",
                                   "Deliveries of backfill alerts (old events, catching up) that "
                                   "paging sinks did not get; file and Kafka sinks still do."},
    [KX_M_ALERTS_MUTED] = {"klaxon_alerts_muted_total",
                           "Alerts a route's flood valve muted; a notice announced the flood "
                           "and a summary says how many when it ends."},
    [KX_M_SPOOL_ERRORS] = {"klaxon_spool_errors_total",
                           "Alert spool writes or syncs that failed; the alert waits and they "
                           "are retried."},
};

void kx_metric_inc(kx_metric m)
{
    g_counters[m]++;
}

void kx_metric_add(kx_metric m, uint64_t n)
{
    g_counters[m] += n;
}

uint64_t kx_metric_get(kx_metric m)
{
    return g_counters[m];
}

const char *kx_metric_name(kx_metric m)
{
    return g_defs[m].name;
}

const char *kx_metric_help(kx_metric m)
{
    return g_defs[m].help;
}

void kx_metrics_reset(void)
{
    memset(g_counters, 0, sizeof(g_counters));
    g_store_up = 0;
    g_spool_bytes = g_spool_pending = 0;
}

void kx_metric_set_spool(uint64_t bytes, uint64_t pending)
{
    g_spool_bytes = bytes;
    g_spool_pending = pending;
}

void kx_metric_set_store_up(int up)
{
    g_store_up = up ? 1 : 0;
}

int kx_metrics_render(kx_buf *out)
{
    int rc = 0;
    for (int m = 0; m < KX_M__COUNT && !rc; m++) {
        rc = kx_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", g_defs[m].name,
                           g_defs[m].help, g_defs[m].name, g_defs[m].name,
                           (unsigned long long)g_counters[m]);
    }
    if (!rc)
        rc = kx_buf_printf(out,
                           "# HELP klaxon_store_up 1 when the state store is connected.\n"
                           "# TYPE klaxon_store_up gauge\nklaxon_store_up %d\n",
                           g_store_up);
    if (!rc)
        rc = kx_buf_printf(out,
                           "# HELP klaxon_spool_bytes Bytes of the alert spool's live segments.\n"
                           "# TYPE klaxon_spool_bytes gauge\nklaxon_spool_bytes %llu\n"
                           "# HELP klaxon_spool_pending_alerts Alerts in the spool that some "
                           "sink has not acknowledged.\n"
                           "# TYPE klaxon_spool_pending_alerts gauge\n"
                           "klaxon_spool_pending_alerts %llu\n",
                           (unsigned long long)g_spool_bytes, (unsigned long long)g_spool_pending);
    return rc;
}

int kx_metrics_put_label(kx_buf *out, const char *value)
{
    for (;;) {
        size_t k = strcspn(value, "\\\"\n"); /* plain bytes: appended as one run */
        int rc = kx_buf_append(out, value, k);
        if (rc || !value[k])
            return rc;
        rc = kx_buf_puts(out, value[k] == '\n' ? "\\n" : value[k] == '"' ? "\\\"" : "\\\\");
        if (rc)
            return rc;
        value += k + 1;
    }
}
