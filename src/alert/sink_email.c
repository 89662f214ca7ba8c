/*
 * email sink: one mail per alert over SMTP (or SMTPS), through libcurl on the loop (http.c).
 * For teams that read alerts, not pages: low-severity routes, audit mailboxes.
 *
 *   mail: {type: email, url: "smtp://mail.internal:25", from: "klaxon@example.com",
 *          to: [soc@example.com], username: klaxon, password: "${SMTP_PASSWORD}"}
 *
 * The message (RFC 5322): Date, From, To, Subject "[klaxon] [severity] title — k=v, …"
 * (non-ASCII bytes of the subject become '?': headers stay 7-bit), Message-ID from the
 * alert's id, and a text/plain UTF-8 body in quoted-printable (so no line exceeds SMTP's
 * limit, whatever the evidence holds): the fields a person reads, the first lines of
 * evidence, then the alert JSON. A 5xx reply (unknown mailbox, relay denied) is a dead letter;
 * 4xx and transport errors are retried.
 *
 * With `digest: D` the alerts that reach the sink within D of the first one go out as one
 * mail (a line per alert, then each alert's text, then the records), or sooner when
 * digest_max of them wait, or at shutdown (flush). The mail's outcome is each alert's: a
 * failed digest is retried alert by alert through the queue, and they meet again in a later
 * digest. The queue lets digest_max attempts be in flight (the sink sets base.batch).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alert_int.h"
#include "http.h"
#include "klaxon/secret.h"

typedef struct email_sink {
    kx__sink base;
    kx__http *http;
    char *url, *from, *user, *password;
    struct curl_slist *rcpt;
    char *to_header;
    long timeout_ms;
    kx_buf msg, body;
    /* digest: the deliveries waiting for the period (fill) and those of the mail in flight
     * (sending), each room for digest_max; due: the period ended while a mail was out */
    int64_t digest_ms;
    unsigned digest_max;
    kx__delivery **fill, **sending;
    size_t nfill, nsending;
    bool due;
    bool closing; /* destroy: a cancelled digest starts no other */
    ev_timer timer;
} email_sink;

static const char *str_of(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : dflt;
}

/* Quoted-printable (RFC 2045) of src into out: lines of at most 76, CRLF kept as is. */
static int qp(kx_buf *out, const char *src, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '\n') {
            rc = kx_buf_puts(out, "\r\n");
            col = 0;
            continue;
        }
        bool plain =
            (c >= 33 && c <= 126 && c != '=') || (c == ' ' && i + 1 < n && src[i + 1] != '\n');
        size_t w = plain ? 1 : 3;
        if (col + w > 75) {
            rc = kx_buf_puts(out, "=\r\n");
            col = 0;
        }
        if (plain) {
            rc = rc ? rc : kx_buf_putc(out, (char)c);
        } else {
            char e[3] = {'=', hex[c >> 4], hex[c & 15]};
            rc = rc ? rc : kx_buf_append(out, e, 3);
        }
        col += w;
    }
    return rc;
}

/* A header value: printable ASCII only (anything else becomes '?'), one line. */
static int header_text(kx_buf *out, const char *s, size_t max)
{
    int rc = 0;
    for (size_t i = 0; i < max && s[i] && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        rc = kx_buf_putc(out, c >= 32 && c < 127 ? (char)c : '?');
    }
    return rc;
}

