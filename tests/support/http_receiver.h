/*
 * A small real HTTP server for tests (libmicrohttpd, its own threads) on 127.0.0.1 and a
 * free port. It records every request (method, path, headers, body, arrival time) and
 * answers 200 "ok", unless told to fail on purpose: answer a given status (with a
 * Retry-After if asked) for the next N requests, hang (hold the request without answering)
 * for the next N requests, or drop the connection of the next N requests.
 *
 * Thread-safe: the test's thread reads records while the server's threads write them; the
 * getters return malloc'd copies the caller frees.
 */
#ifndef KX_HTTP_RECEIVER_H
#define KX_HTTP_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

typedef struct kx_http_receiver kx_http_receiver;

/* Starts the server. Returns 0 or a negative errno (then *out is untouched). */
int kx_http_receiver_start(kx_http_receiver **out);
/* Answers any hung requests with 503, stops the server and frees it. NULL is fine. */
void kx_http_receiver_stop(kx_http_receiver *r);

uint16_t kx_http_receiver_port(const kx_http_receiver *r);
/* Writes "http://127.0.0.1:PORT<path>" into out. */
void kx_http_receiver_url(const kx_http_receiver *r, const char *path, char *out, size_t outlen);

/* The next n requests are answered with status (e.g. 500, 503) instead of 200. */
void kx_http_receiver_fail_next(kx_http_receiver *r, unsigned status, unsigned n);
/* The next n requests get no answer until the server stops (or 60 s pass), so the client
 * times out. Applied before fail_next. */
void kx_http_receiver_hang_next(kx_http_receiver *r, unsigned n);

/* The next n requests are answered by closing the connection (no status line). Applied
 * before hang_next and fail_next. */
void kx_http_receiver_drop_next(kx_http_receiver *r, unsigned n);
/* Failure answers (fail_next) carry "Retry-After: value" ("2", or an HTTP date); NULL or ""
 * for none. */
void kx_http_receiver_retry_after(kx_http_receiver *r, const char *value);
/* CLOCK_MONOTONIC milliseconds (kx_mono_ms's clock) when the i-th request was in; -1 if none. */
int64_t kx_http_receiver_time_ms(kx_http_receiver *r, size_t i);

/* Requests received in full so far (whatever they were answered, hung ones included). */
size_t kx_http_receiver_count(kx_http_receiver *r);
/* The i-th request (0-based, in arrival order); NULL when there is no such request.
 * Each returns a new NUL-terminated copy the caller frees. */
char *kx_http_receiver_body(kx_http_receiver *r, size_t i, size_t *len);
char *kx_http_receiver_method(kx_http_receiver *r, size_t i);
char *kx_http_receiver_path(kx_http_receiver *r, size_t i);
/* Header value by name (case-insensitive), NULL when absent. */
char *kx_http_receiver_header(kx_http_receiver *r, size_t i, const char *name);
/* Status the i-th request was answered with (0 while hung or unknown). */
unsigned kx_http_receiver_status(kx_http_receiver *r, size_t i);

#endif
