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

static void stdout_deliver(kx__sink *sink, kx__send *s)
{
    stdout_sink *so = (stdout_sink *)sink;
    int rc = 0;
    errno = 0;
    if (fwrite(s->payload, 1, s->len, stdout) != s->len || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0) {
        rc = errno ? -errno : -EIO;
        clearerr(stdout);
        kx_log_limited(&so->rl, KX_LOG_ERROR, KX__ALERT_MODULE, "sink %s: write to stdout: %s",
                       sink->name, strerror(-rc));
    }
    kx__send_finish(s, sink, rc);
}

static void stdout_destroy(kx__sink *sink)
{
    kx__sink_base_fini(sink);
    free(sink);
}

static const kx__sink_ops stdout_ops = {
    .type = "stdout",
    .deliver = stdout_deliver,
    .destroy = stdout_destroy,
};

int kx__sink_stdout_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                           const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type", NULL};
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
