/*
 * stdout sink: one JSON line per alert, flushed at once so a pipe reader (jq, a log
 * shipper) sees each alert as it happens. Completes synchronously.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"

typedef struct stdout_sink {
    kx__sink base;
    kx_ratelimit rl;
} stdout_sink;

static void stdout_attempt(kx__sink *sink, kx__delivery *d)
{
    stdout_sink *so = (stdout_sink *)sink;
    const kx__send *s = d->send;
    errno = 0;
    if (fwrite(s->payload, 1, s->len, stdout) != s->len || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0) {
        int e = errno ? errno : EIO;
        clearerr(stdout);
        kx_log_limited(&so->rl, KX_LOG_ERROR, KX__ALERT_MODULE, "sink %s: write to stdout: %s",
                       sink->name, strerror(e));
        /* A reader that went away (`klaxon replay | head`) never comes back: retrying would
         * keep the drain, and so the process, waiting forever. */
        kx__outcome o = {.kind = e == EPIPE ? KX__ATTEMPT_FAIL : KX__ATTEMPT_RETRY,
                         .retry_after_ms = -1,
                         .error = strerror(e)};
        kx__attempt_done(d, &o);
        return;
    }
    kx__attempt_ok(d);
}

static void stdout_destroy(kx__sink *sink)
{
    kx__sink_base_fini(sink);
    free(sink);
}

static const kx__sink_ops stdout_ops = {
    .type = "stdout",
    .attempt = stdout_attempt,
    .destroy = stdout_destroy,
};

int kx__sink_stdout_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                           const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type", KX__QUEUE_KEYS, NULL};
    int rc = kx_yaml_check_keys(cfg, file, keys, err);
    if (rc)
        return rc;
    stdout_sink *so = calloc(1, sizeof(*so));
    if (!so)
        return -ENOMEM;
    if ((rc = kx__sink_base_init(&so->base, &stdout_ops, loop, name))) {
        free(so);
        return rc;
    }
    *out = &so->base;
    return 0;
}
