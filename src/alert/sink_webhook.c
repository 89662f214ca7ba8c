/*
 * webhook sink: POSTs the alert JSON to a URL with libcurl's multi interface driven by the
 * libev loop, the way curl's docs/examples/evhiperfifo.c does it: curl tells us which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION -> one ev_io per socket) and when to call it
 * back (CURLMOPT_TIMERFUNCTION -> one ev_timer); we call curl_multi_socket_action from those
 * watchers and collect finished transfers with curl_multi_info_read. Nothing here blocks.
 *
 * One call of attempt is one POST. Its outcome, for the queue (queue.c) to act on: a 2xx
 * answer is a delivery; 408, 429, 5xx and transport errors (refused, reset, timeout) may
 * succeed later (with the receiver's Retry-After, in seconds or as an HTTP date, which curl
 * parses); any other status (400, 401, 404, 3xx: redirects are not followed) will not, and
 * the alert is dead-lettered at once.
 *
 * Ownership: each attempt is a wh_req on the sink's list, holding the delivery (borrowed
 * until kx__attempt_done) and, while the request is on the wire, an easy handle. Easy handles come
 * from a small pool so connections' TLS/session state and allocations are reused; the
 * connection cache itself lives in the multi handle.
 */
#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "klaxon/metrics.h"

#define WH_POOL 4

typedef struct wh_sink wh_sink;

typedef struct wh_sock {
    ev_io io;
    wh_sink *sink;
    curl_socket_t fd;
    struct wh_sock *prev, *next;
} wh_sock;

typedef struct wh_req {
    wh_sink *sink;
    kx__delivery *d;
    CURL *easy; /* non-NULL while the request is in the multi handle */
    struct wh_req *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
} wh_req;

struct wh_sink {
    kx__sink base;
    CURLM *multi;
    ev_timer timer;
    int running;
    char *url;
    struct curl_slist *headers;
    long timeout_ms;
    CURL *pool[WH_POOL];
    size_t npool;
    wh_req *reqs;
    wh_sock *socks;
    kx_ratelimit rl;
};

/* ---- curl <-> libev glue (evhiperfifo.c) ---- */

static void check_multi_info(wh_sink *w);

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    wh_sink *w = t->data;
    curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &w->running);
    check_multi_info(w);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called after timeout_ms (-1 = never). Calling
 * socket_action from here is not allowed, so even 0 goes through the loop. */
static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    wh_sink *w = userp;
    ev_timer_stop(w->base.loop, &w->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&w->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(w->base.loop, &w->timer);
    }
    return 0;
}

static void sock_event_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    wh_sock *s = io->data;
    wh_sink *w = s->sink;
    int action =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(w->multi, s->fd, action, &w->running);
    /* Unlike evhiperfifo.c, the timer is not stopped when nothing runs: a done callback in
     * check_multi_info may already have added a new transfer and armed it. curl disarms it
     * itself (timeout -1) when it has nothing to time. */
    check_multi_info(w);
}

static void sock_free(wh_sink *w, wh_sock *s)
{
    ev_io_stop(w->base.loop, &s->io);
    if (s->prev)
        s->prev->next = s->next;
    else
        w->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl asks, or stop watching it. */
static int multi_sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)e;
    wh_sink *w = userp;
    wh_sock *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s)
            sock_free(w, s);
        curl_multi_assign(w->multi, fd, NULL);
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1; /* curl fails the transfer; it is retried like any transport error */
        s->sink = w;
        s->next = w->socks;
        if (s->next)
            s->next->prev = s;
        w->socks = s;
        curl_multi_assign(w->multi, fd, s);
    } else {
        ev_io_stop(w->base.loop, &s->io);
    }
    int kind = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    s->fd = fd;
    ev_io_init(&s->io, sock_event_cb, fd, kind);
    s->io.data = s;
    ev_io_start(w->base.loop, &s->io);
    return 0;
}

/* ---- requests ---- */

static size_t discard_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static void req_free(wh_req *q)
{
    wh_sink *w = q->sink;
    if (q->prev)
        q->prev->next = q->next;
    else
        w->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    free(q);
}

