/*
 * pagerduty sink: PagerDuty Events API v2 (POST /v2/enqueue). An alert becomes a `trigger`
 * event, and an alert with "status":"resolved" a `resolve` event; both carry the alert's
 * dedup_key, so PagerDuty groups every update of one incident into one alert and a resolve
 * closes it (falcosidekick sends no dedup key; Wazuh's integration cannot send `error` or
 * `critical`: here every PagerDuty severity is reachable).
 *
 * The trigger's payload, field by field (the Events v2 schema):
 *   summary    "<rule title>: k=v, k=v (N events in Ws)", at most 1024 bytes (cut on a UTF-8
 *              boundary with "…")
 *   source     the alert's first group value (the host, address or user it is about), else
 *              its tenant
 *   severity   the `severity` map of the sink by Sigma level (critical, high, medium, low,
 *              informational), else the alert's own severity (critical/error/warning/info)
 *   timestamp  last_seen; component the rule id; group the team; class the category
 *   custom_details  rule, rule_id, level, team, tenant, group, count, value, window,
 *              first_seen, last_seen, tags, degraded, and the first lines of evidence
 *   client "klaxon", client_url when configured.
 * A 202 is a delivery; 400 is permanent (dead letter); 429 and 5xx are retried (queue.c).
 *
 * The routing key is a secret: `routing_key: ${PD_ROUTING_KEY}` or `routing_key_file`.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "http.h"
#include "klaxon/secret.h"

#define PD_URL "https://events.pagerduty.com/v2/enqueue"
#define SUMMARY_MAX 1024
#define EVIDENCE_LINES 3
#define EVIDENCE_CHARS 300

static const char *const levels[] = {"critical", "high", "medium", "low", "informational"};
static const char *const pd_severities[] = {"critical", "error", "warning", "info"};

typedef struct pd_sink {
    kx__sink base;
    kx__http *http;
    char *url;
    char *routing_key;
    char *client_url;
    const char *severity[5]; /* by levels[]; NULL: the alert's own */
    struct curl_slist *headers;
    long timeout_ms;
} pd_sink;

/* s cut to at most max bytes on a UTF-8 boundary, "…" marking the cut. */
static void cut_utf8(kx_buf *b, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) {
        kx_buf_puts(b, s);
        return;
    }
    size_t k = max - 3; /* room for U+2026 */
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    kx_buf_append(b, s, k);
    kx_buf_puts(b, "\xe2\x80\xa6");
}

static const char *str_of(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : dflt;
}

