/*
 * stderr logging with a per-call-site rate limiter for per-event problems. One thread, so
 * the level and limiter state need no locking.
 */
#include "klaxon/log.h"

#include <stdarg.h>
#include <stdio.h>

#include "klaxon/common.h"

static kx_log_level g_level = KX_LOG_INFO;

void kx_log_set_level(kx_log_level lvl)
{
    g_level = lvl;
}

kx_log_level kx_log_get_level(void)
{
    return g_level;
}

static const char *level_name(kx_log_level lvl)
{
    switch (lvl) {
    case KX_LOG_DEBUG:
        return "DEBUG";
    case KX_LOG_INFO:
        return "INFO";
    case KX_LOG_WARN:
        return "WARN";
    default:
        return "ERROR";
    }
}

/* The format attribute (va_list form) lets -Wformat=2 check callers instead of flagging the
 * vsnprintf below as a non-literal format (clang does; gcc stays quiet either way). */
__attribute__((format(printf, 3, 0))) static void vlog(kx_log_level lvl, const char *module,
                                                       const char *fmt, va_list ap)
{
    char ts[40];
    kx_time_format(kx_now_ms(), ts, sizeof(ts));
    char line[2048];
    int n = snprintf(line, sizeof(line), "%s %-5s [%s] ", ts, level_name(lvl), module);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    /* One fputs per line keeps lines whole when stderr is shared. */
    fprintf(stderr, "%s\n", line);
}

void kx_log(kx_log_level lvl, const char *module, const char *fmt, ...)
{
    if (lvl < g_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, module, fmt, ap);
    va_end(ap);
}

void kx_log_limited(kx_ratelimit *rl, kx_log_level lvl, const char *module, const char *fmt, ...)
{
    if (lvl < g_level)
        return;
    int64_t interval = rl->interval_ms ? rl->interval_ms : 10000;
    uint32_t burst = rl->burst ? rl->burst : 5;
    int64_t now = kx_mono_ms();
    if (rl->window_start == 0 || now - rl->window_start >= interval) {
        if (rl->suppressed)
            kx_log(lvl, module, "%llu similar messages suppressed in the last %llds",
                   (unsigned long long)rl->suppressed, (long long)(interval / 1000));
        rl->window_start = now;
        rl->in_window = 0;
        rl->suppressed = 0;
    }
    if (rl->in_window >= burst) {
        rl->suppressed++;
        return;
    }
    rl->in_window++;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, module, fmt, ap);
    va_end(ap);
}
