/*
 * Claims (alert_int.h): one page per incident across processes and restarts, and never none.
 *
 * Before a delivery's attempt on a sink that takes claims (the paging sinks by default), the
 * queue asks the state store for the claim "claim:SINK:DEDUP_KEY:f|r" (f firing, r resolved):
 *   - mine (taken, or renewed by this process): the attempt goes ahead; on acknowledgement the
 *     claim becomes "done" for `keep`; a delivery that is dead-lettered releases it, so
 *     another holder of the same alert may try at once;
 *   - held by another process: this delivery asks again when that lease may have run out,
 *     or in 5 s if that is sooner (to see "done" early); it is not an attempt (no retry counted,
 * the circuit breaker untouched). If the holder dies before delivering, its lease runs out and this
 * process sends;
 *   - done: another process (or this one before a restart) delivered it: the delivery ends
 *     as delivered without a send, counted as delivered elsewhere.
 * The lease must outlast one attempt (sink timeouts are seconds; the default lease is 2m).
 * A store that is not connected (a restart: the spool is read back before Redis answers)
 * holds a delivery for at most `wait` (10s), asking again every 500 ms; a store that does
 * not answer after that, or fails, does not hold a page: the attempt goes ahead unclaimed,
 * counted and logged - a possible duplicate, never a missed page.
 *
 * Each store call carries a ticket that names its delivery. kx__claims_destroy (router
 * shutdown) detaches the tickets still out; their callbacks (the store's cancel at its own
 * destroy, or a late reply) then only free them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alert_int.h"
#include "klaxon/store.h"

#define DEFAULT_LEASE_MS (120 * 1000LL)
#define DEFAULT_KEEP_MS (24 * 3600 * 1000LL)
#define DEFAULT_WAIT_MS (10 * 1000LL)
#define HELD_SLACK_MS 50   /* asks again just after the other lease may have run out ... */
#define HELD_POLL_MS 5000  /* ... or this soon, to see "done" without waiting a lease out */
#define STORE_RETRY_MS 500 /* asks again this soon while the store connects */

typedef struct ticket {
    kx__claims *c;   /* NULL once detached */
    kx__delivery *d; /* NULL: nothing waits for the answer (done, release) */
    struct ticket *prev, *next;
} ticket;

struct kx__claims {
    kx__claims_cfg cfg;
    kx_router *router; /* told when a settle answer came (a drain may be waiting for it) */
    kx_store *store;
    char holder[128];
    ticket *out; /* tickets whose answer has not come */
    kx_ratelimit rl;
};

int kx__claims_parse(const kx_yaml_node *n, const char *file, kx__claims_cfg *out, kx_err *err)
{
    static const char *const keys[] = {"lease", "keep", "wait", NULL};
    out->on = true;
    out->lease_ms = DEFAULT_LEASE_MS;
    out->keep_ms = DEFAULT_KEEP_MS;
    out->wait_ms = DEFAULT_WAIT_MS;
    if (!n)
        return 0;
    if (kx_yaml_is(n, "off")) {
        out->on = false;
        return 0;
    }
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "claims: expected off or a map with lease, keep and wait");
    int rc = kx_yaml_check_keys(n, file, keys, err);
    const kx_yaml_node *v;
    long long ms;
    if (!rc && (v = kx_yaml_get(n, "lease"))) {
        if ((rc = kx_yaml_duration_ms(v, file, &ms, err)))
            return rc;
        if (ms < 1000 || ms > 24 * 3600 * 1000LL)
            return kx_yaml_err(err, file, v, "claims.lease must be between 1s and 24h");
        out->lease_ms = ms;
    }
    if (!rc && (v = kx_yaml_get(n, "keep"))) {
        if ((rc = kx_yaml_duration_ms(v, file, &ms, err)))
            return rc;
        if (ms < 1000 || ms > 30 * 86400 * 1000LL)
            return kx_yaml_err(err, file, v, "claims.keep must be between 1s and 30d");
        out->keep_ms = ms;
    }
    if (!rc && (v = kx_yaml_get(n, "wait"))) {
        if ((rc = kx_yaml_duration_ms(v, file, &ms, err)))
            return rc;
        if (ms < 0 || ms > 3600 * 1000LL)
            return kx_yaml_err(err, file, v, "claims.wait must be between 0 and 1h");
        out->wait_ms = ms;
    }
    return rc;
}

