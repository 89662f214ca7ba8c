/*
 * The HTTP client of the HTTP sinks (http.c): one POST per attempt, on the loop, its outcome
 * classified for the queue. Private to the alert stage.
 *
 * Ownership: the sink owns its kx__http (create/destroy); destroy reports what is in flight
 * as retryable ("cancelled"), so it stays queued and spooled. Headers are the caller's and
 * must outlive the requests that use them; the body is copied.
 */
#ifndef KX_ALERT_HTTP_H
#define KX_ALERT_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>

#include "alert_int.h"

typedef struct kx__http kx__http;

/* Optional: sees each HTTP answer (status, up to 512 bytes of its body) before it is
 * reported, and may change the outcome (o->kind, o->error pointing into why). */
typedef void (*kx__http_body_fn)(void *ud, long status, const char *body, size_t len,
                                 kx__outcome *o, char *why, size_t whylen);

int kx__http_create(struct ev_loop *loop, kx__http_body_fn body_fn, void *body_ud, kx__http **out);
/* Optional: outcomes go to fn(ud, d, o) instead of kx__attempt_done(d, o) (a sink that sends
 * several deliveries in one request reports them all; email digests). */
typedef void (*kx__http_report_fn)(void *ud, kx__delivery *d, const kx__outcome *o);
void kx__http_set_report(kx__http *h, kx__http_report_fn fn, void *ud);
void kx__http_destroy(kx__http *h);
/* One attempt of d: POST body to url. Reports with kx__attempt_done, never before returning
 * unless the request could not even be started. own_headers: the request frees headers when
 * it ends (a list made for it alone, e.g. signed); otherwise they must outlive it. */
void kx__http_post(kx__http *h, kx__delivery *d, const char *url, struct curl_slist *headers,
                   bool own_headers, const char *body, size_t len, long timeout_ms);
/* One attempt of d as mail: SMTP(S) to url, from, to rcpt (borrowed: must outlive the
 * request), AUTH with user/password when given, msg the whole RFC 5322 message (copied).
 * 2xx at the end is a delivery; a 5xx reply is permanent; 4xx and transport errors retry. */
void kx__http_smtp(kx__http *h, kx__delivery *d, const char *url, const char *from,
                   struct curl_slist *rcpt, const char *user, const char *password, const char *msg,
                   size_t len, long timeout_ms);
/* Appends "name: value" to *list. 0 or -ENOMEM. */
int kx__http_header(struct curl_slist **list, const char *name, const char *value);

#endif