/* The Events v2 body for alert a (parsed), as a new JSON object. */
static json_t *pd_event(const pd_sink *p, json_t *a)
{
    const char *key = str_of(a, "dedup_key", "");
    json_t *ev = json_object();
    json_object_set_new(ev, "routing_key", json_string(p->routing_key));
    bool resolve = !strcmp(str_of(a, "status", ""), "resolved");
    json_object_set_new(ev, "event_action", json_string(resolve ? "resolve" : "trigger"));
    json_object_set_new(ev, "dedup_key", json_string(key));
    if (resolve)
        return ev;

    json_t *rule = json_object_get(a, "rule"), *group = json_object_get(a, "group");
    const char *title = str_of(rule, "title", str_of(rule, "id", "klaxon alert"));
    kx_buf sum, full;
    kx_buf_init(&sum, 0);
    kx_buf_init(&full, 0);
    kx_buf_puts(&full, title);
    if (json_object_size(group)) {
        kx_buf_puts(&full, ": ");
        kx__alert_group_text(&full, group);
    }
    long long count = json_integer_value(json_object_get(a, "count"));
    long long window = json_integer_value(json_object_get(a, "window"));
    if (window > 0)
        kx_buf_printf(&full, " (%lld events in %llds)", count, window);
    cut_utf8(&sum, full.data ? full.data : "", SUMMARY_MAX);

    const char *source = NULL;
    const char *gk;
    json_t *gv;
    json_object_foreach(group, gk, gv)
    {
        if (!source && json_is_string(gv) && json_string_length(gv))
            source = json_string_value(gv);
    }
    if (!source)
        source = str_of(a, "tenant", "klaxon");

    const char *severity = str_of(a, "severity", "warning");
    const char *level = str_of(rule, "level", "");
    for (size_t i = 0; i < 5; i++)
        if (!strcmp(level, levels[i]) && p->severity[i])
            severity = p->severity[i];

    json_t *details = json_object();
    json_object_set(details, "rule", json_object_get(rule, "title"));
    json_object_set(details, "rule_id", json_object_get(rule, "id"));
    json_object_set(details, "level", json_object_get(rule, "level"));
    static const char *const copy[] = {"team",       "tenant",         "group",      "count",
                                       "value",      "window",         "first_seen", "last_seen",
                                       "local_time", "timezone",       "tags",       "degraded",
                                       "backfill",   "description",    "runbook",    "author",
                                       "references", "falsepositives", "fields"};
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++)
        if (json_object_get(a, copy[i]))
            json_object_set(details, copy[i], json_object_get(a, copy[i]));
    json_t *evidence = json_array();
    json_t *events = json_object_get(a, "events");
    for (size_t i = 0; i < json_array_size(events) && i < EVIDENCE_LINES; i++) {
        const char *raw = str_of(json_array_get(events, i), "raw", "");
        kx_buf line;
        kx_buf_init(&line, 0);
        cut_utf8(&line, raw, EVIDENCE_CHARS);
        json_array_append_new(evidence, json_string(line.data ? line.data : ""));
        kx_buf_fini(&line);
    }
    json_object_set_new(details, "evidence", evidence);

    json_t *payload = json_object();
    json_object_set_new(payload, "summary", json_string(sum.data ? sum.data : title));
    json_object_set_new(payload, "source", json_string(source));
    json_object_set_new(payload, "severity", json_string(severity));
    if (json_object_get(a, "last_seen"))
        json_object_set(payload, "timestamp", json_object_get(a, "last_seen"));
    if (json_object_get(rule, "id"))
        json_object_set(payload, "component", json_object_get(rule, "id"));
    json_object_set(payload, "group", json_object_get(a, "team"));
    json_object_set(payload, "class", json_object_get(a, "category"));
    json_object_set_new(payload, "custom_details", details);
    json_object_set_new(ev, "payload", payload);
    /* The runbook as a link (when it is one) and the rule's references. */
    json_t *links = json_array();
    const char *runbook = str_of(a, "runbook", NULL);
    if (runbook && (!strncmp(runbook, "https://", 8) || !strncmp(runbook, "http://", 7)))
        json_array_append_new(links, json_pack("{s:s,s:s}", "href", runbook, "text", "Runbook"));
    json_t *refs = json_object_get(a, "references");
    for (size_t i = 0; i < json_array_size(refs) && i < 5; i++) {
        const char *u = json_string_value(json_array_get(refs, i));
        if (u && (!strncmp(u, "https://", 8) || !strncmp(u, "http://", 7)))
            json_array_append_new(links, json_pack("{s:s,s:s}", "href", u, "text", "Reference"));
    }
    if (json_array_size(links))
        json_object_set_new(ev, "links", links);
    else
        json_decref(links);
    json_object_set_new(ev, "client", json_string("klaxon"));
    if (p->client_url)
        json_object_set_new(ev, "client_url", json_string(p->client_url));
    kx_buf_fini(&sum);
    kx_buf_fini(&full);
    return ev;
}

