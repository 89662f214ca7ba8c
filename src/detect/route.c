/*
 * Routes: which rules apply to an input, decided once per logsource, never per event.
 *
 * An event carries its input's logsource (product, service, category: configuration, so a
 * stream has a handful of them). The first event of a logsource computes its route: the
 * rules whose logsource filter accepts it (Sigma: a rule's field that is set must equal the
 * event's, case-insensitively), which of them have no trigger atoms and so are evaluated
 * for every event, which fields the prefilter must scan for them, and per such field one
 * Hyperscan database of those rules' literal atoms and one of their regex atoms (and one for
 * keywords). That
 * compile is the one pause a new logsource costs (logged with its duration);
 * kx_ruleset_prepare_like builds a reloaded set's routes before it replaces the old one.
 * Later events find the route by comparing three short strings, most recent route first.
 *
 * Bounded: at most KX__MAX_ROUTES routes are kept (a stream with more distinct logsources
 * is a configuration mistake); events of any other logsource are matched by the plain
 * interpreter (match.c): exact, slow, nothing compiled per event, counted and logged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "detect_set.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"

static bool ls_ok(const char *want, const char *have)
{
    return !want || (have && strcasecmp(want, have) == 0);
}

static bool same(const char *a, const char *b)
{
    return a == b || (a && b && strcasecmp(a, b) == 0);
}

static void route_free(kx__route *r)
{
    for (uint32_t k = 0; r->db && k < r->nscan; k++)
        hs_free_database(r->db[k]);
    free(r->db);
    for (uint32_t k = 0; r->rdb && k < r->nscan; k++)
        hs_free_database(r->rdb[k]);
    free(r->rdb);
    for (uint32_t k = 0; r->rx_atoms && k < r->nscan; k++)
        free(r->rx_atoms[k]);
    free(r->rx_atoms);
    free(r->nrx);
    hs_free_database(r->kwdb);
    for (uint32_t k = 0; r->memo && k <= r->nscan; k++)
        free(r->memo[k].slots);
    free(r->memo);
    free(r->product);
    free(r->service);
    free(r->category);
    free(r->applies);
    free(r->always);
    free(r->scan);
    memset(r, 0, sizeof(*r));
}

static char *dup_or_null(const char *s, bool *fail)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *fail = true;
    return d;
}

static int route_build(kx__cset *cs, const kx_event *ev, kx__route *r)
{
    bool fail = false;
    memset(r, 0, sizeof(*r));
    r->product = dup_or_null(ev->product, &fail);
    r->service = dup_or_null(ev->service, &fail);
    r->category = dup_or_null(ev->category, &fail);
    r->applies = calloc(cs->words, sizeof(uint64_t));
    r->always = calloc(cs->words, sizeof(uint64_t));
    const kx__prefilter *pf = &cs->pf;
    bool *use = calloc(pf->natoms ? pf->natoms : 1, sizeof(bool));
    bool *scan = calloc(cs->fx.n ? cs->fx.n : 1, sizeof(bool));
    int rc = 0;
    if (fail || !r->applies || !r->always || !use || !scan) {
        rc = -ENOMEM;
        goto out;
    }
    bool keywords = false;
    for (size_t i = 0; i < cs->n; i++) {
        const kx__detection *d = kx__rule_detection(cs->rules[i]);
        if (!d || !ls_ok(d->product, ev->product) || !ls_ok(d->service, ev->service) ||
            !ls_ok(d->category, ev->category))
            continue;
        r->applies[i / 64] |= 1ull << (i % 64);
        r->napplies++;
        if (!pf->rule_trig[i])
            r->always[i / 64] |= 1ull << (i % 64);
        for (uint32_t k = 0; k < pf->rule_natoms[i]; k++) {
            uint32_t a = pf->rule_atoms[i][k];
            use[a] = true;
            if (pf->atoms[a].fid == KX__FID_KEYWORD)
                keywords = true;
            else if (!scan[pf->atoms[a].fid])
                scan[pf->atoms[a].fid] = true, r->nscan++;
        }
    }
    r->scan = calloc(r->nscan + 1, sizeof(*r->scan));
    r->db = calloc(r->nscan + 1, sizeof(*r->db));
    r->memo = calloc(r->nscan + 1, sizeof(*r->memo));
    r->rdb = calloc(r->nscan + 1, sizeof(*r->rdb));
    r->rx_atoms = calloc(r->nscan + 1, sizeof(*r->rx_atoms));
    r->nrx = calloc(r->nscan + 1, sizeof(*r->nrx));
    if (!r->scan || !r->db || !r->memo || !r->rdb || !r->rx_atoms || !r->nrx) {
        rc = -ENOMEM;
        goto out;
    }
    uint32_t k = 0;
    for (uint32_t f = 0; f < cs->fx.n; f++)
        if (scan[f])
            r->scan[k++] = f;
    /* Only this route's atoms: a Sysmon process event is not scanned for the literals of
     * CloudTrail or proxy rules, and the databases are smaller and faster. */
    kx_err err = {0};
    for (k = 0; k < r->nscan && !rc; k++) {
        rc = kx__prefilter_compile(&cs->pf, use, r->scan[k], &r->db[k], &err);
        if (!rc)
            rc = kx__prefilter_compile_re(&cs->pf, use, r->scan[k], &r->rdb[k], &r->rx_atoms[k],
                                          &r->nrx[k], &err);
        if (rc == -EINVAL && r->nrx[k]) {
            /* Hyperscan refused the field's regexes together (each compiled alone): without
             * their database every one of them counts as hit on every value (scan.c), which
             * costs evaluations, never a match. The route stands. */
            char msg[512];
            kx_err_format(&err, msg, sizeof(msg));
            kx_log(KX_LOG_WARN, "detect",
                   "%s; field %s: its regex rules are evaluated on every event with the field", msg,
                   cs->fx.names[r->scan[k]]);
            memset(&err, 0, sizeof(err));
            rc = 0;
        }
    }
    if (!rc && keywords)
        rc = kx__prefilter_compile(&cs->pf, use, KX__FID_KEYWORD, &r->kwdb, &err);
    if (rc && err.msg[0]) {
        char msg[512];
        kx_err_format(&err, msg, sizeof(msg));
        kx_log(KX_LOG_ERROR, "detect", "%s", msg);
    }
