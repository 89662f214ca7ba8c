/*
 * Live lists (docs/rules.md, "Lists read from Redis"): reads each live list of the rules in
 * force from its Redis set every `refresh`, page by page (SSCAN through the state store, so
 * the loop never waits and a cluster is followed), and swaps the values into the ruleset
 * whole once the last page is in (kx_ruleset_live_list_set). Another system adds a name to
 * the set; within one refresh the rules see it, without a reload.
 *
 * A read that fails (store down, wrong type, over the limits) keeps the values read before;
 * a list never read fails closed in its rules (value.c). Both are counted, logged at a
 * bounded rate and shown in /metrics and /healthz (cli.c). One read per list at a time; a
 * read's pages belong to a `scan` that outlives a reload or teardown until its callback.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"

/* What one read may hold: past it the read fails and the values read before stay. */
#define KX__LIVE_MAX_VALUES 1000000u
#define KX__LIVE_MAX_BYTES (64u << 20)

typedef struct scan {
    kx__livelists *ll; /* NULL: orphaned by a reload or destroy; freed by its callback */
    size_t i;          /* its list */
    kx_buf vals;       /* the members read so far, NUL-ended */
    size_t n;
} scan;

typedef struct slot {
    char *name, *key;
    double refresh_s;
    double started; /* loop time the last read started; -1: never */
    scan *scan;     /* the read in flight */
    uint64_t ok, failed;
    double read_at;   /* wall time of the last good read; 0: never */
    size_t nvalues;   /* values in force after it */
    bool unsupported; /* the store has no sets (memory): never readable */
    char err[160];    /* why the last read failed ("" after a good one) */
} slot;

struct kx__livelists {
    void (*ready_cb)(void *ud); /* once no list waits for its first read */
    void *ready_ud;
    struct ev_loop *loop;
    kx_store *store;
    kx_ruleset *rs;
    slot *slots;
    size_t n;
    ev_timer timer;
    kx_ratelimit rl;
};

static void schedule(kx__livelists *ll);

static void scan_free(scan *sc)
{
    kx_buf_fini(&sc->vals);
    free(sc);
}

/* A failed read is tried again within a second (or its refresh, if shorter). */
#define KX__LIVE_RETRY_S 1.0

static void read_failed(kx__livelists *ll, slot *s, const char *why)
{
    s->failed++;
    if (s->refresh_s > KX__LIVE_RETRY_S)
        s->started = ev_now(ll->loop) - s->refresh_s + KX__LIVE_RETRY_S;
    snprintf(s->err, sizeof(s->err), "%s", why);
    kx_log_limited(&ll->rl, KX_LOG_ERROR, "lists",
                   "list %s: reading Redis set \"%s\" failed: %s; %s", s->name, s->key, why,
                   s->read_at > 0 ? "the values read before stay in force"
                                  : "never read: its rules fail closed");
}

static void on_page(void *ud, int status, const char *cursor, const char *const *members,
                    const size_t *lens, size_t n);

/* Asks for the next page of sc's read (cursor); false when it failed (sc is freed). */
static bool next_page(kx__livelists *ll, scan *sc, const char *cursor)
{
    slot *s = &ll->slots[sc->i];
    int rc = kx_store_set_scan(ll->store, s->key, cursor, on_page, sc);
    if (rc == 0)
        return true;
    s->scan = NULL;
    if (rc == -ENOTSUP) {
        s->unsupported = true;
        read_failed(ll, s,
                    "the state store is in memory: a list backed by Redis needs "
                    "state: redis://...");
    } else {
        read_failed(ll, s, rc == -EAGAIN ? "the state store is down" : strerror(-rc));
    }
    scan_free(sc);
    return false;
}

