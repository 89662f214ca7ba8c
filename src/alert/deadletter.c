/*
 * Dead letters on disk (include/klaxon/deadletter.h): appended under an flock, read and
 * moved to the requeue directory by `klaxon alerts`.
 *
 * Why the writer opens the file for every line: `alerts retry` replaces the file (rename of
 * a rewritten copy), and a descriptor kept open would go on appending to the replaced one,
 * where nobody reads. Dead letters are rare; an open per line costs nothing that matters.
 *
 * Why "alert" is the last member and its bytes are kept raw: a requeued alert must be sent
 * again byte for byte (receivers compare ids and keys), and the line before it cannot contain
 * `,"key":"` other than as structure (every string value is JSON-escaped), so the raw alert
 * is found without re-rendering it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "klaxon/deadletter.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int kx_dead_letter_append(const char *path, const char *sink, const char *reason, unsigned attempts,
                          long status, const char *error, const char *key, const char *alert,
                          size_t alert_len, bool sync, kx_buf *b)
{
    char ts[40];
    kx_time_format(kx_now_ms(), ts, sizeof(ts));
    kx_buf_reset(b);
    int rc = kx_buf_printf(b, "{\"time\":\"%s\",\"sink\":", ts);
    rc = rc ? rc : kx_buf_json_str(b, sink, strlen(sink));
    rc = rc ? rc : kx_buf_puts(b, ",\"reason\":");
    rc = rc ? rc : kx_buf_json_str(b, reason, strlen(reason));
    rc = rc ? rc : kx_buf_printf(b, ",\"attempts\":%u,\"status\":%ld,\"error\":", attempts, status);
    rc = rc ? rc : kx_buf_json_str(b, error, strlen(error));
    rc = rc ? rc : kx_buf_printf(b, ",\"key\":\"%s\",\"alert\":", key);
    rc = rc ? rc : kx_buf_append(b, alert, alert_len);
    rc = rc ? rc : kx_buf_puts(b, "}\n");
    if (rc)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    /* The file may have been replaced while we waited for the lock: write to the new one. */
    struct stat a, p;
    if (fstat(fd, &a) == 0 && (stat(path, &p) != 0 || a.st_ino != p.st_ino)) {
        close(fd);
        return kx_dead_letter_append(path, sink, reason, attempts, status, error, key, alert,
                                     alert_len, sync, b);
    }
    rc = write_all(fd, b->data, b->len);
    if (!rc && sync && fdatasync(fd))
        rc = -errno;
    close(fd); /* releases the lock */
    return rc;
}

static char *dup_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return strdup(s ? s : "");
}

int kx_dead_letter_parse(const char *line, size_t len, kx_dead_letter *out)
{
    memset(out, 0, sizeof(*out));
    const char *at = NULL;
    /* The raw alert: after the structural `,"key":"<32 hex>","alert":`. */
    for (const char *p = line; (p = memmem(p, len - (size_t)(p - line), ",\"key\":\"", 8)); p++) {
        if ((size_t)(p - line) + 8 + 32 + 10 <= len && !memcmp(p + 40, "\",\"alert\":", 10)) {
            at = p + 50;
            break;
        }
    }
    if (!at || len < 2 || line[len - 1] != '}')
        return -EINVAL;
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    if (!json_is_object(o) || !json_is_object(json_object_get(o, "alert"))) {
        json_decref(o);
        return -EINVAL;
    }
    out->time = dup_str(o, "time");
    out->sink = dup_str(o, "sink");
    out->reason = dup_str(o, "reason");
    out->error = dup_str(o, "error");
    out->key = dup_str(o, "key");
    out->attempts = json_integer_value(json_object_get(o, "attempts"));
    out->status = json_integer_value(json_object_get(o, "status"));
    json_t *rule = json_object_get(json_object_get(o, "alert"), "rule");
    const char *rid = json_string_value(json_object_get(rule, "id"));
    out->rule_id = strdup(rid ? rid : "");
    out->alert_len = (size_t)(line + len - 1 - at);
    out->alert = malloc(out->alert_len + 1);
    json_decref(o);
    if (!out->time || !out->sink || !out->reason || !out->error || !out->key || !out->rule_id ||
        !out->alert) {
        kx_dead_letter_free(out);
        return -ENOMEM;
    }
    memcpy(out->alert, at, out->alert_len);
    out->alert[out->alert_len] = '\0';
    return 0;
}