/* The lines a person reads about one alert: title, fields, description, first evidence. */
static int alert_text(kx_buf *b, json_t *a, const char *g)
{
    json_t *rule = json_object_get(a, "rule");
    const char *title = str_of(rule, "title", str_of(rule, "id", "klaxon alert"));
    bool resolved = !strcmp(str_of(a, "status", ""), "resolved");
    kx_buf_printf(b, "%s%s\n\n", resolved ? "Resolved: " : "", title);
    kx_buf_printf(b, "Severity:   %s\nTeam:       %s\nTenant:     %s\nRule:       %s\n",
                  str_of(a, "severity", "warning"), str_of(a, "team", "default"),
                  str_of(a, "tenant", "default"), str_of(rule, "id", "?"));
    if (*g)
        kx_buf_printf(b, "Group:      %s\n", g);
    kx_buf_printf(b, "Count:      %lld",
                  (long long)json_integer_value(json_object_get(a, "count")));
    long long win = json_integer_value(json_object_get(a, "window"));
    if (win > 0)
        kx_buf_printf(b, " in %llds", win);
    kx_buf_printf(b, "\nFirst seen: %s\nLast seen:  %s\n", str_of(a, "first_seen", "?"),
                  str_of(a, "last_seen", "?"));
    if (json_object_get(a, "local_time"))
        kx_buf_printf(b, "Local time: %s (%s)\n", str_of(a, "local_time", "?"),
                      str_of(a, "timezone", "?"));
    if (json_object_get(a, "runbook"))
        kx_buf_printf(b, "Runbook:    %s\n", str_of(a, "runbook", ""));
    if (json_object_get(a, "description"))
        kx_buf_printf(b, "\n%s\n", str_of(a, "description", ""));
    json_t *events = json_object_get(a, "events");
    if (json_array_size(events)) {
        kx_buf_puts(b, "\nEvidence:\n");
        for (size_t e = 0; e < json_array_size(events) && e < 3; e++)
            kx_buf_printf(b, "  %s\n", str_of(json_array_get(events, e), "raw", ""));
    }
    return 0;
}

/* src as a header token: letters, digits, '.', '-' and '_' kept, anything else '_' (the id
 * and dedup_key come from the alert JSON, which a requeued file could have changed). */
static void token(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         c == '.' || c == '-' || c == '_'
                     ? (char)c
                     : '_';
    }
    dst[i] = '\0';
}

/* Date, From, To, "Subject: [klaxon] " and the subject's text (7-bit), Message-ID, the MIME
 * headers, extra (already CRLF-terminated lines), then the body in quoted-printable. */
static int message(email_sink *m, const char *tag, const char *subject, const char *g,
                   const char *id, const char *extra)
{
    kx_buf *msg = &m->msg;
    char date[64], mid[128];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    char tok[81];
    token(tok, sizeof(tok), id);
    snprintf(mid, sizeof(mid), "<%s.%lld@klaxon>", tok, (long long)now);
    int rc = kx_buf_printf(msg, "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: [klaxon] [%s] ", date,
                           m->from, m->to_header, tag);
    rc = rc ? rc : header_text(msg, subject, 160);
    if (*g && !rc) {
        rc = kx_buf_puts(msg, " - ");
        rc = rc ? rc : header_text(msg, g, 200);
    }
    rc = rc ? rc
            : kx_buf_printf(msg,
                            "\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n"
                            "Content-Type: text/plain; charset=utf-8\r\n"
                            "Content-Transfer-Encoding: quoted-printable\r\n%s\r\n",
                            mid, extra);
    rc = rc ? rc : qp(msg, m->body.data, m->body.len);
    return rc ? rc : kx_buf_puts(msg, "\r\n");
}

static int build(email_sink *m, json_t *a, const char *json, size_t len)
{
    json_t *rule = json_object_get(a, "rule");
    const char *title = str_of(rule, "title", str_of(rule, "id", "klaxon alert"));
    bool resolved = !strcmp(str_of(a, "status", ""), "resolved");
    kx_buf *b = &m->body;
    kx_buf_reset(b);
    kx_buf_reset(&m->msg);
    kx_buf g;
    kx_buf_init(&g, 0);
    kx__alert_group_text(&g, json_object_get(a, "group"));
    kx_buf_puts(&g, "");
    alert_text(b, a, g.data ? g.data : "");
    kx_buf_puts(b, "\nAlert record (docs/alerts.md):\n");
    kx_buf_append(b, json, len);
    int rc = kx_buf_puts(b, "\n");
    char extra[96], key[41];
    token(key, sizeof(key), str_of(a, "dedup_key", "?"));
    snprintf(extra, sizeof(extra), "X-Klaxon-Dedup-Key: %s\r\n", key);
    rc = rc ? rc
            : message(m, resolved ? "resolved" : str_of(a, "severity", "warning"), title,
                      g.data ? g.data : "", str_of(a, "id", "alert"), extra);
    kx_buf_fini(&g);
    return rc;
}

/* ---- digests: the alerts of `digest` (a period) in one mail ---- */

static int sev_rank(const char *s)
{
    static const char *const order[] = {"info", "warning", "error", "critical"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, order[i]))
            return i;
    return 0;
}

