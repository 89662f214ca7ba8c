/*
 * file source: lines from files (or stdin, "-"), in order, for `klaxon replay`.
 *
 * Memory is fixed at create: one read buffer and one batch store. A batch is built by
 * copying lines from the read buffer into the store and pointing each kx_msg at its copy, so
 * payloads stay valid until kx_source_batch_done while the read buffer moves on. A line is
 * only started when the store has room for a whole capped line (max_line + "\r" + NUL), so
 * a line never straddles two batches and nothing is allocated per line.
 *
 * Delivery is driven by an ev_idle watcher, never from start() itself: the pipeline gets each
 * batch from the loop, and between batches the loop can run whatever the last batch started
 * (async store writes, alert sinks). Reads are blocking (this source is for replay).
 *
 * Invariants: at most one batch is out; payloads live in `store` and are NUL-terminated
 * (a convenience, len is authoritative); the end callback runs exactly once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "source_int.h"

#define KX_FILE_RBUF (64 * 1024)
#define KX_FILE_STORE_MIN (256 * 1024)
#define KX_FILE_MAX_LINE_CAP (64u * 1024 * 1024)
#define KX_FILE_MAX_BATCH 1000000u

typedef struct kx_file_source {
    kx_source base;
    struct ev_loop *loop;
    ev_idle idle;

    char **paths;
    size_t npaths;
    size_t cur;   /* index of the file being read (== npaths: all read) */
    int fd;       /* -1 when no file is open */
    int64_t line; /* line number within the current file */
    /* The current file's modification time (ms): when its last line was written, so no
     * line of it is later -- the reference for a time without a year, and the time of an
     * event that carries none. -1 for stdin or a pipe: the read time instead. */
    int64_t file_ms;

    size_t max_line;
    size_t batch;
    kx_batch_cb cb;
    void *ud;
    kx_source_end_cb end;
    void *end_ud;

    char *rbuf;
    size_t rpos, rlen;

    char *store;
    size_t store_cap, store_len;
    kx_msg *msgs;
    size_t nmsgs;

    /* The line being assembled at store + store_len. */
    size_t line_len;
    bool line_open;
    bool line_overflow;

    bool in_batch;
    bool paused;
    bool stopped;
    bool ended;
} kx_file_source;

static void file_close_current(kx_file_source *fs)
{
    if (fs->fd >= 0 && fs->fd != STDIN_FILENO)
        close(fs->fd);
    fs->fd = -1;
}

/* Opens the next file; false when none is left. A file that cannot be opened now (it was
 * readable at create) is logged and skipped: bad input never stops the stream. */
