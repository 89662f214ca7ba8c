/*
 * slack sink: a Slack incoming webhook (also Mattermost and other Slack-compatible
 * endpoints). One message per alert, for a person reading it on a phone at a glance:
 *
 *   header   ":rotating_light: <rule title>" (":white_check_mark: Resolved: …" for a resolve)
 *   fields   Severity, Team, Tenant, Count (in the window), Group, First / last seen
 *   evidence the first lines of the evidence, in a code block
 *   context  the rule id and the dedup_key
 *   text     a one-line fallback for notifications: "[severity] title — group"
 *
 * Everything taken from the logs is escaped for Slack's mrkdwn (&, <, > become entities), so
 * a log line cannot mention @channel or forge a link; backticks in evidence are replaced so
 * it cannot leave its code block. Texts are cut to Slack's limits (header 150 characters,
 * fields 2000, sections 3000). 200 is a delivery; 400/403/404/410 (invalid payload, revoked
 * or archived) are permanent; 429 (with Retry-After) and 5xx are retried.
 *
 * The URL is the secret: `url: ${SLACK_WEBHOOK_URL}` or `url_file`.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "http.h"
#include "klaxon/secret.h"

#define EVIDENCE_LINES 3
#define EVIDENCE_CHARS 400
#define HEADER_MAX 150
#define FIELD_MAX 2000
#define SECTION_MAX 3000

typedef struct slack_sink {
    kx__sink base;
    kx__http *http;
    char *url;
    struct curl_slist *headers;
    long timeout_ms;
} slack_sink;

/* Appends s (n bytes) escaped for mrkdwn; code: also replace backticks. Stops before max
 * bytes of output on a UTF-8 boundary and marks the cut with "…". */
static void esc(kx_buf *b, const char *s, size_t n, size_t max, bool code)
{
    size_t start = b->len;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        char c = s[i];
        if (c == '&')
            rep = "&amp;";
        else if (c == '<')
            rep = "&lt;";
        else if (c == '>')
            rep = "&gt;";
        else if (code && c == '`')
            rep = "'";
        size_t add = rep ? strlen(rep) : 1;
        if (b->len - start + add > max - 3) {
            /* Cut: drop a partial UTF-8 sequence, then mark it. */
            while (b->len > start && ((unsigned char)b->data[b->len - 1] & 0xC0) == 0x80)
                b->len--;
            if (b->len > start && ((unsigned char)b->data[b->len - 1] & 0xC0) == 0xC0)
                b->len--;
            kx_buf_puts(b, "\xe2\x80\xa6");
            return;
        }
        if (rep)
            kx_buf_puts(b, rep);
        else
            kx_buf_putc(b, c);
    }
}

static void esc_str(kx_buf *b, const char *s, size_t max)
{
    esc(b, s, strlen(s), max, false);
}

static const char *str_of(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : dflt;
}

static void group_text(kx_buf *b, json_t *group, size_t max)
{
    const char *k;
    json_t *v;
    size_t i = 0;
    kx_buf t;
    kx_buf_init(&t, 0);
    json_object_foreach(group, k, v)
    {
        kx_buf_printf(&t, "%s%s=", i++ ? ", " : "", k);
        if (json_is_string(v)) {
            kx_buf_puts(&t, json_string_value(v));
        } else {
            char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            kx_buf_puts(&t, d ? d : "?");
            free(d);
        }
    }
    esc_str(b, t.data ? t.data : "", max);
    kx_buf_fini(&t);
}

static json_t *mrkdwn(const char *text)
{
    return json_pack("{s:s,s:s}", "type", "mrkdwn", "text", text);
}

/* One "*Label*\nvalue" field, the value escaped. */
static json_t *field(const char *label, const char *value)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    kx_buf_printf(&b, "*%s*\n", label);
    esc_str(&b, value, FIELD_MAX - b.len);
    json_t *f = mrkdwn(b.data);
    kx_buf_fini(&b);
    return f;
}