static void pd_attempt(kx__sink *sink, kx__delivery *d)
{
    pd_sink *p = (pd_sink *)sink;
    json_error_t je;
    json_t *a = json_loadb(d->send->payload, d->send->len, 0, &je);
    json_t *ev = a ? pd_event(p, a) : NULL;
    char *body = ev ? json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(ev);
    json_decref(a);
    if (!body) {
        /* Our own JSON that does not parse would be a bug: not retried, dead-lettered. */
        kx__outcome o = {.kind = a ? KX__ATTEMPT_RETRY : KX__ATTEMPT_FAIL,
                         .retry_after_ms = -1,
                         .error = a ? "out of memory" : "alert JSON does not parse"};
        kx__attempt_done(d, &o);
        return;
    }
    kx__http_post(p->http, d, p->url, p->headers, false, body, strlen(body), p->timeout_ms);
    /* The routing key is in the body: wipe the copy (curl made its own for the request). */
    explicit_bzero(body, strlen(body));
    free(body);
}

static void pd_destroy(kx__sink *sink)
{
    pd_sink *p = (pd_sink *)sink;
    kx__http_destroy(p->http);
    curl_slist_free_all(p->headers);
    kx_secret_free(p->url);
    kx_secret_free(p->routing_key);
    free(p->client_url);
    kx__sink_base_fini(sink);
    free(p);
}

static const kx__sink_ops pd_ops = {
    .type = "pagerduty",
    .attempt = pd_attempt,
    .destroy = pd_destroy,
};

static int parse_severity(pd_sink *p, const kx_yaml_node *m, const char *file, kx_err *err)
{
    if (m->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, m,
                           "severity: expected a map of Sigma level: PagerDuty severity");
    for (size_t i = 0; i < m->n; i++) {
        size_t li = 5, si = 4;
        for (size_t k = 0; k < 5; k++)
            if (kx_yaml_is(m->keys[i], levels[k]))
                li = k;
        if (li == 5)
            return kx_yaml_err(err, file, m->keys[i],
                               "severity: unknown level (expected critical, high, medium, low "
                               "or informational)");
        for (size_t k = 0; k < 4; k++)
            if (kx_yaml_is(m->vals[i], pd_severities[k]))
                si = k;
        if (si == 4)
            return kx_yaml_err(err, file, m->vals[i],
                               "severity: expected critical, error, warning or info");
        p->severity[li] = pd_severities[si];
    }
    return 0;
}

int kx__sink_pagerduty_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                              const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {
        "type",    "routing_key", "routing_key_file", "url",          "url_file",
        "timeout", "severity",    "client_url",       KX__QUEUE_KEYS, NULL};
    int rc;
    pd_sink *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->timeout_ms = 10000;
    const kx_yaml_node *n;
    if ((rc = kx__sink_base_init(&p->base, &pd_ops, loop, name)) ||
        (rc = kx_yaml_check_keys(cfg, file, keys, err)) ||
        (rc = kx_secret_get(cfg, "routing_key", file, true, &p->routing_key, err)) ||
        (rc = kx__sink_parse_timeout(cfg, file, &p->timeout_ms, err)))
        goto fail;
    if (!p->routing_key[0]) {
        rc = kx_yaml_err(err, file, cfg, "sink \"%s\": the routing key is empty", name);
        goto fail;
    }
    if (kx_yaml_get(cfg, "url") || kx_yaml_get(cfg, "url_file")) {
        if ((rc = kx__sink_parse_url(cfg, file, name, &p->url, err)))
            goto fail;
    } else if (!(p->url = strdup(PD_URL))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((n = kx_yaml_get(cfg, "severity")) && (rc = parse_severity(p, n, file, err)))
        goto fail;
    if ((n = kx_yaml_get(cfg, "client_url"))) {
        const char *s;
        if ((rc = kx_yaml_str(n, file, &s, err)))
            goto fail;
        if (!(p->client_url = strdup(s))) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if ((rc = kx__http_header(&p->headers, "Content-Type", "application/json")) ||
        (rc = kx__http_header(&p->headers, "Expect", "")))
        goto fail;
    if ((rc = kx__http_create(loop, NULL, NULL, &p->http))) {
        kx_yaml_err(err, file, cfg, "sink \"%s\": HTTP client: %s", name, strerror(-rc));
        goto fail;
    }
    *out = &p->base;
    return 0;
fail:
    pd_destroy(&p->base);
    return rc;
}