/* One mail for the deliveries of m->sending: a line per alert, then each alert's text, then
 * the records. An alert whose JSON does not parse is listed by its key. */
static int build_digest(email_sink *m)
{
    kx_buf *b = &m->body;
    kx_buf_reset(b);
    kx_buf_reset(&m->msg);
    size_t n = m->nsending;
    json_t **a = calloc(n, sizeof(*a));
    if (!a)
        return -ENOMEM;
    const char *top = "info";
    for (size_t i = 0; i < n; i++) {
        const kx__send *s = m->sending[i]->send;
        a[i] = json_loadb(s->payload, s->len, 0, NULL);
        const char *sev = str_of(a[i], "severity", "info");
        if (sev_rank(sev) > sev_rank(top))
            top = sev;
    }
    kx_buf_printf(b, "%zu alert(s) in this digest, the most severe %s.\n\n", n, top);
    kx_buf g;
    kx_buf_init(&g, 0);
    for (size_t i = 0; i < n; i++) {
        json_t *rule = json_object_get(a[i], "rule");
        kx_buf_reset(&g);
        kx__alert_group_text(&g, json_object_get(a[i], "group"));
        kx_buf_printf(b, "%2zu. [%s] %s%s%s%s (%s)\n", i + 1, str_of(a[i], "severity", "?"),
                      !strcmp(str_of(a[i], "status", ""), "resolved") ? "Resolved: " : "",
                      str_of(rule, "title", str_of(rule, "id", m->sending[i]->send->key)),
                      g.len ? " - " : "", g.len ? g.data : "", str_of(a[i], "last_seen", "?"));
    }
    for (size_t i = 0; i < n; i++) {
        if (!a[i])
            continue;
        kx_buf_reset(&g);
        kx__alert_group_text(&g, json_object_get(a[i], "group"));
        kx_buf_printf(b, "\n---- %zu ----\n", i + 1);
        alert_text(b, a[i], g.len ? g.data : "");
    }
    kx_buf_puts(b, "\nAlert records (docs/alerts.md), one per line:\n");
    for (size_t i = 0; i < n; i++) {
        kx_buf_append(b, m->sending[i]->send->payload, m->sending[i]->send->len);
        kx_buf_putc(b, '\n');
    }
    kx_buf_fini(&g);
    char subject[96], extra[64], id[64];
    snprintf(subject, sizeof(subject), "digest: %zu alert(s), the most severe %.16s", n, top);
    for (size_t i = 0; i < n; i++)
        json_decref(a[i]); /* top points into one of them: used above */
    free(a);
    snprintf(extra, sizeof(extra), "X-Klaxon-Alerts: %zu\r\n", n);
    snprintf(id, sizeof(id), "digest.%s.%zu", m->sending[0]->send->key, n);
    return message(m, "digest", subject, "", id, extra);
}

/* One outcome to every alert of a digest; the breaker counts it once. */
static void report_all(email_sink *m, kx__delivery *const *ds, size_t n, const kx__outcome *o)
{
    (void)m;
    kx__outcome rest = *o;
    rest.shared = true;
    for (size_t i = 0; i < n; i++)
        kx__attempt_done(ds[i], i ? &rest : o);
}

static void send_digest(email_sink *m)
{
    if (m->nsending) {
        m->due = true; /* after the mail in flight */
        return;
    }
    m->due = false;
    ev_timer_stop(m->base.loop, &m->timer);
    if (!m->nfill)
        return;
    kx__delivery **t = m->sending;
    m->sending = m->fill;
    m->fill = t;
    m->nsending = m->nfill;
    m->nfill = 0;
    int rc = build_digest(m);
    if (rc) {
        kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "out of memory"};
        size_t n = m->nsending;
        kx__delivery **ds = m->sending;
        m->nsending = 0;
        report_all(m, ds, n, &o);
        return;
    }
    kx__http_smtp(m->http, m->sending[0], m->url, m->from, m->rcpt, m->user, m->password,
                  m->msg.data, m->msg.len, m->timeout_ms);
}