kx__claims *kx__claims_create(kx_router *r, const kx__claims_cfg *cfg)
{
    kx__claims *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->router = r;
    c->cfg = *cfg;
    kx__claims_set_holder(c, NULL);
    return c;
}

/* The spool's holder id: DIR/claim-holder, 32 hex digits made once at random. A spool is
 * locked by one process at a time, so the id names "whoever runs on this spool": a restart
 * is the same holder, and two hosts (or containers) never share one by accident. 0, or -errno
 * when it can be neither read nor made. */
static int spool_holder_id(const char *dir, char out[33])
{
    char path[4096];
    if (mkdir(dir, 0700) && errno != EEXIST)
        return -errno;
    snprintf(path, sizeof(path), "%s/claim-holder", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, out, 32);
        close(fd);
        bool ok = n == 32;
        for (int i = 0; ok && i < 32; i++)
            ok = strchr("0123456789abcdef", out[i]) && out[i];
        if (ok) {
            out[32] = '\0';
            return 0;
        }
    }
    uint8_t r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return -EIO;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    bool ok = write(fd, out, 32) == 32 && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

void kx__claims_set_holder(kx__claims *c, const char *spool_dir)
{
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1))
        snprintf(host, sizeof(host), "host");
    char id[33];
    int rc = spool_dir ? spool_holder_id(spool_dir, id) : -ENOENT;
    if (!rc) {
        snprintf(c->holder, sizeof(c->holder), "%.60s:%s", host, id);
        return;
    }
    if (spool_dir)
        kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
               "claims: no holder id in spool %s (%s): this run claims as a new holder, so after "
               "a restart its own unfinished claims wait out their lease",
               spool_dir, strerror(-rc));
    /* Without a spool each start is a new holder: random, so two routers started in one
     * millisecond (tests run two "processes" in one) never share a holder and both page. The
     * clock is the fallback only when the kernel has no randomness to give. */
    uint64_t nonce;
    if (getrandom(&nonce, sizeof(nonce), GRND_NONBLOCK) != (ssize_t)sizeof(nonce)) {
        static uint64_t seq;
        nonce = kx_now_ms() ^ ((uint64_t)kx_mono_ms() << 20) ^ (++seq << 48);
    }
    snprintf(c->holder, sizeof(c->holder), "%.60s/%ld/%016llx", host, (long)getpid(),
             (unsigned long long)nonce);
}

void kx__claims_set_store(kx__claims *c, kx_store *store)
{
    if (c)
        c->store = store;
}

bool kx__claims_apply(const kx__claims *c, const kx__queue *q)
{
    return c && c->cfg.on && c->store && q->cfg.claim;
}