static bool file_open_next(kx_file_source *fs)
{
    while (fs->cur < fs->npaths) {
        const char *p = fs->paths[fs->cur];
        fs->fd = strcmp(p, "-") ? open(p, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
        fs->line = 0;
        fs->rpos = fs->rlen = 0;
        struct stat st;
        fs->file_ms =
            fs->fd >= 0 && fs->fd != STDIN_FILENO && fstat(fs->fd, &st) == 0 && S_ISREG(st.st_mode)
                ? (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000
                : -1;
        if (fs->fd >= 0)
            return true;
        kx_log(KX_LOG_ERROR, "source", "%s: %s (skipped)", p, strerror(errno));
        fs->cur++;
    }
    return false;
}

/* Turns the assembled bytes into a message: strip one trailing "\r", then apply the cap. */
static void file_finish_line(kx_file_source *fs, int64_t now)
{
    char *p = fs->store + fs->store_len;
    size_t len = fs->line_len;
    bool oversize = fs->line_overflow;
    kx_msg *m = &fs->msgs[fs->nmsgs++];

    if (!oversize && len > 0 && p[len - 1] == '\r')
        len--;
    if (len > fs->max_line) {
        oversize = true;
        len = fs->max_line;
    }
    p[len] = '\0';
    fs->line++;
    *m = (kx_msg){
        .payload = p,
        .len = len,
        .topic = NULL,
        .partition = 0,
        .offset = fs->line,
        .timestamp_ms = fs->file_ms >= 0 ? fs->file_ms : now,
        .oversize = oversize,
    };
    fs->store_len += len + 1;
    fs->line_len = 0;
    fs->line_open = false;
    fs->line_overflow = false;
}

/* Reads until one more line is complete. Returns false when every file is exhausted. */
static bool file_next_line(kx_file_source *fs, int64_t now)
{
    /* Keep one byte past max_line so a "\r" before "\n" can still be stripped. */
    size_t keep = fs->max_line + 1;

    for (;;) {
        if (fs->rpos == fs->rlen) {
            ssize_t n;

            if (fs->fd < 0 && !file_open_next(fs))
                return false;
            n = read(fs->fd, fs->rbuf, KX_FILE_RBUF);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                kx_log(KX_LOG_ERROR, "source", "%s: read: %s", fs->paths[fs->cur], strerror(errno));
            if (n <= 0) {
                /* End of this file: a last line without "\n" is still a line. */
                bool had_line = fs->line_open;
                if (had_line)
                    file_finish_line(fs, now);
                file_close_current(fs);
                fs->cur++;
                if (had_line)
                    return true;
                continue;
            }
            fs->rpos = 0;
            fs->rlen = (size_t)n;
        }

        const char *start = fs->rbuf + fs->rpos;
        size_t avail = fs->rlen - fs->rpos;
        const char *nl = memchr(start, '\n', avail);
        size_t chunk = nl ? (size_t)(nl - start) : avail;
        size_t room = keep - fs->line_len;
        size_t copy = chunk < room ? chunk : room;

        memcpy(fs->store + fs->store_len + fs->line_len, start, copy);
        fs->line_len += copy;
        if (copy < chunk)
            fs->line_overflow = true;
        fs->line_open = true;
        fs->rpos += chunk;
        if (nl) {
            fs->rpos++;
            file_finish_line(fs, now);
            return true;
        }
    }
}

static void file_finish(kx_file_source *fs)
{
    if (fs->ended)
        return;
    fs->ended = true;
    if (fs->end)
        fs->end(fs->end_ud);
}

static void file_idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    kx_file_source *fs = w->data;
    int64_t now = kx_now_ms();
    bool more = true;

    (void)revents;
    ev_idle_stop(loop, w);
    if (fs->stopped || fs->paused || fs->in_batch || fs->ended)
        return;

    /* A line starts only when a whole capped line (+ "\r" + NUL) fits in the store. */
    while (fs->nmsgs < fs->batch && fs->store_cap - fs->store_len >= fs->max_line + 2) {
        more = file_next_line(fs, now);
        if (!more)
            break;
    }
    if (fs->nmsgs > 0) {
        fs->in_batch = true;
        kx_metric_add(KX_M_EVENTS_CONSUMED, fs->nmsgs);
        fs->cb(fs->ud, fs->msgs, fs->nmsgs);
        return;
    }
    if (!more)
        file_finish(fs);
}

static void file_kick(kx_file_source *fs)
{
    if (!fs->stopped && !fs->paused && !fs->in_batch && !fs->ended)
        ev_idle_start(fs->loop, &fs->idle);
}

static void file_start(kx_source *s)
{
    file_kick((kx_file_source *)s);
}

static void file_batch_done(kx_source *s)
{
    kx_file_source *fs = (kx_file_source *)s;

    if (!fs->in_batch)
        return;
    fs->base.offsets_stored += fs->nmsgs;
    fs->in_batch = false;
    fs->nmsgs = 0;
    fs->store_len = 0;
    file_kick(fs);
}

static void file_pause(kx_source *s)
{
    kx_file_source *fs = (kx_file_source *)s;

    if (fs->paused)
        return;
    fs->paused = true;
    kx_metric_inc(KX_M_SOURCE_PAUSES);
    ev_idle_stop(fs->loop, &fs->idle);
}

static void file_resume(kx_source *s)
{
    kx_file_source *fs = (kx_file_source *)s;

    fs->paused = false;
    file_kick(fs);
}

static void file_stop(kx_source *s)
{
    kx_file_source *fs = (kx_file_source *)s;

    if (fs->stopped)
        return;
    fs->stopped = true;
    ev_idle_stop(fs->loop, &fs->idle);
    file_close_current(fs);
    file_finish(fs);
}

static void file_destroy(kx_source *s)
{
    kx_file_source *fs = (kx_file_source *)s;

    ev_idle_stop(fs->loop, &fs->idle);
    file_close_current(fs);
    for (size_t i = 0; i < fs->npaths; i++)
        free(fs->paths[i]);
    free(fs->paths);
    free(fs->rbuf);
    free(fs->store);
    free(fs->msgs);
    free(fs);
}

static const kx__source_ops file_ops = {
    .start = file_start,
    .batch_done = file_batch_done,
    .pause = file_pause,
    .resume = file_resume,
    .stop = file_stop,
    .destroy = file_destroy,
};

int kx_file_source_create(struct ev_loop *loop, const char *const *paths, size_t npaths,
                          size_t max_line, size_t batch, kx_batch_cb cb, void *ud,
                          kx_source_end_cb end, void *end_ud, kx_source **out, kx_err *err)
{
    kx_file_source *fs;

    *out = NULL;
    if (!loop || !cb || (npaths > 0 && !paths))
        return kx_err_set(err, NULL, 0, 0, "file source: missing loop, callback or paths");
    if (max_line == 0 || max_line > KX_FILE_MAX_LINE_CAP)
        return kx_err_set(err, NULL, 0, 0, "file source: max_line must be 1..%u",
                          KX_FILE_MAX_LINE_CAP);
    if (batch == 0 || batch > KX_FILE_MAX_BATCH)
        return kx_err_set(err, NULL, 0, 0, "file source: batch must be 1..%u", KX_FILE_MAX_BATCH);
    /* Fail early on files that cannot be read; they are opened again, in turn, later. */
    for (size_t i = 0; i < npaths; i++) {
        if (strcmp(paths[i], "-") == 0)
            continue;
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return kx_err_set(err, paths[i], 0, 0, "%s", strerror(errno));
        close(fd);
    }

    fs = calloc(1, sizeof(*fs));
    if (!fs)
        goto nomem;
    fs->base.ops = &file_ops;
    fs->loop = loop;
    fs->fd = -1;
    fs->max_line = max_line;
    fs->batch = batch;
    fs->cb = cb;
    fs->ud = ud;
    fs->end = end;
    fs->end_ud = end_ud;
    ev_idle_init(&fs->idle, file_idle_cb);
    fs->idle.data = fs;

    fs->paths = calloc(npaths ? npaths : 1, sizeof(*fs->paths));
    if (!fs->paths)
        goto nomem;
    fs->npaths = npaths;
    for (size_t i = 0; i < npaths; i++) {
        fs->paths[i] = strdup(paths[i]);
        if (!fs->paths[i])
            goto nomem;
    }
    fs->store_cap = KX_FILE_STORE_MIN + max_line + 2;
    fs->rbuf = malloc(KX_FILE_RBUF);
    fs->store = malloc(fs->store_cap);
    fs->msgs = calloc(batch, sizeof(*fs->msgs));
    if (!fs->rbuf || !fs->store || !fs->msgs)
        goto nomem;
    *out = &fs->base;
    return 0;

nomem:
    if (fs)
        file_destroy(&fs->base);
    kx_err_set(err, NULL, 0, 0, "file source: out of memory");
    return -ENOMEM;
}
