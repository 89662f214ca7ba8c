/*
 * file sink: appends each alert as one JSON line. The file is opened with O_APPEND and each
 * line goes out in a single writev, so concurrent writers (another klaxon, logrotate's
 * copytruncate) never interleave inside a line. A line is acknowledged only once
 * fdatasync says it is on disk. Lines share one fdatasync, at most every SYNC_S (50 ms):
 * each costs 0.4 ms of the loop on the bench machine, and one per alert (or even one per
 * batch) was up to 8 % of a busy `klaxon run`. Nothing waits on it: the alert is already
 * durable in the spool, whose entry the acknowledgement only frees. The queue lets many
 * attempts be in flight for that.
 *
 * No torn line is left for a JSON Lines reader: after a short write (disk full) the file is
 * cut back to where the line began, when nobody else wrote meanwhile; otherwise the next
 * line starts with a newline, so only the torn one is unreadable. Either way the attempt is
 * retried (the queue's backoff), never counted delivered.
 *
 * SIGHUP (kx_router_reopen) reopens the path, so logrotate's create mode works: the old
 * file is closed once renamed away, the new one created. A path that cannot be opened then
 * makes attempts fail (and retry) until it can.
 *
 * The write is synchronous: a local append is short and the alternative (a thread) costs
 * more than it saves at alert rates.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alert_int.h"

#define SYNC_S 0.05 /* the longest a written line waits for its fdatasync */

typedef struct file_sink {
    kx__sink base;
    char *path;
    int fd;
    ev_timer sync_w;
    kx__delivery **unsynced; /* written, waiting for the next fdatasync */
    size_t nunsynced, unsynced_cap;
    bool torn; /* the last write left a partial line that could not be cut back */
    uint64_t write_errors;
    kx_ratelimit rl;
} file_sink;

static int file_open(file_sink *fs)
{
    int fd = open(fs->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (fs->fd >= 0)
        close(fs->fd);
    fs->fd = fd;
    return 0;
}

static void file_failed(file_sink *fs, kx__delivery *d, int e, const char *what)
{
    fs->write_errors++;
    char why[160];
    snprintf(why, sizeof(why), "%s %s: %s", what, fs->path, strerror(e));
    kx_log_limited(&fs->rl, KX_LOG_ERROR, KX__ALERT_MODULE, "sink %s: %s", fs->base.name, why);
    kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = why};
    kx__attempt_done(d, &o);
}

static void file_attempt(kx__sink *sink, kx__delivery *d)
{
    file_sink *fs = (file_sink *)sink;
    const kx__send *s = d->send;
    int rc;
    if (fs->fd < 0 && (rc = file_open(fs))) {
        file_failed(fs, d, -rc, "open");
        return;
    }
    struct stat st;
    off_t before = fstat(fs->fd, &st) == 0 ? st.st_size : -1;
    struct iovec iov[3] = {{(void *)"\n", 1}, {(void *)s->payload, s->len}, {(void *)"\n", 1}};
    int first = fs->torn ? 0 : 1; /* a newline first ends a torn line */
    size_t want = s->len + 1 + (fs->torn ? 1 : 0);
    ssize_t n;
    do {
        n = writev(fs->fd, iov + first, 3 - first);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)want) {
        int e = n < 0 ? errno : ENOSPC;
        if (n > 0) {
            /* Cut the partial line off if it is still the file's end, else end it later. */
            if (before >= 0 && fstat(fs->fd, &st) == 0 && st.st_size == before + n &&
                ftruncate(fs->fd, before) == 0)
                fs->torn = false;
            else
                fs->torn = true;
        }
        file_failed(fs, d, e, n < 0 ? "write to" : "short write to");
        return;
    }
    fs->torn = false;
    if (fs->nunsynced == fs->unsynced_cap) {
        size_t cap = fs->unsynced_cap ? fs->unsynced_cap * 2 : 64;
        kx__delivery **p = realloc(fs->unsynced, cap * sizeof(*p));
        if (!p) {
            /* Written but cannot wait for the group sync: sync it alone. */
            if (fdatasync(fs->fd))
                file_failed(fs, d, errno, "fdatasync of");
            else
                kx__attempt_ok(d);
            return;
        }
        fs->unsynced = p;
        fs->unsynced_cap = cap;
    }
    fs->unsynced[fs->nunsynced++] = d;
    if (!ev_is_active(&fs->sync_w)) {
        ev_timer_set(&fs->sync_w, SYNC_S, 0.);
        ev_timer_start(fs->base.loop, &fs->sync_w);
    }
}

