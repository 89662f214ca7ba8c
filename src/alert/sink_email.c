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

static int build(email_sink *m, json_t *a, const char *json, size_t len)
{
    json_t *rule = json_object_get(a, "rule"), *group = json_object_get(a, "group");
    const char *title = str_of(rule, "title", str_of(rule, "id", "klaxon alert"));
    const char *severity = str_of(a, "severity", "warning");
    bool resolved = !strcmp(str_of(a, "status", ""), "resolved");
    kx_buf *b = &m->body, *msg = &m->msg;
    kx_buf_reset(b);
    kx_buf_reset(msg);
    /* The group as "k=v, k=v" (also in the subject). */
    kx_buf g;
    kx_buf_init(&g, 0);
    const char *k;
    json_t *v;
    size_t i = 0;
    json_object_foreach(group, k, v)
    {
        kx_buf_printf(&g, "%s%s=", i++ ? ", " : "", k);
        if (json_is_string(v)) {
            kx_buf_puts(&g, json_string_value(v));
        } else {
            char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            kx_buf_puts(&g, t ? t : "?");
            free(t);
        }
    }
    /* The body a person reads first, then the record. */
    kx_buf_printf(b, "%s%s\n\n", resolved ? "Resolved: " : "", title);
    kx_buf_printf(b, "Severity:   %s\nTeam:       %s\nTenant:     %s\nRule:       %s\n", severity,
                  str_of(a, "team", "default"), str_of(a, "tenant", "default"),
                  str_of(rule, "id", "?"));
    if (g.len)
        kx_buf_printf(b, "Group:      %s\n", g.data);
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
    kx_buf_puts(b, "\nAlert record (docs/alerts.md):\n");
    kx_buf_append(b, json, len);
    int rc = kx_buf_puts(b, "\n");

    /* Headers. */
    char date[64], mid[96];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    snprintf(mid, sizeof(mid), "<%s.%lld@klaxon>", str_of(a, "id", "alert"), (long long)now);
    rc = rc ? rc
            : kx_buf_printf(msg, "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: [klaxon] ", date,
                            m->from, m->to_header);
    rc = rc ? rc : kx_buf_printf(msg, "[%s] ", resolved ? "resolved" : severity);
    rc = rc ? rc : header_text(msg, title, 160);
    if (g.len && !rc) {
        rc = kx_buf_puts(msg, " - ");
        rc = rc ? rc : header_text(msg, g.data, 200);
    }
    rc = rc ? rc
            : kx_buf_printf(msg,
                            "\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n"
                            "Content-Type: text/plain; charset=utf-8\r\n"
                            "Content-Transfer-Encoding: quoted-printable\r\n"
                            "X-Klaxon-Dedup-Key: %s\r\n\r\n",
                            mid, str_of(a, "dedup_key", "?"));
    rc = rc ? rc : qp(msg, b->data, b->len);
    rc = rc ? rc : kx_buf_puts(msg, "\r\n");
    kx_buf_fini(&g);
    return rc;
}

static void email_attempt(kx__sink *sink, kx__delivery *d)
{
    email_sink *m = (email_sink *)sink;
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

static void email_destroy(kx__sink *sink)
{
    email_sink *m = (email_sink *)sink;
    kx__http_destroy(m->http);
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
};

/* An address: one line, no spaces, no angle brackets (it goes into headers and commands). */
static bool address_ok(const char *s)
{
    return s[0] && !strpbrk(s, " \t\r\n<>,;") && strchr(s, '@');
}

int kx__sink_email_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type",    "url",          "url_file", "from",
                                       "to",      "username",     "password", "password_file",
                                       "timeout", KX__QUEUE_KEYS, NULL};
    int rc;
    email_sink *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->timeout_ms = 30000;
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
    if ((rc = kx__http_create(loop, NULL, NULL, &m->http))) {
        kx_yaml_err(err, file, cfg, "sink \"%s\": mail client: %s", name, strerror(-rc));
        goto fail;
    }
    *out = &m->base;
    return 0;
fail:
    email_destroy(&m->base);
    return rc;
}
