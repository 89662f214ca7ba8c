/*
 * Test HTTP receiver on libmicrohttpd. One thread per connection (MHD's own), so a request
 * told to hang can simply wait on a condition variable without stalling the others; stop
 * wakes every hung request before MHD joins the threads.
 *
 * Records are kept in arrival order (the order requests finished uploading), at most
 * MAX_RECORDS of them; the counter keeps counting past that.
 */
#include "http_receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_RECORDS 1024
#define MAX_BODY (8u << 20)
#define HANG_MAX_S 60

typedef struct record {
    char *method;
    char *path;
    char *headers; /* "name\0value\0name\0value\0\0" */
    size_t headers_len;
    char *body;
    size_t body_len;
    unsigned status;
    int64_t at_ms; /* CLOCK_MONOTONIC when the request was in */
} record;

struct kx_http_receiver {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    unsigned fail_status, fail_left, hang_left, drop_left;
    char retry_after[64]; /* sent with failure answers when not empty */
    size_t count;
    record *recs;
    size_t nrecs;
};

/* Per-request upload state (MHD's con_cls). */
typedef struct upload {
    char *body;
    size_t len, cap;
    bool too_big;
} upload;

typedef struct hdr_acc {
    char *buf;
    size_t len, cap;
    bool oom;
} hdr_acc;

static void acc_put(hdr_acc *a, const char *s)
{
    size_t n = strlen(s) + 1;
    if (a->oom)
        return;
    if (a->len + n + 1 > a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 256;
        while (nc < a->len + n + 1)
            nc *= 2;
        char *p = realloc(a->buf, nc);
        if (!p) {
            a->oom = true;
            return;
        }
        a->buf = p;
        a->cap = nc;
    }
    memcpy(a->buf + a->len, s, n);
    a->len += n;
    a->buf[a->len] = '\0';
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    hdr_acc *a = cls;
    acc_put(a, key);
    acc_put(a, value ? value : "");
    return MHD_YES;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *retry_after)
{
    static const char ok[] = "ok\n";
    static const char bad[] = "failing on purpose\n";
    const char *body = status == 200 ? ok : bad;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    if (retry_after && retry_after[0])
        MHD_add_response_header(resp, "Retry-After", retry_after);
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *data_size, void **con_cls)
{
    (void)version;
    kx_http_receiver *r = cls;
    upload *u = *con_cls;
    if (!u) {
        u = calloc(1, sizeof(*u));
        if (!u)
            return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*data_size) {
        if (u->len + *data_size > MAX_BODY) {
            u->too_big = true;
        } else {
            if (u->len + *data_size + 1 > u->cap) {
                size_t nc = u->cap ? u->cap : 1024;
                while (nc < u->len + *data_size + 1)
                    nc *= 2;
                char *p = realloc(u->body, nc);
                if (!p)
                    return MHD_NO;
                u->body = p;
                u->cap = nc;
            }
            memcpy(u->body + u->len, data, *data_size);
            u->len += *data_size;
        }
        *data_size = 0;
        return MHD_YES;
    }

    /* The whole request is in: record it, then decide the answer. */
    hdr_acc h = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &h);
    record rec = {
        .method = strdup(method),
        .path = strdup(url),
        .headers = h.buf,
        .headers_len = h.len,
        .body = u->body ? u->body : calloc(1, 1),
        .body_len = u->len,
    };
    if (rec.body)
        rec.body[rec.body_len] = '\0';
    u->body = NULL;

    pthread_mutex_lock(&r->mu);
    size_t idx = r->count++;
    bool hang = false, drop = false;
    unsigned status = 200;
    rec.at_ms = mono_ms();
    if (u->too_big) {
        status = 413;
    } else if (r->drop_left) {
        r->drop_left--;
        drop = true;
        status = 0;
    } else if (r->hang_left) {
        r->hang_left--;
        hang = true;
    } else if (r->fail_left) {
        r->fail_left--;
        status = r->fail_status;
    }
    if (r->nrecs < MAX_RECORDS) {
        rec.status = hang ? 0 : status;
        r->recs[r->nrecs++] = rec;
    } else {
        free(rec.method);
        free(rec.path);
        free(rec.headers);
        free(rec.body);
    }
    if (hang) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += HANG_MAX_S;
        while (!r->stopping) {
            if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
                break;
        }
        status = 503;
        if (idx < r->nrecs)
            r->recs[idx].status = status;
    }
    char ra[sizeof(r->retry_after)];
    memcpy(ra, r->retry_after, sizeof(ra));
    pthread_mutex_unlock(&r->mu);
    if (drop)
        return MHD_NO; /* MHD closes the connection without an answer */
    return answer(c, status, status == 200 ? NULL : ra);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    upload *u = *con_cls;
    if (u) {
        free(u->body);
        free(u);
        *con_cls = NULL;
    }
}