/* The mail's outcome is every one of its alerts' outcome. */
static void on_report(void *ud, kx__delivery *d, const kx__outcome *o)
{
    email_sink *m = ud;
    if (!m->nsending || d != m->sending[0]) {
        kx__attempt_done(d, o); /* a single mail */
        return;
    }
    /* Reporting may start new attempts (into fill) or even a new digest: work on a copy. */
    size_t n = m->nsending;
    kx__delivery **ds = malloc(n * sizeof(*ds));
    kx__outcome copy = *o;
    char why[200];
    /* A refused digest (a 5xx: too large, a policy) may pass as smaller mails: each alert is
     * retried through the queue, and dead-lettered when its retry_for is spent. */
    if (copy.kind == KX__ATTEMPT_FAIL) {
        copy.kind = KX__ATTEMPT_RETRY;
        snprintf(why, sizeof(why), "digest refused: %s", o->error ? o->error : "");
    } else {
        snprintf(why, sizeof(why), "%s", o->error ? o->error : "");
    }
    copy.error = why;
    if (!ds) {
        /* Out of memory: report in place; nothing can start a digest meanwhile (due). */
        m->due = true;
        report_all(m, m->sending, n, &copy);
        m->nsending = 0;
    } else {
        memcpy(ds, m->sending, n * sizeof(*ds));
        m->nsending = 0;
        report_all(m, ds, n, &copy);
        free(ds);
    }
    if (!m->closing && (m->due || (m->nfill && !ev_is_active(&m->timer))))
        send_digest(m);
}

static void digest_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    send_digest(t->data);
}

static void email_attempt(kx__sink *sink, kx__delivery *d)
{
    email_sink *m = (email_sink *)sink;
    if (m->digest_ms) {
        m->fill[m->nfill++] = d; /* room: the queue's concurrency is digest_max */
        if (m->nfill == 1) {
            ev_timer_set(&m->timer, (double)m->digest_ms / 1000.0, 0.);
            ev_timer_start(sink->loop, &m->timer);
        }
        if (m->nfill >= m->digest_max)
            send_digest(m);
        return;
    }
    json_error_t je;
    json_t *a = json_loadb(d->send->payload, d->send->len, 0, &je);
    int rc = a ? build(m, a, d->send->payload, d->send->len) : -EINVAL;
    json_decref(a);
    if (rc) {
        kx__outcome o = {.kind = a || rc != -EINVAL ? KX__ATTEMPT_RETRY : KX__ATTEMPT_FAIL,
                         .retry_after_ms = -1,
                         .error = rc == -EINVAL ? "alert JSON does not parse" : "out of memory"};
        kx__attempt_done(d, &o);
        return;
    }
    kx__http_smtp(m->http, d, m->url, m->from, m->rcpt, m->user, m->password, m->msg.data,
                  m->msg.len, m->timeout_ms);
}

/* Shutdown: what waits for the period goes now. */
static void email_flush(kx__sink *sink)
{
    email_sink *m = (email_sink *)sink;
    if (m->digest_ms && m->nfill)
        send_digest(m);
}

static void email_destroy(kx__sink *sink)
{
    email_sink *m = (email_sink *)sink;
    m->closing = true;
    ev_timer_stop(sink->loop, &m->timer);
    kx__http_destroy(m->http); /* a digest in flight is reported (cancelled) to its alerts */
    free(m->fill);
    free(m->sending);
    curl_slist_free_all(m->rcpt);
    kx_secret_free(m->url);
    kx_secret_free(m->password);
    free(m->from);
    free(m->user);
    free(m->to_header);
    kx_buf_fini(&m->msg);
    kx_buf_fini(&m->body);
    kx__sink_base_fini(sink);
    free(m);
}

static const kx__sink_ops email_ops = {
    .type = "email",
    .attempt = email_attempt,
    .destroy = email_destroy,
    .flush = email_flush,
};

/* An address: one line, no spaces, no angle brackets (it goes into headers and commands). */
static bool address_ok(const char *s)
{
    return s[0] && !strpbrk(s, " \t\r\n<>,;") && strchr(s, '@');
}

