/*
 * file sink: appends each alert as one JSON line. The file is opened once with O_APPEND and
 * each line goes out in a single writev, so concurrent writers (another klaxon, logrotate's
 * copytruncate) never interleave inside a line. A failed write is counted, logged
 * (rate-limited) and reported to the router, which dead-letters the alert.
 *
 * The write is synchronous: a local append is short and the alternative (a thread) costs
 * more than it saves at alert rates. Reopen on SIGHUP is not implemented yet.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alert_int.h"

typedef struct file_sink {
    kx__sink base;
    char *path;
    int fd;
    uint64_t write_errors;
    kx_ratelimit rl;
} file_sink;

static void file_deliver(kx__sink *sink, kx__send *s)
{
    file_sink *fs = (file_sink *)sink;
    struct iovec iov[2] = {{s->payload, s->len}, {(void *)"\n", 1}};
    size_t want = s->len + 1;
    ssize_t n;
    do {
        n = writev(fs->fd, iov, 2);
    } while (n < 0 && errno == EINTR);
    int rc = 0;
    if (n < 0)
        rc = -errno;
    else if ((size_t)n != want)
        rc = -EIO; /* short write (disk full): the line is torn, report it */
    if (rc) {
        fs->write_errors++;
        kx_log_limited(&fs->rl, KX_LOG_ERROR, KX__ALERT_MODULE, "sink %s: write to %s: %s",
                       sink->name, fs->path, n < 0 ? strerror(-rc) : "short write");
    }
    kx__send_finish(s, sink, rc);
}

static void file_destroy(kx__sink *sink)
{
    file_sink *fs = (file_sink *)sink;
    if (fs->fd >= 0)
        close(fs->fd);
    free(fs->path);
    kx__sink_base_fini(sink);
    free(fs);
}

static const kx__sink_ops file_ops = {
    .type = "file",
    .deliver = file_deliver,
    .destroy = file_destroy,
};

int kx__sink_file_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                         const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type", "path", NULL};
    const char *path;
    int rc = kx_yaml_check_keys(cfg, file, keys, err);
    if (rc)
        return rc;
    const kx_yaml_node *p = kx_yaml_get(cfg, "path");
    if (!p)
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"path\"", name);
    if ((rc = kx_yaml_str(p, file, &path, err)))
        return rc;
    file_sink *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return -ENOMEM;
    fs->fd = -1;
    if ((rc = kx__sink_base_init(&fs->base, &file_ops, loop, name)))
        goto fail;
    if (!(fs->path = strdup(path))) {
        rc = -ENOMEM;
        goto fail;
    }
    fs->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fs->fd < 0) {
        rc = kx_yaml_err(err, file, p, "sink \"%s\": cannot open \"%s\": %s", name, path,
                         strerror(errno));
        goto fail;
    }
    *out = &fs->base;
    return 0;
fail:
    file_destroy(&fs->base);
    return rc;
}