static void unlink_ticket(ticket *t)
{
    if (!t->c)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        t->c->out = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

void kx__claims_destroy(kx__claims *c)
{
    if (!c)
        return;
    for (ticket *t = c->out; t; t = t->next) {
        t->c = NULL;
        t->d = NULL;
    }
    free(c);
}

static void claim_key(const kx__queue *q, const kx__delivery *d, char *out, size_t len)
{
    snprintf(out, len, "claim:%s:%s:%c", q->name, d->send->key, d->send->resolved ? 'r' : 'f');
}

/* Starts the store call; cb's ticket names d (may be NULL). The callback may run before this
 * returns (memory store). Returns the store's error when the call was not made. */
static int call(kx__claims *c, const kx__queue *q, kx__delivery *d, const kx__delivery *of,
                kx_claim_mode mode, kx_claim_cb cb)
{
    char key[400];
    claim_key(q, of, key, sizeof(key));
    ticket *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->c = c;
    t->d = d;
    t->next = c->out;
    if (c->out)
        c->out->prev = t;
    c->out = t;
    kx_claim_op op = {.key = key,
                      .holder = c->holder,
                      .mode = mode,
                      .lease_ms = c->cfg.lease_ms,
                      .keep_ms = of->send->realert_ms ? of->send->realert_ms : c->cfg.keep_ms};
    int rc = kx_store_claim(c->store, &op, cb, t);
    if (rc) {
        unlink_ticket(t);
        free(t);
    }
    return rc;
}

static void unavailable(kx__claims *c, kx__queue *q, kx__delivery *d, int rc)
{
    if ((rc == -EAGAIN || rc == -ENOBUFS) && kx_mono_ms() - d->first_ms < c->cfg.wait_ms) {
        kx__outcome o = {.kind = KX__ATTEMPT_DEFER,
                         .retry_after_ms = STORE_RETRY_MS,
                         .error = "waiting for the state store to claim it"};
        kx__attempt_done(d, &o);
        return;
    }
    q->claim_unavailable++;
    kx_log_limited(&c->rl, KX_LOG_WARN, KX__ALERT_MODULE,
                   "sink %s: alert %s sent without a claim (state store: %s): another klaxon "
                   "may page it too",
                   q->name, d->send->key, strerror(-rc));
    q->sink->ops->attempt(q->sink, d);
}

static void take_cb(void *ud, int status, kx_claim_state st, int64_t ttl_ms)
{
    ticket *t = ud;
    kx__claims *c = t->c;
    kx__delivery *d = t->d;
    unlink_ticket(t);
    free(t);
    if (!c || !d)
        return;
    kx__queue *q = d->q;
    if (q->closing) {
        kx__outcome o = {.kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = "shutdown"};
        kx__attempt_done(d, &o);
        return;
    }
    if (status) {
        unavailable(c, q, d, status);
        return;
    }
    if (st == KX_CLAIM_MINE) {
        d->claimed = true;
        q->claim_taken++;
        q->sink->ops->attempt(q->sink, d);
    } else if (st == KX_CLAIM_HELD) {
        q->claim_held++;
        kx__outcome o = {.kind = KX__ATTEMPT_DEFER,
                         .retry_after_ms = ttl_ms + HELD_SLACK_MS < HELD_POLL_MS
                                               ? ttl_ms + HELD_SLACK_MS
                                               : HELD_POLL_MS,
                         .error = "claimed by another klaxon"};
        kx__attempt_done(d, &o);
    } else {
        q->claim_elsewhere++;
        kx_log_limited(&c->rl, KX_LOG_INFO, KX__ALERT_MODULE,
                       "sink %s: alert %s already delivered (claim done): not sent again", q->name,
                       d->send->key);
        d->elsewhere = true;
        kx__attempt_ok(d);
    }
}

void kx__claims_attempt(kx__claims *c, kx__queue *q, kx__delivery *d)
{
    int rc = call(c, q, d, d, KX_CLAIM_TAKE, take_cb);
    if (rc)
        unavailable(c, q, d, rc);
}

static void settle_cb(void *ud, int status, kx_claim_state st, int64_t ttl_ms)
{
    (void)st;
    (void)ttl_ms;
    ticket *t = ud;
    kx__claims *c = t->c;
    unlink_ticket(t);
    free(t);
    if (c && status && status != -ECANCELED)
        kx_log_limited(&c->rl, KX_LOG_WARN, KX__ALERT_MODULE,
                       "claim not settled (state store: %s): its lease runs out on its own",
                       strerror(-status));
    if (c)
        kx__router_attempt_settled(c->router);
}

bool kx__claims_settling(const kx__claims *c)
{
    return c && c->out;
}

void kx__claims_end(kx__claims *c, kx__queue *q, const kx__delivery *d, bool delivered)
{
    if (!c || !c->store || !d->claimed)
        return;
    int rc = call(c, q, NULL, d, delivered ? KX_CLAIM_DONE : KX_CLAIM_RELEASE, settle_cb);
    if (rc)
        kx_log_limited(&c->rl, KX_LOG_WARN, KX__ALERT_MODULE,
                       "sink %s: alert %s: claim not settled (state store: %s): its lease runs "
                       "out on its own",
                       q->name, d->send->key, strerror(-rc));
}