static void easy_release(wh_sink *w, CURL *easy)
{
    curl_multi_remove_handle(w->multi, easy);
    if (w->npool < WH_POOL) {
        curl_easy_reset(easy);
        w->pool[w->npool++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

/* Ends the attempt: frees q, then reports (the report may start the next attempt). */
static void req_done(wh_req *q, const kx__outcome *o)
{
    kx__delivery *d = q->d;
    req_free(q);
    kx__attempt_done(d, o);
}

/* The outcome of an HTTP status (res == CURLE_OK) or a transport error. */
static kx__attempt_kind classify(CURLcode res, long code)
{
    if (res != CURLE_OK)
        return KX__ATTEMPT_RETRY;
    if (code >= 200 && code < 300)
        return KX__ATTEMPT_OK;
    if (code == 408 || code == 429 || code >= 500)
        return KX__ATTEMPT_RETRY;
    return KX__ATTEMPT_FAIL;
}

static void check_multi_info(wh_sink *w)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(w->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        wh_req *q = NULL;
        long code = 0;
        curl_off_t retry_after = 0;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&q);
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
        if (res == CURLE_OK && (code == 429 || code == 503))
            curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
        q->easy = NULL;
        char why[CURL_ERROR_SIZE + 32];
        if (res != CURLE_OK)
            snprintf(why, sizeof(why), "%s", q->errbuf[0] ? q->errbuf : curl_easy_strerror(res));
        else
            snprintf(why, sizeof(why), "HTTP %ld", code);
        /* The easy handle goes back to the pool before any callback runs, so a report that
         * starts the next attempt can reuse it. */
        easy_release(w, easy);
        kx__outcome o = {.kind = classify(res, code),
                         .status = res == CURLE_OK ? code : 0,
                         .retry_after_ms = retry_after > 0 ? (int64_t)retry_after * 1000 : -1,
                         .error = why};
        req_done(q, &o);
    }
}

static void wh_attempt(kx__sink *sink, kx__delivery *d)
{
    wh_sink *w = (wh_sink *)sink;
    wh_req *q = calloc(1, sizeof(*q));
    CURL *easy = w->npool ? w->pool[--w->npool] : curl_easy_init();
    if (!q || !easy) {
        free(q);
        if (easy)
            curl_easy_cleanup(easy);
        kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "out of memory"};
        kx__attempt_done(d, &o);
        return;
    }
    q->sink = w;
    q->d = d;
    q->next = w->reqs;
    if (q->next)
        q->next->prev = q;
    w->reqs = q;
    curl_easy_setopt(easy, CURLOPT_URL, w->url);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, w->headers);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, (const char *)d->send->payload);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->send->len);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, w->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, q);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "klaxon/0.1");
    CURLMcode mc = curl_multi_add_handle(w->multi, easy);
    if (mc != CURLM_OK) {
        curl_easy_cleanup(easy);
        kx__outcome o = {
            .kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = curl_multi_strerror(mc)};
        req_done(q, &o);
        return;
    }
    q->easy = easy;
}

static void wh_destroy(kx__sink *sink)
{
    wh_sink *w = (wh_sink *)sink;
    /* Cancelled attempts are reported as retryable: they stay queued (and spooled). */
    while (w->reqs) {
        wh_req *q = w->reqs;
        if (q->easy) {
            curl_multi_remove_handle(w->multi, q->easy);
            curl_easy_cleanup(q->easy);
        }
        kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "cancelled"};
        req_done(q, &o);
    }
    if (w->multi)
        curl_multi_cleanup(w->multi);
    /* curl may leave sockets it never told us to remove (closed with the multi handle). */
    while (w->socks)
        sock_free(w, w->socks);
    ev_timer_stop(sink->loop, &w->timer);
    for (size_t i = 0; i < w->npool; i++)
        curl_easy_cleanup(w->pool[i]);
    curl_slist_free_all(w->headers);
    free(w->url);
    kx__sink_base_fini(sink);
    free(w);
}

