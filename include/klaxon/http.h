/*
 * http: the operator endpoint, GET /metrics (Prometheus text), GET /healthz (can it do its
 * job: 503 with the reasons when not) and GET /readyz (for orchestrators: started and not
 * paused by its own limits).
 *
 * libmicrohttpd runs on the caller's libev loop with no thread of its own: the daemon uses
 * epoll, the loop watches MHD's epoll fd and arms a timer from MHD_get_timeout, and both
 * call MHD_run. Responses are rendered on the loop thread, so the callbacks may read any
 * pipeline state without locks.
 *
 * Ownership: kx_http_create returns a new endpoint the caller frees with kx_http_destroy
 * (which stops its watchers and closes every connection). ud is borrowed for the
 * endpoint's lifetime.
 */
#ifndef KLAXON_HTTP_H
#define KLAXON_HTTP_H

#include <stdbool.h>

#include "klaxon/common.h"

struct ev_loop;

typedef struct kx_http kx_http;

/* Appends extra Prometheus text (per-rule counters) after the process counters.
 * Returns 0 or a negative errno (the scrape then fails with 500). */
typedef int (*kx_http_render_fn)(void *ud, kx_buf *out);
/* Returns true when healthy (ready_only: ready, for /readyz); otherwise appends a short
 * reason (one line) to reason. */
typedef bool (*kx_http_health_fn)(void *ud, bool ready_only, kx_buf *reason);

/*
 * Listens on addr and port (0 = ephemeral, see kx_http_port). addr is an IPv4 or IPv6
 * literal ("[::1]" accepted), "localhost" (= 127.0.0.1) or NULL (= 127.0.0.1); other names
 * are refused, since resolving them would block the loop. extra and health may be NULL (no extra
 * metrics; always healthy). Returns 0, or -EINVAL / -EADDRINUSE-style errors with err set.
 */
int kx_http_create(struct ev_loop *loop, const char *addr, int port, kx_http_render_fn extra,
                   kx_http_health_fn health, void *ud, kx_http **out, kx_err *err);
void kx_http_destroy(kx_http *h);
/* The bound port (the real one when created with port 0). */
int kx_http_port(const kx_http *h);

#endif
