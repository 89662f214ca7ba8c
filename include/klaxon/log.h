/*
 * Logging to stderr: one line per message, "TIME LEVEL [module] message".
 * kx_log_limited() is for per-event problems (malformed input): it lets at most `burst`
 * lines through per interval and then says how many it suppressed, so bad input can
 * never flood the log.
 */
#ifndef KLAXON_LOG_H
#define KLAXON_LOG_H

#include <stdint.h>

typedef enum { KX_LOG_DEBUG, KX_LOG_INFO, KX_LOG_WARN, KX_LOG_ERROR } kx_log_level;

void kx_log_set_level(kx_log_level lvl);
kx_log_level kx_log_get_level(void);
void kx_log(kx_log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Rate limiter state, embedded by its owner (zero-initialise, then set interval/burst). */
typedef struct kx_ratelimit {
    int64_t interval_ms; /* 0 means 10000 */
    uint32_t burst;      /* 0 means 5 */
    int64_t window_start;
    uint32_t in_window;
    uint64_t suppressed;
} kx_ratelimit;

void kx_log_limited(kx_ratelimit *rl, kx_log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