static const kx__sink_ops wh_ops = {
    .type = "webhook",
    .attempt = wh_attempt,
    .destroy = wh_destroy,
};

static int add_header(wh_sink *w, const char *name, size_t nlen, const char *value)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    int rc = kx_buf_printf(&b, "%.*s: %s", (int)nlen, name, value);
    if (rc == 0) {
        struct curl_slist *l = curl_slist_append(w->headers, b.data);
        if (l)
            w->headers = l;
        else
            rc = -ENOMEM;
    }
    kx_buf_fini(&b);
    return rc;
}

static int parse_headers(wh_sink *w, const kx_yaml_node *h, const char *file, kx_err *err)
{
    if (h->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, h, "headers: expected a map of name: value");
    for (size_t i = 0; i < h->n; i++) {
        const kx_yaml_node *k = h->keys[i];
        const char *name, *value;
        int rc;
        if ((rc = kx_yaml_str(k, file, &name, err)) ||
            (rc = kx_yaml_str(h->vals[i], file, &value, err)))
            return rc;
        /* A CR/LF would let a config value inject headers; ':' would split the name. */
        if (!name[0] || strpbrk(name, ":\r\n \t"))
            return kx_yaml_err(err, file, k, "invalid header name \"%s\"", name);
        if (strpbrk(value, "\r\n"))
            return kx_yaml_err(err, file, h->vals[i], "header value contains a line break");
        if ((rc = add_header(w, name, strlen(name), value)))
            return rc;
    }
    return 0;
}

static int wh_parse(wh_sink *w, const char *name, const kx_yaml_node *cfg, const char *file,
                    kx_err *err)
{
    static const char *const keys[] = {"type", "url", "timeout", "headers", KX__QUEUE_KEYS, NULL};
    const kx_yaml_node *n;
    const char *url;
    long long v;
    int rc;
    if ((n = kx_yaml_get(cfg, "retries")))
        return kx_yaml_err(err, file, n,
                           "sink \"%s\": \"retries\" was replaced by \"retry_for\" (how long "
                           "an alert is retried, default 6h)",
                           name);
    if ((rc = kx_yaml_check_keys(cfg, file, keys, err)))
        return rc;
    if (!(n = kx_yaml_get(cfg, "url")))
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"url\"", name);
    if ((rc = kx_yaml_str(n, file, &url, err)))
        return rc;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return kx_yaml_err(err, file, n, "url must start with http:// or https://");
    if (!(w->url = strdup(url)))
        return -ENOMEM;
    if ((n = kx_yaml_get(cfg, "timeout"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        if (v <= 0 || v > 3600000)
            return kx_yaml_err(err, file, n, "timeout must be between 1ms and 1h");
        w->timeout_ms = (long)v;
    }
    /* Expect: off, so a receiver that ignores 100-continue does not cost us a second. */
    if ((rc = add_header(w, "Content-Type", 12, "application/json")) ||
        (rc = add_header(w, "Expect", 6, "")))
        return rc;
    if ((n = kx_yaml_get(cfg, "headers")) && (rc = parse_headers(w, n, file, err)))
        return rc;
    return 0;
}

int kx__sink_webhook_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                            const char *file, kx__sink **out, kx_err *err)
{
    static int global_init;
    int rc;
    if (!global_init) {
        /* Once per process, before any thread exists (klaxon is single-threaded). */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return kx_yaml_err(err, file, cfg, "sink \"%s\": curl_global_init failed", name);
        global_init = 1;
    }
    wh_sink *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->timeout_ms = 5000;
    ev_timer_init(&w->timer, timer_cb, 0., 0.);
    w->timer.data = w;
    if ((rc = kx__sink_base_init(&w->base, &wh_ops, loop, name)))
        goto fail;
    if ((rc = wh_parse(w, name, cfg, file, err)))
        goto fail;
    if (!(w->multi = curl_multi_init())) {
        rc = -ENOMEM;
        goto fail;
    }
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, multi_sock_cb);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    *out = &w->base;
    return 0;
fail:
    wh_destroy(&w->base);
    return rc;
}
