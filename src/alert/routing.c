/*
 * The routing table (docs/internals/alert.md, "Routes"): which sinks an alert goes to,
 * decided from the alert's own fields, in order.
 *
 *   routes:
 *     - match: {severity: [critical, error]}         # every key must match; a list: any
 *       when_not: {timezone: Europe/Madrid, days: [mon-fri], from: "09:00", to: "18:00"}
 *       sinks: [pager]
 *       continue: true                               # go on with the next routes
 *     - match: {team: secops, tags: "attack.t1110"}
 *       sinks: [chat]
 *     - default: true                                # required: what nothing else matched
 *       sinks: [audit]
 *
 * Match keys: team, severity (critical/error/warning/info), level (the Sigma level), tenant,
 * category, rule (the rule id), status (firing/resolved) and tags (any of the alert's tags).
 * Values are shell globs (fnmatch: `attack.t1*`). `when` / `when_not` are time-of-day
 * windows (klaxon/timeofday.h) judged on the wall clock at routing time: paging is about
 * who is awake now, not when the events happened. The first route that matches takes the
 * alert, unless it says `continue`, in which case later matching routes add their sinks (a
 * sink is sent one copy). No match: the default route.
 *
 * The older form `- team: NAME` is kept: it is `match: {team: NAME}`, and `team: default`
 * is the default route.
 *
 * Ownership: kx__routing owns its routes; routes name sinks by index into the router's.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "klaxon/timeofday.h"

enum { F_TEAM, F_SEVERITY, F_LEVEL, F_TENANT, F_CATEGORY, F_RULE, F_STATUS, F_TAGS, F__N };
static const char *const field_names[F__N] = {"team",     "severity", "level",  "tenant",
                                              "category", "rule",     "status", "tags"};

typedef struct match {
    int field;
    char **values;
    size_t n;
} match;

typedef struct route {
    int line, col;
    match *m;
    size_t nm;
    kx_timeofday *when;
    bool when_not;
    bool cont, is_default;
    char *legacy_team; /* the `team:` form, for its duplicate check */
    uint16_t *sinks;
    size_t nsinks;
    bool has_flood;     /* its own `flood:` (else the default) */
    int64_t realert_ms; /* its own `realert:`, 0 = alerting.claims.keep */
    kx__flood_cfg flood;
} route;

struct kx__routing {
    route *r;
    size_t n;
    route *dflt;
};

static void route_fini(route *rt)
{
    for (size_t i = 0; i < rt->nm; i++) {
        for (size_t k = 0; k < rt->m[i].n; k++)
            free(rt->m[i].values[k]);
        free(rt->m[i].values);
    }
    free(rt->m);
    kx_timeofday_destroy(rt->when);
    free(rt->legacy_team);
    free(rt->sinks);
}

void kx__routing_destroy(kx__routing *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        route_fini(&t->r[i]);
    free(t->r);
    free(t);
}