static json_t *slack_message(json_t *a)
{
    json_t *rule = json_object_get(a, "rule"), *group = json_object_get(a, "group");
    const char *title = str_of(rule, "title", str_of(rule, "id", "klaxon alert"));
    const char *severity = str_of(a, "severity", "warning");
    bool resolved = !strcmp(str_of(a, "status", ""), "resolved");
    kx_buf b;
    kx_buf_init(&b, 0);
    json_t *blocks = json_array();

    /* header: plain text, so only the length matters */
    kx_buf_puts(&b, resolved ? "\xe2\x9c\x85 Resolved: " : "\xf0\x9f\x9a\xa8 ");
    esc(&b, title, strlen(title), HEADER_MAX - b.len, false);
    json_array_append_new(blocks, json_pack("{s:s,s:{s:s,s:s}}", "type", "header", "text", "type",
                                            "plain_text", "text", b.data));

    json_t *fields = json_array();
    json_array_append_new(fields, field("Severity", severity));
    json_array_append_new(fields, field("Team", str_of(a, "team", "default")));
    json_array_append_new(fields, field("Tenant", str_of(a, "tenant", "default")));
    char count[96];
    long long n = json_integer_value(json_object_get(a, "count"));
    long long w = json_integer_value(json_object_get(a, "window"));
    if (w > 0)
        snprintf(count, sizeof(count), "%lld events in %llds", n, w);
    else
        snprintf(count, sizeof(count), "%lld", n);
    json_array_append_new(fields, field("Count", count));
    if (json_object_size(group)) {
        kx_buf_reset(&b);
        kx_buf_puts(&b, "*Group*\n");
        group_text(&b, group, FIELD_MAX - b.len);
        json_array_append_new(fields, mrkdwn(b.data));
    }
    kx_buf_reset(&b);
    kx_buf_printf(&b, "%s \xe2\x86\x92 %s", str_of(a, "first_seen", "?"),
                  str_of(a, "last_seen", "?"));
    json_array_append_new(fields, field("First / last seen (UTC)", b.data));
    if (json_object_get(a, "local_time")) {
        /* A time-of-day rule: what the clock read where its window is judged. */
        kx_buf_reset(&b);
        kx_buf_printf(&b, "%s (%s)", str_of(a, "local_time", "?"), str_of(a, "timezone", "?"));
        json_array_append_new(fields, field("Local time", b.data));
    }
    json_array_append_new(blocks, json_pack("{s:s,s:o}", "type", "section", "fields", fields));

    json_t *events = json_object_get(a, "events");
    if (json_array_size(events)) {
        kx_buf_reset(&b);
        kx_buf_puts(&b, "```");
        for (size_t i = 0; i < json_array_size(events) && i < EVIDENCE_LINES; i++) {
            const char *raw = str_of(json_array_get(events, i), "raw", "");
            size_t before = b.len;
            esc(&b, raw, strlen(raw), EVIDENCE_CHARS, true);
            (void)before;
            kx_buf_putc(&b, '\n');
        }
        kx_buf_puts(&b, "```");
        if (b.len > SECTION_MAX)
            b.len = SECTION_MAX; /* cannot happen with 3 x 400 bytes; a guard */
        json_array_append_new(blocks,
                              json_pack("{s:s,s:o}", "type", "section", "text", mrkdwn(b.data)));
    }
    const char *desc = str_of(a, "description", NULL), *runbook = str_of(a, "runbook", NULL);
    if (desc || runbook) {
        kx_buf_reset(&b);
        if (desc)
            esc_str(&b, desc, 1500);
        if (runbook) {
            kx_buf_puts(&b, desc ? "\n" : "");
            if (!strncmp(runbook, "https://", 8) || !strncmp(runbook, "http://", 7)) {
                /* A link Slack shows as "Runbook": the URL escaped, no | or > inside. */
                kx_buf_puts(&b, "<");
                esc(&b, runbook, strcspn(runbook, "|<>"), 1000, false);
                kx_buf_puts(&b, "|Runbook>");
            } else {
                kx_buf_puts(&b, "*Runbook:* ");
                esc_str(&b, runbook, 1000);
            }
        }
        json_array_append_new(blocks,
                              json_pack("{s:s,s:o}", "type", "section", "text", mrkdwn(b.data)));
    }
    kx_buf_reset(&b);
    kx_buf_puts(&b, "rule ");
    esc_str(&b, str_of(rule, "id", "?"), 300);
    kx_buf_printf(&b, " \xc2\xb7 dedup_key %s", str_of(a, "dedup_key", "?"));
    json_array_append_new(blocks,
                          json_pack("{s:s,s:[o]}", "type", "context", "elements", mrkdwn(b.data)));

    /* The notification's one line. */
    kx_buf_reset(&b);
    kx_buf_printf(&b, "[%s] %s", resolved ? "resolved" : severity, "");
    esc_str(&b, title, 500);
    if (json_object_size(group)) {
        kx_buf_puts(&b, " \xe2\x80\x94 ");
        group_text(&b, group, 500);
    }
    json_t *msg = json_pack("{s:s,s:o}", "text", b.data, "blocks", blocks);
    kx_buf_fini(&b);
    return msg;
}

static void slack_attempt(kx__sink *sink, kx__delivery *d)
{
    slack_sink *s = (slack_sink *)sink;
    json_error_t je;
    json_t *a = json_loadb(d->send->payload, d->send->len, 0, &je);
    json_t *m = a ? slack_message(a) : NULL;
    char *body = m ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(m);
    json_decref(a);
    if (!body) {
        kx__outcome o = {.kind = a ? KX__ATTEMPT_RETRY : KX__ATTEMPT_FAIL,
                         .retry_after_ms = -1,
                         .error = a ? "out of memory" : "alert JSON does not parse"};
        kx__attempt_done(d, &o);
        return;
    }
    kx__http_post(s->http, d, s->url, s->headers, false, body, strlen(body), s->timeout_ms);
    free(body);
}

static void slack_destroy(kx__sink *sink)
{
    slack_sink *s = (slack_sink *)sink;
    kx__http_destroy(s->http);
    curl_slist_free_all(s->headers);
    kx_secret_free(s->url);
    kx__sink_base_fini(sink);
    free(s);
}

static const kx__sink_ops slack_ops = {
    .type = "slack",
    .attempt = slack_attempt,
    .destroy = slack_destroy,
};

int kx__sink_slack_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type", "url", "url_file", "timeout", KX__QUEUE_KEYS, NULL};
    int rc;
    slack_sink *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->timeout_ms = 10000;
    if ((rc = kx__sink_base_init(&s->base, &slack_ops, loop, name)) ||
        (rc = kx_yaml_check_keys(cfg, file, keys, err)) ||
        (rc = kx__sink_parse_url(cfg, file, name, &s->url, err)) ||
        (rc = kx__sink_parse_timeout(cfg, file, &s->timeout_ms, err)))
        goto fail;
    if ((rc = kx__http_header(&s->headers, "Content-Type", "application/json; charset=utf-8")) ||
        (rc = kx__http_header(&s->headers, "Expect", "")))
        goto fail;
    if ((rc = kx__http_create(loop, NULL, NULL, &s->http))) {
        kx_yaml_err(err, file, cfg, "sink \"%s\": HTTP client: %s", name, strerror(-rc));
        goto fail;
    }
    *out = &s->base;
    return 0;
fail:
    slack_destroy(&s->base);
    return rc;
}