static void on_page(void *ud, int status, const char *cursor, const char *const *members,
                    const size_t *lens, size_t n)
{
    scan *sc = ud;
    kx__livelists *ll = sc->ll;
    if (!ll) {
        scan_free(sc);
        return;
    }
    slot *s = &ll->slots[sc->i];
    char why[96] = "";
    if (status)
        snprintf(why, sizeof(why), "%s",
                 status == -EPROTO   ? "Redis refused it (not a set?)"
                 : status == -EAGAIN ? "interrupted (the set moved to another node, or Redis "
                                       "went down): read again"
                                     : strerror(-status));
    for (size_t k = 0; !status && k < n; k++) {
        if (memchr(members[k], '\0', lens[k]))
            continue; /* a value with a NUL byte can equal no field value */
        if (sc->n == KX__LIVE_MAX_VALUES || sc->vals.len + lens[k] + 1 > KX__LIVE_MAX_BYTES) {
            snprintf(why, sizeof(why), "more than %u values or %u MiB", KX__LIVE_MAX_VALUES,
                     KX__LIVE_MAX_BYTES >> 20);
            status = -E2BIG;
        } else if (kx_buf_append(&sc->vals, members[k], lens[k]) || kx_buf_putc(&sc->vals, '\0')) {
            snprintf(why, sizeof(why), "out of memory");
            status = -ENOMEM;
        } else {
            sc->n++;
        }
    }
    if (status == -ECANCELED) { /* the store is going away: klaxon stops */
        s->scan = NULL;
        scan_free(sc);
        return;
    }
    if (!status && strcmp(cursor, "0") != 0) {
        if (!next_page(ll, sc, cursor))
            schedule(ll);
        return;
    }
    s->scan = NULL;
    if (!status) {
        status = kx_ruleset_live_list_set(ll->rs, sc->i, sc->vals.data, sc->vals.len, sc->n,
                                          (int64_t)(ev_now(ll->loop) * 1000.0));
        if (status)
            snprintf(why, sizeof(why), "%s", strerror(-status));
    }
    if (status) {
        read_failed(ll, s, why);
    } else {
        kx_live_list info;
        kx_ruleset_live_list(ll->rs, sc->i, &info);
        if (s->read_at == 0 || info.nvalues != s->nvalues)
            kx_log(s->read_at == 0 ? KX_LOG_INFO : KX_LOG_DEBUG, "lists",
                   "list %s: %zu values (Redis set \"%s\")", s->name, info.nvalues, s->key);
        s->ok++;
        s->err[0] = '\0';
        s->read_at = ev_now(ll->loop);
        s->nvalues = info.nvalues;
    }
    scan_free(sc);
    schedule(ll);
    if (ll->ready_cb && !kx__livelists_waiting(ll)) {
        void (*cb)(void *) = ll->ready_cb;
        ll->ready_cb = NULL;
        cb(ll->ready_ud);
    }
}

void kx__livelists_on_ready(kx__livelists *ll, void (*cb)(void *ud), void *ud)
{
    ll->ready_cb = cb;
    ll->ready_ud = ud;
}

/* Starts the reads that are due; the timer then waits for the next one due. */
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    schedule(w->data);
}

static void schedule(kx__livelists *ll)
{
    double now = ev_now(ll->loop), next = INFINITY;
    for (size_t i = 0; i < ll->n; i++) {
        slot *s = &ll->slots[i];
        if (s->unsupported || s->scan)
            continue; /* a read in flight schedules again when it ends */
        if (s->started < 0 || s->started + s->refresh_s <= now) {
            s->started = now;
            scan *sc = calloc(1, sizeof(*sc));
            if (!sc) {
                read_failed(ll, s, "out of memory");
            } else {
                sc->ll = ll;
                sc->i = i;
                kx_buf_init(&sc->vals, 0);
                s->scan = sc;
                next_page(ll, sc, "0");
            }
            if (s->scan || s->unsupported)
                continue;
        }
        if (s->started + s->refresh_s < next)
            next = s->started + s->refresh_s;
    }
    ev_timer_stop(ll->loop, &ll->timer);
    if (isfinite(next)) {
        ev_timer_set(&ll->timer, next - now > 0.001 ? next - now : 0.001, 0);
        ev_timer_start(ll->loop, &ll->timer);
    }
}

/* Orphans the reads in flight (their callbacks free them) and frees the slots. */
static void slots_free(kx__livelists *ll)
{
    for (size_t i = 0; i < ll->n; i++) {
        if (ll->slots[i].scan)
            ll->slots[i].scan->ll = NULL;
        free(ll->slots[i].name);
        free(ll->slots[i].key);
    }
    free(ll->slots);
    ll->slots = NULL;
    ll->n = 0;
}

void kx__livelists_use(kx__livelists *ll, kx_ruleset *rs)
{
    slot *old = ll->slots;
    size_t nold = ll->n;
    size_t n = kx_ruleset_live_lists(rs);
    slot *slots = calloc(n ? n : 1, sizeof(*slots));
    for (size_t i = 0; slots && i < n; i++) {
        kx_live_list info;
        kx_ruleset_live_list(rs, i, &info);
        slot *s = &slots[i];
        s->name = strdup(info.name);
        s->key = strdup(info.key);
        s->refresh_s = (double)info.refresh_ms / 1000.0;
        s->started = -1; /* read at once: the list may have a new key or new file values */
        s->nvalues = info.nvalues;
        /* a list kept by the reload keeps its counters and last read */
        for (size_t j = 0; j < nold; j++)
            if (!strcmp(old[j].name, info.name) && !strcmp(old[j].key, info.key)) {
                s->ok = old[j].ok;
                s->failed = old[j].failed;
                s->read_at = info.loaded_ms ? old[j].read_at : 0;
                memcpy(s->err, old[j].err, sizeof(s->err));
            }
        if (!s->name || !s->key) {
            for (size_t j = 0; j <= i; j++)
                free(slots[j].name), free(slots[j].key);
            free(slots);
            slots = NULL;
        }
    }
    slots_free(ll);
    ll->rs = rs;
    if (!slots) {
        kx_log(KX_LOG_ERROR, "lists", "out of memory: the live lists are not read any more");
        return;
    }
    ll->slots = slots;
    ll->n = n;
    schedule(ll);
}