static int add_value(match *m, const char *v)
{
    char **p = realloc(m->values, (m->n + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    m->values = p;
    if (!(m->values[m->n] = strdup(v)))
        return -ENOMEM;
    m->n++;
    return 0;
}

static int parse_match(route *rt, const kx_yaml_node *n, const char *file, kx_err *err)
{
    if (n->type != KX_YAML_MAP || n->n == 0)
        return kx_yaml_err(err, file, n, "match: expected a map of field: value (or list)");
    if (!(rt->m = calloc(n->n, sizeof(*rt->m))))
        return -ENOMEM;
    for (size_t i = 0; i < n->n; i++) {
        match *m = &rt->m[rt->nm++];
        m->field = -1;
        for (int f = 0; f < F__N; f++)
            if (kx_yaml_is(n->keys[i], field_names[f]))
                m->field = f;
        if (m->field < 0)
            return kx_yaml_err(err, file, n->keys[i],
                               "match: unknown field \"%s\" (expected team, severity, level, "
                               "tenant, category, rule, status or tags)",
                               n->keys[i]->type == KX_YAML_SCALAR ? n->keys[i]->str : "");
        const kx_yaml_node *v = n->vals[i];
        const kx_yaml_node *const *items = v->type == KX_YAML_SEQ
                                               ? (const kx_yaml_node *const *)v->vals
                                               : (const kx_yaml_node *const *)&n->vals[i];
        size_t count = v->type == KX_YAML_SEQ ? v->n : 1;
        if (count == 0)
            return kx_yaml_err(err, file, v, "match: %s: an empty list matches nothing",
                               field_names[m->field]);
        for (size_t k = 0; k < count; k++) {
            const char *s;
            int rc = kx_yaml_str(items[k], file, &s, err);
            if (rc)
                return rc;
            if ((rc = add_value(m, s)))
                return rc;
        }
    }
    return 0;
}

static int find_sink(kx__sink *const *sinks, size_t nsinks, const kx_yaml_node *name)
{
    for (size_t i = 0; i < nsinks; i++)
        if (kx_yaml_is(name, sinks[i]->name))
            return (int)i;
    return -1;
}

static int parse_route(kx__routing *t, route *rt, const kx_yaml_node *item, kx__sink *const *sinks,
                       size_t nsinks, const char *file, kx_err *err)
{
    static const char *const keys[] = {"team",    "match", "when",  "when_not", "continue",
                                       "default", "sinks", "flood", "realert",  NULL};
    int rc;
    if (item->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, item, "route: expected a map with match (or team) and sinks");
    if ((rc = kx_yaml_check_keys(item, file, keys, err)))
        return rc;
    rt->line = item->line;
    rt->col = item->col;
    const kx_yaml_node *team = kx_yaml_get(item, "team"), *m = kx_yaml_get(item, "match");
    const kx_yaml_node *dflt = kx_yaml_get(item, "default"), *n;
    const kx_yaml_node *sl = kx_yaml_get(item, "sinks");
    if (!sl)
        return kx_yaml_err(err, file, item, "route: missing \"sinks\"");
    if (team && m)
        return kx_yaml_err(err, file, team, "route: give team or match, not both");
    if (dflt) {
        if ((rc = kx_yaml_bool(dflt, file, &rt->is_default, err)))
            return rc;
        if (rt->is_default && (team || m))
            return kx_yaml_err(err, file, dflt, "route: the default route has no team or match");
    }
    if (team) {
        const char *tname;
        if ((rc = kx_yaml_str(team, file, &tname, err)))
            return rc;
        for (size_t j = 0; j < t->n; j++)
            if (t->r[j].legacy_team && !strcmp(t->r[j].legacy_team, tname))
                return kx_yaml_err(err, file, team, "duplicate route for team \"%s\"", tname);
        if (!(rt->legacy_team = strdup(tname)))
            return -ENOMEM;
        if (!strcmp(tname, "default")) {
            rt->is_default = true;
        } else {
            if (!(rt->m = calloc(1, sizeof(*rt->m))))
                return -ENOMEM;
            rt->nm = 1;
            rt->m[0].field = F_TEAM;
            if ((rc = add_value(&rt->m[0], tname)))
                return rc;
        }
    } else if (m) {
        if ((rc = parse_match(rt, m, file, err)))
            return rc;
    } else if (!rt->is_default) {
        return kx_yaml_err(err, file, item,
                           "route: give match (or team), or make it the default route");
    }
    if (rt->is_default && t->dflt)
        return kx_yaml_err(err, file, item, "routes: only one default route");
    const kx_yaml_node *w = kx_yaml_get(item, "when"), *wn = kx_yaml_get(item, "when_not");
    if (w && wn)
        return kx_yaml_err(err, file, wn, "route: give when or when_not, not both");
    if ((w || wn) && rt->is_default)
        return kx_yaml_err(err, file, w ? w : wn, "route: the default route applies always");
    if (w || wn) {
        rt->when_not = wn != NULL;
        if ((rc = kx_timeofday_parse(w ? w : wn, file, &rt->when, err)))
            return rc;
    }
    if ((n = kx_yaml_get(item, "continue"))) {
        if ((rc = kx_yaml_bool(n, file, &rt->cont, err)))
            return rc;
        if (rt->cont && rt->is_default)
            return kx_yaml_err(err, file, n, "route: the default route cannot continue");
    }
    if ((n = kx_yaml_get(item, "flood"))) {
        if ((rc = kx__flood_parse(n, file, &rt->flood, err)))
            return rc;
        rt->has_flood = true;
    }
    if ((n = kx_yaml_get(item, "realert"))) {
        long long ms;
        if ((rc = kx_yaml_duration_ms(n, file, &ms, err)))
            return rc;
        if (ms < 1000 || ms > 30 * 86400 * 1000LL)
            return kx_yaml_err(err, file, n, "route: realert must be between 1s and 30d");
        rt->realert_ms = ms;
    }
    if (sl->type != KX_YAML_SEQ || sl->n == 0)
        return kx_yaml_err(err, file, sl, "route: sinks must be a non-empty list");
    if (sl->n > KX_SPOOL_MAX_SINKS)
        return kx_yaml_err(err, file, sl, "route: at most %d sinks", KX_SPOOL_MAX_SINKS);
    if (!(rt->sinks = calloc(sl->n, sizeof(*rt->sinks))))
        return -ENOMEM;
    for (size_t j = 0; j < sl->n; j++) {
        int idx = find_sink(sinks, nsinks, sl->vals[j]);
        if (idx < 0)
            return kx_yaml_err(err, file, sl->vals[j], "unknown sink \"%s\"",
                               sl->vals[j]->type == KX_YAML_SCALAR ? sl->vals[j]->str : "");
        for (size_t k = 0; k < rt->nsinks; k++)
            if (rt->sinks[k] == (uint16_t)idx)
                return kx_yaml_err(err, file, sl->vals[j], "sink \"%s\" listed twice",
                                   sl->vals[j]->str);
        rt->sinks[rt->nsinks++] = (uint16_t)idx;
    }
    return 0;
}

int kx__routing_parse(const kx_yaml_node *routes, kx__sink *const *sinks, size_t nsinks,
                      const char *file, kx__routing **out, kx_err *err)
{
    *out = NULL;
    if (routes->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, routes, "routes: expected a list");
    kx__routing *t = calloc(1, sizeof(*t));
    if (!t || !(t->r = calloc(routes->n ? routes->n : 1, sizeof(*t->r)))) {
        free(t);
        return -ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < routes->n && !rc; i++) {
        route *rt = &t->r[t->n++];
        rc = parse_route(t, rt, routes->vals[i], sinks, nsinks, file, err);
        if (!rc && rt->is_default)
            t->dflt = rt;
    }
    if (!rc && !t->dflt)
        rc = kx_yaml_err(err, file, routes,
                         "routes: a default route is required (`- default: true` or "
                         "`- team: default`): alerts no other route takes go there");
    if (rc) {
        kx__routing_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

static bool one_matches(const match *m, const char *v)
{
    for (size_t i = 0; i < m->n; i++)
        if (fnmatch(m->values[i], v ? v : "", 0) == 0)
            return true;
    return false;
}

static bool route_matches(const route *rt, const kx__route_view *v, int64_t now_ms)
{
    for (size_t i = 0; i < rt->nm; i++) {
        const match *m = &rt->m[i];
        bool ok = false;
        switch (m->field) {
        case F_TEAM:
            ok = one_matches(m, v->team);
            break;
        case F_SEVERITY:
            ok = one_matches(m, v->severity);
            break;
        case F_LEVEL:
            ok = one_matches(m, v->level);
            break;
        case F_TENANT:
            ok = one_matches(m, v->tenant);
            break;
        case F_CATEGORY:
            ok = one_matches(m, v->category);
            break;
        case F_RULE:
            ok = one_matches(m, v->rule);
            break;
        case F_STATUS:
            ok = one_matches(m, v->status);
            break;
        case F_TAGS:
            for (size_t k = 0; k < v->ntags && !ok; k++)
                ok = one_matches(m, v->tags[k]);
            break;
        default:
            break;
        }
        if (!ok)
            return false;
    }
    if (rt->when && kx_timeofday_match(rt->when, now_ms) == rt->when_not)
        return false;
    return true;
}

static void add_sinks(const route *rt, uint16_t *out, size_t *n)
{
    for (size_t i = 0; i < rt->nsinks; i++) {
        bool seen = false;
        for (size_t k = 0; k < *n && !seen; k++)
            seen = out[k] == rt->sinks[i];
        if (!seen && *n < KX_SPOOL_MAX_SINKS)
            out[(*n)++] = rt->sinks[i];
    }
}

size_t kx__routing_eval(const kx__routing *t, const kx__route_view *v, int64_t now_ms,
                        uint16_t *sinks, int *taken, size_t *ntaken)
{
    size_t n = 0, nt = 0;
    bool any = false;
    for (size_t i = 0; i < t->n; i++) {
        const route *rt = &t->r[i];
        if (rt->is_default || !route_matches(rt, v, now_ms))
            continue;
        any = true;
        add_sinks(rt, sinks, &n);
        if (taken)
            taken[nt++] = (int)i;
        if (!rt->cont)
            break;
    }
    if (!any) {
        add_sinks(t->dflt, sinks, &n);
        if (taken)
            taken[nt++] = (int)(t->dflt - t->r);
    }
    if (ntaken)
        *ntaken = nt;
    return n;
}

size_t kx__routing_size(const kx__routing *t)
{
    return t->n;
}

const uint16_t *kx__routing_sinks_of(const kx__routing *t, size_t i, size_t *n)
{
    *n = t->r[i].nsinks;
    return t->r[i].sinks;
}

int64_t kx__routing_realert_of(const kx__routing *t, size_t i)
{
    return t->r[i].realert_ms;
}

const kx__flood_cfg *kx__routing_flood_of(const kx__routing *t, size_t i)
{
    return t->r[i].has_flood ? &t->r[i].flood : NULL;
}

void kx__routing_describe(const kx__routing *t, size_t i, int *line, int *col, bool *is_default,
                          bool *cont)
{
    *line = t->r[i].line;
    *col = t->r[i].col;
    *is_default = t->r[i].is_default;
    *cont = t->r[i].cont;
}
