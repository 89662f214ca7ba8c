/*
 * Shared small types every stage uses: the error record loaders fill (file:line:col),
 * a growable byte buffer with a cap, and a bump arena for per-event scratch.
 *
 * Ownership: all three live in caller storage (init/fini) or are embedded in their owner.
 * Nothing here allocates per call once warmed up: reset keeps capacity.
 */
#ifndef KLAXON_COMMON_H
#define KLAXON_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Error for loaders (rules, config): printed as "file:line:col: msg" (1-based; 0 = unknown). */
typedef struct kx_err {
    char file[256];
    int line;
    int col;
    char msg[512];
} kx_err;

/* Sets all fields; file may be NULL. Returns -EINVAL so loaders can `return kx_err_set(...)`. */
int kx_err_set(kx_err *err, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Formats "file:line:col: msg" (omits parts that are unknown) into out (always terminated). */
void kx_err_format(const kx_err *err, char *out, size_t outlen);

/* Growable buffer. Grows up to max (0 = unlimited); growth past max fails with -E2BIG. */
typedef struct kx_buf {
    char *data; /* always NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
    size_t max;
} kx_buf;

void kx_buf_init(kx_buf *b, size_t max);
void kx_buf_fini(kx_buf *b);
void kx_buf_reset(kx_buf *b); /* len = 0, keeps memory */
int kx_buf_reserve(kx_buf *b, size_t extra);
int kx_buf_append(kx_buf *b, const void *p, size_t n);
int kx_buf_puts(kx_buf *b, const char *s);
int kx_buf_putc(kx_buf *b, char c);
int kx_buf_printf(kx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* v as 16 lowercase hex digits (what "%016llx" prints), no NUL: ids and hashes per event. */
void kx_hex64(char *out, uint64_t v);
/* The decimal digits of v ("%lld") into out (room for 20), no NUL; returns how many. */
size_t kx_fmt_i64(char *out, int64_t v);
/* Decimal digits of v (what "%lld" / "%llu" print), without printf's cost: the hot paths
 * that write numbers per event (Redis arguments and their RESP framing). */
int kx_buf_put_i64(kx_buf *b, int64_t v);
int kx_buf_put_u64(kx_buf *b, uint64_t v);
/* v as "%.17g" prints it (exact through strtod / Lua's tonumber); integers below 2^53 take a
 * fast path that prints the same digits. */
int kx_buf_put_g17(kx_buf *b, double v);
/* Appends s as a JSON string literal (with quotes), escaping as RFC 8259 requires.
 * Invalid UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON. */
int kx_buf_json_str(kx_buf *b, const char *s, size_t n);

/* Whether the RFC 8259 number s (n bytes of valid grammar, NUL-terminated) is in the range
 * every common parser reads: an integer (no fraction, no exponent) within int64, anything
 * else finite as a double. RFC 8259 lets parsers refuse the others and some do (jansson
 * fails the whole document), so the decoder flags them and the alert writes them as
 * strings. */
bool kx_json_number_in_range(const char *s, size_t n);

/* Length (1..4) of the valid UTF-8 sequence at p (n bytes available), or 0 when the bytes
 * there are not valid UTF-8 (overlongs, surrogates, past U+10FFFF, truncated). */
size_t kx_utf8_seq_len(const unsigned char *p, size_t n);

/* Bump arena: many small allocations freed at once by kx_arena_reset, which keeps the
 * first block so steady-state use allocates nothing. */
typedef struct kx_arena_block kx_arena_block;
typedef struct kx_arena {
    kx_arena_block *head;
    size_t block_size;
} kx_arena;

void kx_arena_init(kx_arena *a, size_t block_size);
void kx_arena_fini(kx_arena *a);
void kx_arena_reset(kx_arena *a);
void *kx_arena_alloc(kx_arena *a, size_t n);                  /* 8-byte aligned; NULL on ENOMEM */
char *kx_arena_strndup(kx_arena *a, const char *s, size_t n); /* NUL-terminated copy */

/* Time helpers. ms since the Unix epoch, UTC. */
int64_t kx_now_ms(void);  /* CLOCK_REALTIME */
int64_t kx_mono_ms(void); /* CLOCK_MONOTONIC */
/* Formats RFC 3339 UTC with milliseconds: "2026-03-29T01:30:00.000Z". out >= 32 bytes. */
void kx_time_format(int64_t ms, char *out, size_t outlen);
/* Days since 1970-01-01 for a proleptic Gregorian date (no libc, no TZ). */
int64_t kx_days_from_civil(int64_t y, unsigned m, unsigned d);

/* 64-bit FNV-1a, for deterministic ids (dedup keys, event identity). */
uint64_t kx_hash64(const void *p, size_t n, uint64_t seed);

#endif
