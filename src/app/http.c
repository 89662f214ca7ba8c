/*
 * The operator endpoint: GET /metrics and GET /healthz, served by libmicrohttpd on the
 * process's libev loop.
 *
 * MHD runs in "external select" mode with MHD_USE_EPOLL, so it owns one epoll fd holding
 * the listen socket and every connection. The loop watches that single fd (ev_io) and keeps
 * one ev_timer armed from MHD_get_timeout (connection timeouts, and "0" when MHD still has
 * buffered work it could not finish); both call MHD_run, which never blocks. No thread is
 * started, so the render/health callbacks run on the loop thread and may read pipeline
 * state directly.
 *
 * Bounds: at most KX_HTTP_MAX_CONN connections, each idle one closed after
 * KX_HTTP_CONN_TIMEOUT seconds; the render buffer is reused between scrapes and capped.
 */
#include "klaxon/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ev.h>
#include <microhttpd.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"

#define KX_HTTP_MAX_CONN 64
#define KX_HTTP_CONN_TIMEOUT 10
#define KX_HTTP_BODY_MAX (16u * 1024 * 1024)

struct kx_http {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    ev_io io;
    ev_timer timer;
    int port;
    kx_http_render_fn extra;
    kx_http_health_fn health;
    void *ud;
    kx_buf body; /* reused for every response */
};

static const char metrics_type[] = "text/plain; version=0.0.4; charset=utf-8";
static const char text_type[] = "text/plain; charset=utf-8";

__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    kx_log(KX_LOG_WARN, "http", "%s", msg);
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type,
                               const char *body, size_t len, bool allow_get)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (allow_get)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    return respond(conn, status, text_type, text, strlen(text), status == 405);
}

static enum MHD_Result serve_metrics(kx_http *h, struct MHD_Connection *conn)
{
    int rc;

    kx_buf_reset(&h->body);
    rc = kx_metrics_render(&h->body);
    if (!rc && h->extra)
        rc = h->extra(h->ud, &h->body);
    if (rc) {
        kx_log(KX_LOG_ERROR, "http", "rendering /metrics failed: %s", strerror(-rc));
        return respond_text(conn, 500, "metrics rendering failed\n");
    }
    return respond(conn, 200, metrics_type, h->body.len ? h->body.data : "", h->body.len, false);
}

static enum MHD_Result serve_health(kx_http *h, struct MHD_Connection *conn, bool ready_only)
{
    kx_buf_reset(&h->body);
    if (!h->health)
        return respond_text(conn, 200, "ok\n");
    if (h->health(h->ud, ready_only, &h->body)) {
        if (!h->body.len)
            return respond_text(conn, 200, "ok\n");
        /* healthy, with detail lines (the rules in force): "ok" first, for scripts */
        kx_buf detail = h->body;
        kx_buf_init(&h->body, 0);
        kx_buf_puts(&h->body, "ok\n");
        kx_buf_append(&h->body, detail.data, detail.len);
        kx_buf_fini(&detail);
        return respond(conn, 200, text_type, h->body.data, h->body.len, false);
    }
    if (h->body.len == 0)
        kx_buf_puts(&h->body, "unhealthy");
    if (h->body.data[h->body.len - 1] != '\n')
        kx_buf_putc(&h->body, '\n');
    return respond(conn, 503, text_type, h->body.data, h->body.len, false);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    kx_http *h = cls;
    bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (!strcmp(url, "/metrics"))
        return get ? serve_metrics(h, conn) : respond_text(conn, 405, "method not allowed\n");
    if (!strcmp(url, "/healthz") || !strcmp(url, "/readyz"))
        return get ? serve_health(h, conn, url[1] == 'r')
                   : respond_text(conn, 405, "method not allowed\n");
    return respond_text(conn, 404, "not found\n");
}

/* Runs MHD once and re-arms the timer from what MHD wants next. */
static void http_run(kx_http *h)
{
    MHD_UNSIGNED_LONG_LONG ms;

    MHD_run(h->d);
    ev_timer_stop(h->loop, &h->timer);
    if (MHD_get_timeout(h->d, &ms) == MHD_YES) {
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
}

static void http_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    http_run(w->data);
}

static void http_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    http_run(w->data);
}

int kx_http_create(struct ev_loop *loop, const char *addr, int port, kx_http_render_fn extra,
                   kx_http_health_fn health, void *ud, kx_http **out, kx_err *err)
{
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;
    kx_http *h;

    *out = NULL;
    char lit[INET6_ADDRSTRLEN + 2];
    size_t alen;

    if (!addr || !strcmp(addr, "localhost"))
        addr = "127.0.0.1";
    /* "[::1]" as written in HOST:PORT is the literal ::1. */
    alen = strlen(addr);
    if (alen >= 2 && addr[0] == '[' && addr[alen - 1] == ']' && alen - 2 < sizeof(lit)) {
        memcpy(lit, addr + 1, alen - 2);
        lit[alen - 2] = '\0';
        addr = lit;
    }
    if (port < 0 || port > 65535)
        return kx_err_set(err, NULL, 0, 0, "http: port %d out of range", port);
    /* Literals only: resolving a name would block the loop. */
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else {
        return kx_err_set(err, NULL, 0, 0, "http: \"%s\" is not an IP address", addr);
    }
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES)
        return kx_err_set(err, NULL, 0, 0, "http: libmicrohttpd was built without epoll");

    h = calloc(1, sizeof(*h));
    if (!h)
        return kx_err_set(err, NULL, 0, 0, "http: out of memory");
    h->loop = loop;
    h->extra = extra;
    h->health = health;
    h->ud = ud;
    kx_buf_init(&h->body, KX_HTTP_BODY_MAX);

    h->d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handler, h,
        /* The logger goes first so that MHD's own option checks already use it. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, (void *)h, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)KX_HTTP_MAX_CONN,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KX_HTTP_CONN_TIMEOUT, MHD_OPTION_END);
    if (!h->d) {
        /* MHD reports why only through its logger; errno is what bind() left. */
        int e = errno ? errno : EADDRINUSE;
        kx_buf_fini(&h->body);
        free(h);
        kx_err_set(err, NULL, 0, 0, "http: cannot listen on %s port %d: %s", addr, port,
                   strerror(e));
        return -e;
    }
    info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info || info->epoll_fd < 0) {
        MHD_stop_daemon(h->d);
        kx_buf_fini(&h->body);
        free(h);
        return kx_err_set(err, NULL, 0, 0, "http: no epoll fd from libmicrohttpd");
    }

    ev_io_init(&h->io, http_io_cb, info->epoll_fd, EV_READ);
    h->io.data = h;
    ev_io_start(loop, &h->io);
    ev_timer_init(&h->timer, http_timer_cb, 0., 0.);
    h->timer.data = h;
    http_run(h);
    *out = h;
    return 0;
}

void kx_http_destroy(kx_http *h)
{
    if (!h)
        return;
    ev_io_stop(h->loop, &h->io);
    ev_timer_stop(h->loop, &h->timer);
    MHD_stop_daemon(h->d);
    kx_buf_fini(&h->body);
    free(h);
}

int kx_http_port(const kx_http *h)
{
    return h->port;
}