int kx__livelists_create(struct ev_loop *loop, kx_store *store, kx_ruleset *rs, kx__livelists **out)
{
    kx__livelists *ll = calloc(1, sizeof(*ll));
    if (!ll)
        return -ENOMEM;
    ll->loop = loop;
    ll->store = store;
    ev_timer_init(&ll->timer, on_timer, 0, 0);
    ll->timer.data = ll;
    ll->rl = (kx_ratelimit){.interval_ms = 60000, .burst = 10};
    kx__livelists_use(ll, rs);
    *out = ll;
    return 0;
}

void kx__livelists_destroy(kx__livelists *ll)
{
    if (!ll)
        return;
    ev_timer_stop(ll->loop, &ll->timer);
    slots_free(ll);
    free(ll);
}

bool kx__livelists_waiting(const kx__livelists *ll)
{
    for (size_t i = 0; ll && i < ll->n; i++)
        if (ll->slots[i].read_at == 0 && !ll->slots[i].unsupported)
            return true;
    return false;
}

/* One metric family: its HELP and TYPE, then a line per list (M_OK: two, ok and failed). */
typedef enum { M_VALUES, M_READ_AT, M_OK, M_FAILED } list_metric;

static int render_family(const kx__livelists *ll, const char *name, const char *type,
                         const char *help, list_metric m, kx_buf *out)
{
    int rc = kx_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < ll->n && !rc; i++)
        for (list_metric k = m; k <= (m == M_OK ? M_FAILED : m) && !rc; k++) {
            const slot *s = &ll->slots[i];
            rc = kx_buf_printf(out, "%s{list=\"", name);
            rc = rc ? rc : kx_metrics_put_label(out, s->name);
            rc = rc              ? rc
                 : k == M_VALUES ? kx_buf_printf(out, "\"} %zu\n", s->nvalues)
                 : k == M_READ_AT
                     ? kx_buf_printf(out, "\"} %.3f\n", s->read_at)
                     : kx_buf_printf(out, "\",result=\"%s\"} %llu\n", k == M_OK ? "ok" : "failed",
                                     (unsigned long long)(k == M_OK ? s->ok : s->failed));
        }
    return rc;
}

int kx__livelists_render_metrics(const kx__livelists *ll, kx_buf *out)
{
    if (!ll || !ll->n)
        return 0;
    int rc = render_family(ll, "klaxon_list_values", "gauge",
                           "Values in force per live list (read from its Redis set, with its "
                           "file's).",
                           M_VALUES, out);
    rc = rc ? rc
            : render_family(ll, "klaxon_list_read_timestamp_seconds", "gauge",
                            "When each live list was last read from Redis (0: never; its rules "
                            "fail closed).",
                            M_READ_AT, out);
    return rc ? rc
              : render_family(ll, "klaxon_list_reads_total", "counter",
                              "Reads of live lists from Redis by result (failed: the values read "
                              "before stay).",
                              M_OK, out);
}

void kx__livelists_health_detail(const kx__livelists *ll, kx_buf *out)
{
    double now = ll ? ev_now(ll->loop) : 0;
    for (size_t i = 0; ll && i < ll->n; i++) {
        const slot *s = &ll->slots[i];
        if (s->read_at == 0)
            kx_buf_printf(out,
                          "\nlist %s: never read from Redis set \"%s\"%s%s: its rules fail "
                          "closed",
                          s->name, s->key, s->err[0] ? ": " : "", s->err);
        else if (s->err[0])
            kx_buf_printf(out, "\nlist %s: %zu values read %.0fs ago; the last read failed: %s",
                          s->name, s->nvalues, now - s->read_at, s->err);
    }
}

int kx__livelists_file_values(kx_ruleset *rs, const char *why)
{
    for (size_t i = 0, n = kx_ruleset_live_lists(rs); i < n; i++) {
        kx_live_list l;
        kx_ruleset_live_list(rs, i, &l);
        if (l.loaded_ms)
            continue;
        kx_log(KX_LOG_WARN, "lists",
               "list %s is read from Redis (set \"%s\"), but %s: only the values of its file "
               "are used",
               l.name, l.key, why);
        int rc = kx_ruleset_live_list_set(rs, i, "", 0, 0, (int64_t)(ev_time() * 1000.0));
        if (rc)
            return rc;
    }
    return 0;
}