int kx_http_receiver_start(kx_http_receiver **out)
{
    kx_http_receiver *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->recs = calloc(MAX_RECORDS, sizeof(*r->recs));
    if (!r->recs) {
        free(r);
        return -ENOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, handler, r, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, r, MHD_OPTION_END);
    if (!r->d) {
        kx_http_receiver_stop(r);
        return -EADDRNOTAVAIL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(r->d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || !info->port) {
        kx_http_receiver_stop(r);
        return -EADDRNOTAVAIL;
    }
    r->port = info->port;
    *out = r;
    return 0;
}

void kx_http_receiver_stop(kx_http_receiver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->d)
        MHD_stop_daemon(r->d);
    for (size_t i = 0; i < r->nrecs; i++) {
        free(r->recs[i].method);
        free(r->recs[i].path);
        free(r->recs[i].headers);
        free(r->recs[i].body);
    }
    free(r->recs);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

uint16_t kx_http_receiver_port(const kx_http_receiver *r)
{
    return r->port;
}

void kx_http_receiver_url(const kx_http_receiver *r, const char *path, char *out, size_t outlen)
{
    snprintf(out, outlen, "http://127.0.0.1:%u%s", (unsigned)r->port, path ? path : "");
}

void kx_http_receiver_fail_next(kx_http_receiver *r, unsigned status, unsigned n)
{
    pthread_mutex_lock(&r->mu);
    r->fail_status = status;
    r->fail_left = n;
    pthread_mutex_unlock(&r->mu);
}

void kx_http_receiver_drop_next(kx_http_receiver *r, unsigned n)
{
    pthread_mutex_lock(&r->mu);
    r->drop_left = n;
    pthread_mutex_unlock(&r->mu);
}

void kx_http_receiver_retry_after(kx_http_receiver *r, const char *value)
{
    pthread_mutex_lock(&r->mu);
    snprintf(r->retry_after, sizeof(r->retry_after), "%s", value ? value : "");
    pthread_mutex_unlock(&r->mu);
}

int64_t kx_http_receiver_time_ms(kx_http_receiver *r, size_t i)
{
    pthread_mutex_lock(&r->mu);
    int64_t t = i < r->nrecs ? r->recs[i].at_ms : -1;
    pthread_mutex_unlock(&r->mu);
    return t;
}

void kx_http_receiver_hang_next(kx_http_receiver *r, unsigned n)
{
    pthread_mutex_lock(&r->mu);
    r->hang_left = n;
    pthread_mutex_unlock(&r->mu);
}

size_t kx_http_receiver_count(kx_http_receiver *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static char *dup_mem(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

char *kx_http_receiver_body(kx_http_receiver *r, size_t i, size_t *len)
{
    char *s = NULL;
    pthread_mutex_lock(&r->mu);
    if (i < r->nrecs && r->recs[i].body) {
        s = dup_mem(r->recs[i].body, r->recs[i].body_len);
        if (len)
            *len = r->recs[i].body_len;
    }
    pthread_mutex_unlock(&r->mu);
    return s;
}

char *kx_http_receiver_method(kx_http_receiver *r, size_t i)
{
    char *s = NULL;
    pthread_mutex_lock(&r->mu);
    if (i < r->nrecs && r->recs[i].method)
        s = strdup(r->recs[i].method);
    pthread_mutex_unlock(&r->mu);
    return s;
}

char *kx_http_receiver_path(kx_http_receiver *r, size_t i)
{
    char *s = NULL;
    pthread_mutex_lock(&r->mu);
    if (i < r->nrecs && r->recs[i].path)
        s = strdup(r->recs[i].path);
    pthread_mutex_unlock(&r->mu);
    return s;
}

char *kx_http_receiver_header(kx_http_receiver *r, size_t i, const char *name)
{
    char *s = NULL;
    pthread_mutex_lock(&r->mu);
    if (i < r->nrecs && r->recs[i].headers) {
        const char *p = r->recs[i].headers, *end = p + r->recs[i].headers_len;
        while (p < end && !s) {
            const char *k = p;
            const char *v = k + strlen(k) + 1;
            p = v + strlen(v) + 1;
            if (!strcasecmp(k, name))
                s = strdup(v);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return s;
}

unsigned kx_http_receiver_status(kx_http_receiver *r, size_t i)
{
    unsigned st = 0;
    pthread_mutex_lock(&r->mu);
    if (i < r->nrecs)
        st = r->recs[i].status;
    pthread_mutex_unlock(&r->mu);
    return st;
}
