#include "kx_test.h"

#include <errno.h>
#include <ev.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/common.h"

char *kx_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    size_t n = strlen(base) + strlen(tag) + 32;
    char *p = malloc(n);
    if (!p)
        return NULL;
    snprintf(p, n, "%s/klaxon-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void kx_test_rmrf(const char *path)
{
    if (path)
        nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

char *kx_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    kx_buf b;
    kx_buf_init(&b, 0);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        kx_buf_append(&b, tmp, n);
    fclose(f);
    if (!b.data)
        kx_buf_append(&b, "", 0);
    if (len)
        *len = b.len;
    return b.data;
}

int kx_test_write_file(const char *path, const char *data)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    size_t n = strlen(data);
    int rc = fwrite(data, 1, n, f) == n ? 0 : -EIO;
    if (fclose(f))
        rc = -EIO;
    return rc;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

bool kx_test_run_until(struct ev_loop *loop, bool (*cond)(void *ud), void *ud, int timeout_ms)
{
    int64_t deadline = kx_mono_ms() + timeout_ms;
    /* A short repeating timer bounds each blocking ev_run so the deadline is checked, while
     * I/O still wakes the loop at once (no sleeping, no spinning). */
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    bool ok;
    while (!(ok = cond(ud)) && kx_mono_ms() <= deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return ok;
}