int kx__sink_email_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type",    "url",      "url_file",   "from",
                                       "to",      "username", "password",   "password_file",
                                       "timeout", "digest",   "digest_max", KX__QUEUE_KEYS,
                                       NULL};
    int rc;
    email_sink *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->timeout_ms = 30000;
    m->digest_max = 100;
    ev_timer_init(&m->timer, digest_timer_cb, 0., 0.);
    m->timer.data = m;
    kx_buf_init(&m->msg, 0);
    kx_buf_init(&m->body, 0);
    const kx_yaml_node *n;
    const char *s;
    if ((rc = kx__sink_base_init(&m->base, &email_ops, loop, name)) ||
        (rc = kx_yaml_check_keys(cfg, file, keys, err)) ||
        (rc = kx_secret_get(cfg, "url", file, true, &m->url, err)) ||
        (rc = kx_secret_get(cfg, "password", file, false, &m->password, err)) ||
        (rc = kx__sink_parse_timeout(cfg, file, &m->timeout_ms, err)))
        goto fail;
    if (strncmp(m->url, "smtp://", 7) && strncmp(m->url, "smtps://", 8)) {
        n = kx_yaml_get(cfg, "url");
        rc = kx_yaml_err(err, file, n ? n : cfg, "url must start with smtp:// or smtps://");
        goto fail;
    }
    if (!(n = kx_yaml_get(cfg, "from"))) {
        rc = kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"from\"", name);
        goto fail;
    }
    if ((rc = kx_yaml_str(n, file, &s, err)))
        goto fail;
    if (!address_ok(s)) {
        rc = kx_yaml_err(err, file, n, "from: expected one address such as klaxon@example.com");
        goto fail;
    }
    if (!(m->from = strdup(s))) {
        rc = -ENOMEM;
        goto fail;
    }
    if (!(n = kx_yaml_get(cfg, "to"))) {
        rc = kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"to\"", name);
        goto fail;
    }
    const kx_yaml_node *const *v =
        n->type == KX_YAML_SEQ ? (const kx_yaml_node *const *)n->vals : &n;
    size_t cnt = n->type == KX_YAML_SEQ ? n->n : 1;
    if (!cnt) {
        rc = kx_yaml_err(err, file, n, "to: at least one address");
        goto fail;
    }
    kx_buf to;
    kx_buf_init(&to, 0);
    for (size_t i = 0; i < cnt; i++) {
        if ((rc = kx_yaml_str(v[i], file, &s, err)))
            break;
        if (!address_ok(s)) {
            rc = kx_yaml_err(err, file, v[i], "to: expected addresses such as soc@example.com");
            break;
        }
        struct curl_slist *l = curl_slist_append(m->rcpt, s);
        if (!l) {
            rc = -ENOMEM;
            break;
        }
        m->rcpt = l;
        kx_buf_printf(&to, "%s%s", i ? ", " : "", s);
    }
    m->to_header = to.data; /* plain malloc'd memory, freed with the sink */
    if (rc)
        goto fail;
    if ((n = kx_yaml_get(cfg, "username"))) {
        if ((rc = kx_yaml_str(n, file, &s, err)))
            goto fail;
        if (!(m->user = strdup(s))) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if ((n = kx_yaml_get(cfg, "digest"))) {
        long long ms;
        if ((rc = kx_yaml_duration_ms(n, file, &ms, err)))
            goto fail;
        if (ms < 1000 || ms > 24 * 3600 * 1000LL) {
            rc = kx_yaml_err(err, file, n, "digest must be between 1s and 24h");
            goto fail;
        }
        m->digest_ms = ms;
    }
    if ((n = kx_yaml_get(cfg, "digest_max"))) {
        long long v2;
        if ((rc = kx_yaml_int(n, file, 2, 1000, &v2, err)))
            goto fail;
        m->digest_max = (unsigned)v2;
    }
    if (m->digest_ms) {
        m->fill = calloc(m->digest_max, sizeof(*m->fill));
        m->sending = calloc(m->digest_max, sizeof(*m->sending));
        if (!m->fill || !m->sending) {
            rc = -ENOMEM;
            goto fail;
        }
        m->base.batch = m->digest_max;
    }
    if ((rc = kx__http_create(loop, NULL, NULL, &m->http))) {
        kx_yaml_err(err, file, cfg, "sink \"%s\": mail client: %s", name, strerror(-rc));
        goto fail;
    }
    kx__http_set_report(m->http, on_report, m);
    *out = &m->base;
    return 0;
fail:
    email_destroy(&m->base);
    return rc;
}
