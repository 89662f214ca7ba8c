/*
 * The HTTP client of the HTTP sinks (webhook, pagerduty, slack): POSTs with libcurl's multi
 * interface driven by the libev loop, the way curl's docs/examples/evhiperfifo.c does it:
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION -> one ev_io per socket) and
 * when to call it back (CURLMOPT_TIMERFUNCTION -> one ev_timer); we call
 * curl_multi_socket_action from those watchers and collect finished transfers with
 * curl_multi_info_read. Nothing here blocks: DNS uses curl's threaded resolver.
 *
 * One kx__http_post is one attempt of a delivery. Its outcome, for the queue (queue.c): a
 * 2xx answer is a delivery; 408, 429, 5xx and transport errors (refused, reset, dropped,
 * timeout) may succeed later (with the receiver's Retry-After, in seconds or as an HTTP date,
 * which curl parses); any other status (400, 401, 403, 404, 3xx: redirects are not followed)
 * will not, and the alert is dead-lettered at once. A sink may look at the answer's body
 * first (kx__http_body_fn: Slack says "ok" or names its error there).
 *
 * Ownership: each attempt is an http_req on the client's list, holding the delivery
 * (borrowed until kx__attempt_done), a copy of the body (CURLOPT_COPYPOSTFIELDS) and, while
 * the request is on the wire, an easy handle. Easy handles come from a small pool so
 * connections' TLS/session state and allocations are reused; the connection cache lives in
 * the multi handle.
 */
#include <curl/curl.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "http.h"

#define HTTP_POOL 4
#define BODY_KEEP 512 /* bytes of an answer's body kept for the sink and the logs */

typedef struct http_sock {
    ev_io io;
    kx__http *sink;
    curl_socket_t fd;
    struct http_sock *prev, *next;
} http_sock;

typedef struct http_req {
    kx__http *sink;
    kx__delivery *d;
    CURL *easy; /* non-NULL while the request is in the multi handle */
    struct http_req *prev, *next;
    struct curl_slist *owned; /* headers made for this request alone */
    bool smtp;                /* an SMTP transfer: outcome by SMTP reply codes */
    char *upload;             /* SMTP: the message, read by curl */
    size_t upload_len, upload_off;
    size_t blen;
    char body[BODY_KEEP + 1];
    char errbuf[CURL_ERROR_SIZE];
} http_req;

struct kx__http {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    int running;
    CURL *pool[HTTP_POOL];
    size_t npool;
    http_req *reqs;
    http_sock *socks;
    kx__http_body_fn body_fn;
    void *body_ud;
    kx__http_report_fn report; /* NULL: kx__attempt_done */
    void *report_ud;
};

void kx__http_set_report(kx__http *w, kx__http_report_fn fn, void *ud)
{
    w->report = fn;
    w->report_ud = ud;
}

static void report(kx__http *w, kx__delivery *d, const kx__outcome *o)
{
    if (w->report)
        w->report(w->report_ud, d, o);
    else
        kx__attempt_done(d, o);
}

/* ---- curl <-> libev glue (evhiperfifo.c) ---- */

static void check_multi_info(kx__http *w);

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    kx__http *w = t->data;
    curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &w->running);
    check_multi_info(w);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called after timeout_ms (-1 = never). Calling
 * socket_action from here is not allowed, so even 0 goes through the loop. */
static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    kx__http *w = userp;
    ev_timer_stop(w->loop, &w->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&w->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(w->loop, &w->timer);
    }
    return 0;
}

static void sock_event_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    http_sock *s = io->data;
    kx__http *w = s->sink;
    int action =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(w->multi, s->fd, action, &w->running);
    /* Unlike evhiperfifo.c, the timer is not stopped when nothing runs: a done callback in
     * check_multi_info may already have added a new transfer and armed it. curl disarms it
     * itself (timeout -1) when it has nothing to time. */
    check_multi_info(w);
}

static void sock_free(kx__http *w, http_sock *s)
{
    ev_io_stop(w->loop, &s->io);
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
    kx__http *w = userp;
    http_sock *s = sockp;
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
        ev_io_stop(w->loop, &s->io);
    }
    int kind = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    s->fd = fd;
    ev_io_init(&s->io, sock_event_cb, fd, kind);
    s->io.data = s;
    ev_io_start(w->loop, &s->io);
    return 0;
}

/* ---- requests ---- */

static size_t keep_body(char *p, size_t size, size_t n, void *ud)
{
    http_req *q = ud;
    size_t len = size * n, room = BODY_KEEP - q->blen;
    if (room) {
        size_t k = len < room ? len : room;
        memcpy(q->body + q->blen, p, k);
        q->blen += k;
        q->body[q->blen] = '\0';
    }
    return len;
}

static void req_free(http_req *q)
{
    kx__http *w = q->sink;
    if (q->prev)
        q->prev->next = q->next;
    else
        w->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    curl_slist_free_all(q->owned);
    free(q->upload);
    free(q);
}

