/*
 * webhook sink: POSTs the alert JSON, as rendered, to a URL (http.c does the HTTP, the queue
 * the retries).
 *
 * Signed when a secret is configured, so a receiver can tell klaxon's alerts from anyone
 * else's POSTs and refuse replays:
 *
 *   X-Klaxon-Timestamp: <unix seconds when this attempt was made>
 *   X-Klaxon-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
 *
 * Each attempt is signed anew (a retry hours later carries a fresh timestamp). The receiver
 * recomputes the HMAC over the raw body it received, compares in constant time, and refuses
 * a timestamp more than a few minutes old (docs/internals/alert.md shows how). The HMAC is
 * OpenSSL's.
 *
 * Secrets: url, the secret and header values may be `${ENV}` references or `*_file` paths
 * (klaxon/secret.h); none of them is ever logged (errors name the host at most, via curl).
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "http.h"
#include "klaxon/secret.h"

typedef struct wh_sink {
    kx__sink base;
    kx__http *http;
    char *url;
    char *secret; /* NULL: unsigned */
    struct curl_slist *headers;
    long timeout_ms;
    kx_buf sign; /* timestamp "." body, reused */
} wh_sink;

static const char hexd[] = "0123456789abcdef";

/* headers + X-Klaxon-Timestamp/Signature for body, in a new list; NULL when out of memory. */
static struct curl_slist *signed_headers(wh_sink *w, const char *body, size_t len)
{
    char ts[32];
    snprintf(ts, sizeof(ts), "%lld", (long long)(kx_now_ms() / 1000));
    kx_buf_reset(&w->sign);
    if (kx_buf_puts(&w->sign, ts) || kx_buf_putc(&w->sign, '.') ||
        kx_buf_append(&w->sign, body, len))
        return NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), w->secret, (int)strlen(w->secret), (const unsigned char *)w->sign.data,
              w->sign.len, md, &mdlen))
        return NULL;
    char sig[7 + 2 * EVP_MAX_MD_SIZE + 1] = "sha256=";
    for (unsigned i = 0; i < mdlen; i++) {
        sig[7 + 2 * i] = hexd[md[i] >> 4];
        sig[8 + 2 * i] = hexd[md[i] & 15];
    }
    sig[7 + 2 * mdlen] = '\0';
    struct curl_slist *l = NULL;
    for (const struct curl_slist *h = w->headers; h; h = h->next) {
        struct curl_slist *n = curl_slist_append(l, h->data);
        if (!n) {
            curl_slist_free_all(l);
            return NULL;
        }
        l = n;
    }
    if (kx__http_header(&l, "X-Klaxon-Timestamp", ts) ||
        kx__http_header(&l, "X-Klaxon-Signature", sig)) {
        curl_slist_free_all(l);
        return NULL;
    }
    return l;
}

static void wh_attempt(kx__sink *sink, kx__delivery *d)
{
    wh_sink *w = (wh_sink *)sink;
    const kx__send *s = d->send;
    if (!w->secret) {
        kx__http_post(w->http, d, w->url, w->headers, false, s->payload, s->len, w->timeout_ms);
        return;
    }
    struct curl_slist *h = signed_headers(w, s->payload, s->len);
    if (!h) {
        kx__outcome o = {
            .kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "out of memory signing"};
        kx__attempt_done(d, &o);
        return;
    }
    kx__http_post(w->http, d, w->url, h, true, s->payload, s->len, w->timeout_ms);
}

static void wh_destroy(kx__sink *sink)
{
    wh_sink *w = (wh_sink *)sink;
    kx__http_destroy(w->http);
    curl_slist_free_all(w->headers);
    kx_secret_free(w->url);
    kx_secret_free(w->secret);
    if (w->sign.data)
        explicit_bzero(w->sign.data, w->sign.cap);
    kx_buf_fini(&w->sign);
    kx__sink_base_fini(sink);
    free(w);
}

static const kx__sink_ops wh_ops = {
    .type = "webhook",
    .attempt = wh_attempt,
    .destroy = wh_destroy,
};