out:
    free(use);
    free(scan);
    if (rc)
        route_free(r);
    return rc;
}

static bool route_is(const kx__route *r, const kx_event *ev)
{
    return same(r->product, ev->product) && same(r->service, ev->service) &&
           same(r->category, ev->category);
}

kx__route *kx__route_get(kx__cset *cs, const kx_event *ev, bool *full)
{
    *full = false;
    if (cs->last_route < cs->nroutes && route_is(&cs->routes[cs->last_route], ev))
        return &cs->routes[cs->last_route];
    for (size_t i = 0; i < cs->nroutes; i++) {
        if (route_is(&cs->routes[i], ev)) {
            cs->last_route = i;
            return &cs->routes[i];
        }
    }
    if (cs->nroutes < KX__MAX_ROUTES) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        kx__route *r = &cs->routes[cs->nroutes];
        if (route_build(cs, ev, r) != 0)
            return NULL;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        kx_log(KX_LOG_INFO, "detect",
               "logsource %s/%s/%s: %u rules apply, %u fields to scan, compiled in %.0f ms",
               ev->product ? ev->product : "-", ev->service ? ev->service : "-",
               ev->category ? ev->category : "-", r->napplies, r->nscan,
               (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
        cs->last_route = cs->nroutes++;
        cs->stats.routes = (uint32_t)cs->nroutes;
        return r;
    }
    static kx_ratelimit rl;
    cs->stats.route_overflows++;
    kx_metric_inc(KX_M_ROUTE_OVERFLOWS);
    kx_log_limited(&rl, KX_LOG_WARN, "detect",
                   "more than %d distinct logsources: events of the others are matched by the "
                   "plain interpreter (exact, slow)",
                   KX__MAX_ROUTES);
    *full = true;
    return NULL;
}

int kx__route_prepare(kx__cset *cs, const char *product, const char *service, const char *category)
{
    kx_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.product = product;
    ev.service = service;
    ev.category = category;
    bool full;
    return kx__route_get(cs, &ev, &full) ? 0 : full ? -ENOSPC : -ENOMEM;
}

void kx__routes_prepare_like(kx__cset *cs, const kx__cset *old)
{
    /* Out of memory: that route is built on first sight instead. */
    for (size_t i = 0; old && i < old->nroutes; i++)
        (void)kx__route_prepare(cs, old->routes[i].product, old->routes[i].service,
                                old->routes[i].category);
}

void kx__routes_fini(kx__cset *cs)
{
    for (size_t i = 0; i < cs->nroutes; i++)
        route_free(&cs->routes[i]);
    cs->nroutes = 0;
}
