/*
 * Picking up requeued dead letters (`klaxon alerts retry`, klaxon/deadletter.h): every few
 * seconds, and at start, each file in the spool's requeue/ directory is read in name order;
 * each line's alert is spooled again for the one sink that gave up on it, then the spool is
 * synced and only then the file removed, so a crash in between sends an alert twice at worst,
 * never loses it. A line whose sink is no longer configured goes back to the dead letters. A
 * full spool stops the pass: the lines not yet taken are written back, for the next pass.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert_int.h"
#include "klaxon/deadletter.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One file: 0 when it was taken whole (and removed), -EAGAIN when the spool could not take
 * everything (the rest was written back). */
static int take_file(kx_router *r, const char *path)
{
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    kx_buf data;
    kx_buf_init(&data, 0);
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        kx_buf_append(&data, tmp, n);
    fclose(f);
    len = data.len;
    size_t taken = 0, again = 0;
    int rc = 0;
    const char *rest = NULL;
    for (const char *p = data.data, *nl; p && p < data.data + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(data.data + len - p));
        if (!nl)
            nl = data.data + len;
        if (nl == p)
            continue;
        kx_dead_letter d;
        if (kx_dead_letter_parse(p, (size_t)(nl - p), &d)) {
            kx_log(KX_LOG_ERROR, KX__ALERT_MODULE,
                   "requeue %s: a line is not a dead letter; skipped", path);
            continue;
        }
        rc = kx__router_resend(r, d.sink, d.key, d.alert, d.alert_len);
        if (rc == -ENOENT) {
            kx__router_dead_letter(r, d.sink, "requeued, but its sink is no longer configured",
                                   d.key, d.alert, d.alert_len);
            rc = 0;
        } else if (rc) {
            rest = p;
            kx_dead_letter_free(&d);
            break;
        } else {
            taken++;
        }
        kx_dead_letter_free(&d);
        again++;
    }
    (void)again;
    int src = kx__router_sync(r);
    if (src) {
        kx_buf_fini(&data);
        return src; /* the file stays: everything in it is taken again later (twice at worst) */
    }
    if (rest) {
        char tmpp[4200];
        snprintf(tmpp, sizeof(tmpp), "%s.tmp", path);
        FILE *w = fopen(tmpp, "wb");
        bool ok = w && fwrite(rest, 1, (size_t)(data.data + len - rest), w) ==
                           (size_t)(data.data + len - rest);
        if (w && fclose(w))
            ok = false;
        if (!ok || rename(tmpp, path)) {
            unlink(tmpp);
            kx_log(KX_LOG_ERROR, KX__ALERT_MODULE,
                   "requeue %s: cannot write back what the spool did not take; it is read "
                   "again whole later",
                   path);
        }
    } else if (unlink(path)) {
        kx_log(KX_LOG_ERROR, KX__ALERT_MODULE, "requeue %s: cannot remove: %s", path,
               strerror(errno));
    }
    if (taken)
        kx_log(KX_LOG_INFO, KX__ALERT_MODULE, "requeue %s: %zu dead letter(s) queued again", path,
               taken);
    kx_buf_fini(&data);
    return rest ? -EAGAIN : 0;
}

void kx__requeue_scan(kx_router *r, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return; /* nothing requeued yet */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 6, ".jsonl"))
            continue;
        if (n == cap) {
            char **p = realloc(names, (cap = cap ? cap * 2 : 8) * sizeof(*names));
            if (!p)
                break;
            names = p;
        }
        if (!(names[n] = strdup(de->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_str);
    bool stop = false;
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (!stop && take_file(r, path))
            stop = true; /* keep the order: later files wait for this one */
        free(names[i]);
    }
    free(names);
}