static int parse_headers(wh_sink *w, const kx_yaml_node *h, const char *file, kx_err *err)
{
    if (h->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, h, "headers: expected a map of name: value");
    for (size_t i = 0; i < h->n; i++) {
        const kx_yaml_node *k = h->keys[i];
        const char *name;
        int rc;
        if ((rc = kx_yaml_str(k, file, &name, err)))
            return rc;
        /* A CR/LF would let a config value inject headers; ':' would split the name. */
        if (!name[0] || strpbrk(name, ":\r\n \t"))
            return kx_yaml_err(err, file, k, "invalid header name \"%s\"", name);
        /* "Name_file: PATH" is the header Name, its value read from PATH. */
        char hname[256];
        size_t nl = strlen(name);
        if (nl >= sizeof(hname))
            return kx_yaml_err(err, file, k, "header name too long");
        memcpy(hname, name, nl + 1);
        if (nl > 5 && !strcmp(hname + nl - 5, "_file"))
            hname[nl - 5] = '\0';
        char *value = NULL;
        if ((rc = kx_secret_get(h, hname, file, true, &value, err)))
            return rc;
        name = hname;
        if (strpbrk(value, "\r\n")) {
            kx_secret_free(value);
            return kx_yaml_err(err, file, h->vals[i], "header value contains a line break");
        }
        rc = kx__http_header(&w->headers, name, value);
        kx_secret_free(value);
        if (rc)
            return rc;
    }
    return 0;
}

/* url (or url_file), http:// or https:// only; the value is never printed. */
int kx__sink_parse_url(const kx_yaml_node *cfg, const char *file, const char *name, char **out,
                       kx_err *err)
{
    int rc = kx_secret_get(cfg, "url", file, false, out, err);
    if (rc)
        return rc;
    if (!*out)
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"url\" (or \"url_file\")", name);
    if (strncmp(*out, "http://", 7) != 0 && strncmp(*out, "https://", 8) != 0) {
        kx_secret_free(*out);
        *out = NULL;
        const kx_yaml_node *n = kx_yaml_get(cfg, "url");
        return kx_yaml_err(err, file, n ? n : kx_yaml_get(cfg, "url_file"),
                           "url must start with http:// or https://");
    }
    return 0;
}

int kx__sink_parse_timeout(const kx_yaml_node *cfg, const char *file, long *out, kx_err *err)
{
    const kx_yaml_node *n = kx_yaml_get(cfg, "timeout");
    long long v;
    int rc;
    if (!n)
        return 0;
    if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
        return rc;
    if (v <= 0 || v > 3600000)
        return kx_yaml_err(err, file, n, "timeout must be between 1ms and 1h");
    *out = (long)v;
    return 0;
}

static int wh_parse(wh_sink *w, const char *name, const kx_yaml_node *cfg, const char *file,
                    kx_err *err)
{
    static const char *const keys[] = {"type",        "url",          "url_file",
                                       "timeout",     "headers",      "secret",
                                       "secret_file", KX__QUEUE_KEYS, NULL};
    const kx_yaml_node *n;
    int rc;
    if ((n = kx_yaml_get(cfg, "retries")))
        return kx_yaml_err(err, file, n,
                           "sink \"%s\": \"retries\" was replaced by \"retry_for\" (how long "
                           "an alert is retried, default 6h)",
                           name);
    if ((rc = kx_yaml_check_keys(cfg, file, keys, err)) ||
        (rc = kx__sink_parse_url(cfg, file, name, &w->url, err)) ||
        (rc = kx__sink_parse_timeout(cfg, file, &w->timeout_ms, err)) ||
        (rc = kx_secret_get(cfg, "secret", file, false, &w->secret, err)))
        return rc;
    if (w->secret && !w->secret[0])
        return kx_yaml_err(err, file,
                           kx_yaml_get(cfg, "secret") ? kx_yaml_get(cfg, "secret")
                                                      : kx_yaml_get(cfg, "secret_file"),
                           "sink \"%s\": the secret is empty", name);
    /* Expect: off, so a receiver that ignores 100-continue does not cost us a second. */
    if ((rc = kx__http_header(&w->headers, "Content-Type", "application/json")) ||
        (rc = kx__http_header(&w->headers, "Expect", "")))
        return rc;
    if ((n = kx_yaml_get(cfg, "headers")) && (rc = parse_headers(w, n, file, err)))
        return rc;
    return 0;
}

int kx__sink_webhook_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                            const char *file, kx__sink **out, kx_err *err)
{
    int rc;
    wh_sink *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->timeout_ms = 5000;
    kx_buf_init(&w->sign, 0);
    if ((rc = kx__sink_base_init(&w->base, &wh_ops, loop, name)))
        goto fail;
    if ((rc = wh_parse(w, name, cfg, file, err)))
        goto fail;
    if ((rc = kx__http_create(loop, NULL, NULL, &w->http))) {
        kx_yaml_err(err, file, cfg, "sink \"%s\": HTTP client: %s", name, strerror(-rc));
        goto fail;
    }
    *out = &w->base;
    return 0;
fail:
    wh_destroy(&w->base);
    return rc;
}
