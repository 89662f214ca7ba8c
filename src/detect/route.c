/*
 * Routes: which rules apply to an input, decided once per logsource, never per event.
 *
 * An event carries its input's logsource (product, service, category: configuration, so a
 * stream has a handful of them). The first event of a logsource computes its route: the
 * rules whose logsource filter accepts it (Sigma: a rule's field that is set must equal the
 * event's, case-insensitively), which of them have no trigger atoms and so are evaluated
 * for every event, and which fields and keyword databases the prefilter must scan for them.
 * Later events find the route by comparing three short strings, most recent route first.
 *
 * Bounded: at most KX__MAX_ROUTES routes are kept (a stream with more distinct logsources
 * is a configuration mistake); beyond that the spare route is recomputed for each event,
 * which is correct but slow, and is counted in the stats and logged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    bool *scan = calloc(cs->fx.n ? cs->fx.n : 1, sizeof(bool));
    if (fail || !r->applies || !r->always || !scan) {
        free(scan);
        route_free(r);
        return -ENOMEM;
    }
    const kx__prefilter *pf = &cs->pf;
    for (size_t i = 0; i < cs->n; i++) {
        const kx__detection *d = kx__rule_detection(cs->rules[i]);
        if (!d || !ls_ok(d->product, ev->product) || !ls_ok(d->service, ev->service) ||
            !ls_ok(d->category, ev->category))
            continue;
        r->applies[i / 64] |= 1ull << (i % 64);
        r->napplies++;
        if (!pf->rule_trig[i])
            r->always[i / 64] |= 1ull << (i % 64);
        r->keywords = r->keywords || pf->rule_kw[i];
        for (uint32_t k = 0; k < pf->rule_nfids[i]; k++) {
            uint32_t fid = pf->rule_fids[i][k];
            if (!scan[fid]) {
                scan[fid] = true;
                r->nscan++;
            }
        }
    }
    r->scan = calloc(r->nscan ? r->nscan : 1, sizeof(*r->scan));
    if (!r->scan) {
        free(scan);
        route_free(r);
        return -ENOMEM;
    }
    uint32_t k = 0;
    for (uint32_t f = 0; f < cs->fx.n; f++)
        if (scan[f] && cs->pf.db[f])
            r->scan[k++] = f;
    r->nscan = k;
    free(scan);
    return 0;
}

static bool route_is(const kx__route *r, const kx_event *ev)
{
    return same(r->product, ev->product) && same(r->service, ev->service) &&
           same(r->category, ev->category);
}

const kx__route *kx__route_get(kx__cset *cs, const kx_event *ev)
{
    if (cs->last_route < cs->nroutes && route_is(&cs->routes[cs->last_route], ev))
        return &cs->routes[cs->last_route];
    for (size_t i = 0; i < cs->nroutes; i++) {
        if (route_is(&cs->routes[i], ev)) {
            cs->last_route = i;
            return &cs->routes[i];
        }
    }
    if (cs->nroutes < KX__MAX_ROUTES) {
        if (route_build(cs, ev, &cs->routes[cs->nroutes]) != 0)
            return NULL;
        cs->last_route = cs->nroutes++;
        cs->stats.routes = (uint32_t)cs->nroutes;
        return &cs->routes[cs->last_route];
    }
    static kx_ratelimit rl;
    cs->stats.route_overflows++;
    kx_metric_inc(KX_M_ROUTE_OVERFLOWS);
    kx_log_limited(&rl, KX_LOG_WARN, "detect",
                   "more than %d distinct logsources: rules are routed per event (slow)",
                   KX__MAX_ROUTES);
    route_free(&cs->spare);
    return route_build(cs, ev, &cs->spare) == 0 ? &cs->spare : NULL;
}

void kx__routes_fini(kx__cset *cs)
{
    for (size_t i = 0; i < cs->nroutes; i++)
        route_free(&cs->routes[i]);
    cs->nroutes = 0;
    route_free(&cs->spare);
}