/* One fdatasync for every line written since the last, then their reports. */
static void sync_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    file_sink *fs = w->data;
    ev_timer_stop(loop, w);
    int e = fs->fd >= 0 && fdatasync(fs->fd) ? errno : 0;
    /* Reports may start new attempts, which append to a list of their own: detach this one
     * first, so none of them overwrites a delivery not reported yet. */
    kx__delivery **list = fs->unsynced;
    size_t n = fs->nunsynced;
    fs->unsynced = NULL;
    fs->nunsynced = fs->unsynced_cap = 0;
    for (size_t i = 0; i < n; i++) {
        if (e)
            file_failed(fs, list[i], e, "fdatasync of");
        else
            kx__attempt_ok(list[i]);
    }
    free(list);
}

static void file_reopen(kx__sink *sink)
{
    file_sink *fs = (file_sink *)sink;
    /* Lines written to the old file are synced (and reported) before it is let go. */
    if (fs->nunsynced)
        sync_cb(sink->loop, &fs->sync_w, 0);
    int rc = file_open(fs);
    if (rc) {
        kx_log(KX_LOG_ERROR, KX__ALERT_MODULE,
               "sink %s: reopen of %s failed: %s; alerts wait and are retried", sink->name,
               fs->path, strerror(-rc));
        if (fs->fd >= 0)
            close(fs->fd);
        fs->fd = -1;
        return;
    }
    fs->torn = false;
    kx_log(KX_LOG_INFO, KX__ALERT_MODULE, "sink %s: %s reopened", sink->name, fs->path);
}

static void file_destroy(kx__sink *sink)
{
    file_sink *fs = (file_sink *)sink;
    /* Written lines waiting for their sync: sync and report them now. */
    if (fs->nunsynced)
        sync_cb(sink->loop, &fs->sync_w, 0);
    ev_timer_stop(sink->loop, &fs->sync_w);
    free(fs->unsynced);
    if (fs->fd >= 0)
        close(fs->fd);
    free(fs->path);
    kx__sink_base_fini(sink);
    free(fs);
}

static const kx__sink_ops file_ops = {
    .type = "file",
    .attempt = file_attempt,
    .reopen = file_reopen,
    .destroy = file_destroy,
};

int kx__sink_file_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                         const char *file, kx__sink **out, kx_err *err)
{
    static const char *const keys[] = {"type", "path", KX__QUEUE_KEYS, NULL};
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
    ev_timer_init(&fs->sync_w, sync_cb, SYNC_S, 0.);
    fs->sync_w.data = fs;
    if ((rc = kx__sink_base_init(&fs->base, &file_ops, loop, name)))
        goto fail;
    if (!(fs->path = strdup(path))) {
        rc = -ENOMEM;
        goto fail;
    }
    if (kx__sinks_dry_run) {
        /* Checking only: the file must be creatable, nothing is created. */
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        if (kx__sinks_check_files && access(path, W_OK) &&
            access(slash ? (dir[0] ? dir : "/") : ".", W_OK)) {
            rc = kx_yaml_err(err, file, p, "sink \"%s\": cannot write \"%s\": %s", name, path,
                             strerror(errno));
            goto fail;
        }
        *out = &fs->base;
        return 0;
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