void kx_dead_letter_free(kx_dead_letter *d)
{
    free(d->time);
    free(d->sink);
    free(d->reason);
    free(d->error);
    free(d->key);
    free(d->rule_id);
    free(d->alert);
    memset(d, 0, sizeof(*d));
}

/* Reads the whole file; *data NULL (and 0) when it does not exist. */
static int slurp(int fd, char **data, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st))
        return -errno;
    char *d = malloc((size_t)st.st_size + 1);
    if (!d)
        return -ENOMEM;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, d + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    d[got] = '\0';
    *data = d;
    *len = got;
    return 0;
}

int kx_dead_letters_read(const char *path, void (*cb)(void *ud, const kx_dead_letter *d), void *ud,
                         size_t *bad, kx_err *err)
{
    if (bad)
        *bad = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        kx_err_set(err, path, 0, 0, "cannot open: %s", strerror(errno));
        return rc;
    }
    char *data = NULL;
    size_t len = 0;
    (void)flock(fd, LOCK_SH); /* no half-written line */
    int rc = slurp(fd, &data, &len);
    close(fd);
    if (rc) {
        kx_err_set(err, path, 0, 0, "cannot read: %s", strerror(-rc));
        return rc;
    }
    for (char *p = data, *nl; p < data + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(data + len - p));
        if (!nl)
            nl = data + len;
        if (nl == p)
            continue;
        kx_dead_letter d;
        if (kx_dead_letter_parse(p, (size_t)(nl - p), &d)) {
            if (bad)
                (*bad)++;
            continue;
        }
        cb(ud, &d);
        kx_dead_letter_free(&d);
    }
    free(data);
    return 0;
}

/* Writes data to dir/name through a temporary file, synced, then renamed into place. */
static int write_file_atomic(const char *dir, const char *name, const char *data, size_t len)
{
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, data, len);
    if (!rc && fsync(fd))
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, path))
        rc = -errno;
    if (rc)
        unlink(tmp);
    int dfd = rc ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return rc;
}

int kx_dead_letters_requeue(const char *path, const char *requeue_dir,
                            bool (*select)(void *ud, const kx_dead_letter *d), void *ud,
                            size_t *moved, kx_err *err)
{
    *moved = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        kx_err_set(err, path, 0, 0, "cannot open: %s", strerror(errno));
        return rc;
    }
    if (flock(fd, LOCK_EX)) {
        int rc = -errno;
        close(fd);
        kx_err_set(err, path, 0, 0, "cannot lock: %s", strerror(-rc));
        return rc;
    }
    char *data = NULL;
    size_t len = 0;
    kx_buf keep, take;
    kx_buf_init(&keep, 0);
    kx_buf_init(&take, 0);
    int rc = slurp(fd, &data, &len);
    for (char *p = data, *nl; !rc && p < data + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(data + len - p));
        if (!nl)
            nl = data + len;
        if (nl == p)
            continue;
        kx_dead_letter d;
        bool chosen = false;
        if (kx_dead_letter_parse(p, (size_t)(nl - p), &d) == 0) {
            chosen = select(ud, &d);
            kx_dead_letter_free(&d);
        }
        kx_buf *to = chosen ? &take : &keep;
        rc = kx_buf_append(to, p, (size_t)(nl - p));
        rc = rc ? rc : kx_buf_putc(to, '\n');
        *moved += chosen;
    }
    if (!rc && *moved) {
        char name[96];
        snprintf(name, sizeof(name), "%lld-%d.jsonl", (long long)kx_now_ms(), (int)getpid());
        if (mkdir(requeue_dir, 0700) && errno != EEXIST)
            rc = -errno;
        /* First the requeue file, then the shortened dead letters: a crash between the two
         * sends an alert twice at worst, never loses it. */
        if (!rc)
            rc = write_file_atomic(requeue_dir, name, take.data, take.len);
        if (!rc) {
            char dir[4096];
            snprintf(dir, sizeof(dir), "%s", path);
            char *slash = strrchr(dir, '/');
            const char *base = slash ? slash + 1 : path;
            if (slash)
                *slash = '\0';
            rc = write_file_atomic(slash ? dir : ".", base, keep.data ? keep.data : "", keep.len);
        }
        if (rc)
            kx_err_set(err, path, 0, 0, "requeue failed: %s", strerror(-rc));
    } else if (rc) {
        kx_err_set(err, path, 0, 0, "cannot read: %s", strerror(-rc));
    }
    close(fd);
    free(data);
    kx_buf_fini(&keep);
    kx_buf_fini(&take);
    return rc;
}