static void easy_release(kx__http *w, CURL *easy)
{
    curl_multi_remove_handle(w->multi, easy);
    if (w->npool < HTTP_POOL) {
        curl_easy_reset(easy);
        w->pool[w->npool++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

/* Ends the attempt: frees q, then reports (the report may start the next attempt). */
static void req_done(http_req *q, const kx__outcome *o)
{
    kx__delivery *d = q->d;
    kx__http *w = q->sink;
    req_free(q);
    report(w, d, o);
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

static void check_multi_info(kx__http *w)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(w->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        http_req *q = NULL;
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
        kx__attempt_kind kind = classify(res, code);
        if (q->smtp) {
            /* SMTP: curl fails the transfer on a refused command; a 5xx reply (no such
             * mailbox, relay denied) will not get better, a 4xx or a transport error may. */
            kind = res == CURLE_OK             ? KX__ATTEMPT_OK
                   : code >= 500 && code < 600 ? KX__ATTEMPT_FAIL
                                               : KX__ATTEMPT_RETRY;
            if (res != CURLE_OK && code)
                snprintf(why + strlen(why), sizeof(why) - strlen(why), " (SMTP %ld)", code);
        }
        kx__outcome o = {.kind = kind,
                         .status = res == CURLE_OK || q->smtp ? code : 0,
                         .retry_after_ms = retry_after > 0 ? (int64_t)retry_after * 1000 : -1,
                         .error = why};
        if (res == CURLE_OK && w->body_fn)
            w->body_fn(w->body_ud, code, q->body, q->blen, &o, why, sizeof(why));
        req_done(q, &o);
    }
}

/* A request for d on a pooled easy handle, in w's list, with what every request sets; NULL
 * (d reported: out of memory) when it cannot be made. */
static http_req *req_begin(kx__http *w, kx__delivery *d, const char *url, long timeout_ms,
                           CURL **easy_out)
{
    http_req *q = calloc(1, sizeof(*q));
    CURL *easy = w->npool ? w->pool[--w->npool] : curl_easy_init();
    if (!q || !easy) {
        free(q);
        if (easy)
            curl_easy_cleanup(easy);
        kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "out of memory"};
        report(w, d, &o);
        return NULL;
    }
    q->sink = w;
    q->d = d;
    q->next = w->reqs;
    if (q->next)
        q->next->prev = q;
    w->reqs = q;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, q->errbuf);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, q);
    *easy_out = easy;
    return q;
}

/* Hands the request to the multi handle; a refusal ends it (retryable). */
static void req_go(kx__http *w, http_req *q, CURL *easy)
{
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

void kx__http_post(kx__http *w, kx__delivery *d, const char *url, struct curl_slist *headers,
                   bool own_headers, const char *body, size_t len, long timeout_ms)
{
    CURL *easy;
    http_req *q = req_begin(w, d, url, timeout_ms, &easy);
    if (!q) {
        if (own_headers)
            curl_slist_free_all(headers);
        return;
    }
    q->owned = own_headers ? headers : NULL;
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "klaxon/0.1");
    req_go(w, q, easy);
}

static size_t read_upload(char *buf, size_t size, size_t n, void *ud)
{
    http_req *q = ud;
    size_t room = size * n, left = q->upload_len - q->upload_off;
    size_t k = left < room ? left : room;
    memcpy(buf, q->upload + q->upload_off, k);
    q->upload_off += k;
    return k;
}

void kx__http_smtp(kx__http *w, kx__delivery *d, const char *url, const char *from,
                   struct curl_slist *rcpt, const char *user, const char *password, const char *msg,
                   size_t len, long timeout_ms)
{
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "out of memory"};
        report(w, d, &o);
        return;
    }
    CURL *easy;
    http_req *q = req_begin(w, d, url, timeout_ms, &easy);
    if (!q) {
        free(copy);
        return;
    }
    memcpy(copy, msg, len);
    q->smtp = true;
    q->upload = copy; /* freed with q */
    q->upload_len = len;
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(easy, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(easy, CURLOPT_MAIL_RCPT, rcpt);
    if (user)
        curl_easy_setopt(easy, CURLOPT_USERNAME, user);
    if (password)
        curl_easy_setopt(easy, CURLOPT_PASSWORD, password);
    curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(easy, CURLOPT_READFUNCTION, read_upload);
    curl_easy_setopt(easy, CURLOPT_READDATA, q);
    req_go(w, q, easy);
}

void kx__http_destroy(kx__http *w)
{
    if (!w)
        return;
    /* Cancelled attempts are reported as retryable: they stay queued (and spooled). */
    while (w->reqs) {
        http_req *q = w->reqs;
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
    ev_timer_stop(w->loop, &w->timer);
    for (size_t i = 0; i < w->npool; i++)
        curl_easy_cleanup(w->pool[i]);
    free(w);
}

int kx__http_create(struct ev_loop *loop, kx__http_body_fn body_fn, void *body_ud, kx__http **out)
{
    static int global_init;
    if (!global_init) {
        /* Once per process, before any thread exists (klaxon is single-threaded). */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -EIO;
        global_init = 1;
    }
    kx__http *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->loop = loop;
    w->body_fn = body_fn;
    w->body_ud = body_ud;
    ev_timer_init(&w->timer, timer_cb, 0., 0.);
    w->timer.data = w;
    if (!(w->multi = curl_multi_init())) {
        free(w);
        return -ENOMEM;
    }
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, multi_sock_cb);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    *out = w;
    return 0;
}

int kx__http_header(struct curl_slist **list, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line)
        return -ENOMEM;
    snprintf(line, n, "%s: %s", name, value);
    struct curl_slist *l = curl_slist_append(*list, line);
    free(line);
    if (!l)
        return -ENOMEM;
    *list = l;
    return 0;
}
