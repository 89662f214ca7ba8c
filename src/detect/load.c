/*
 * Rule documents: one YAML file -> kx_rule records. A detection document compiles to a
 * kx__detection (logsource filter, search identifiers via value.c, condition via
 * condition.c); a correlation document is handed to correlation_load.c. Everything is
 * allocated in the ruleset being built, so a refused file frees with it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "klaxon/tz.h"
#include "rules_int.h"

/* ---- rule documents ---- */

/* The document's tree hashed: kinds, scalars (and whether quoted) and their order. */
static uint64_t node_digest(const kx_yaml_node *n, uint64_t h)
{
    uint64_t tag = (uint64_t)n->type * 2 + n->quoted;
    h = kx_hash64(&tag, sizeof(tag), h);
    if (n->type == KX_YAML_SCALAR)
        return kx_hash64(n->str, n->len, h);
    h = kx_hash64(&n->n, sizeof(n->n), h);
    for (size_t i = 0; i < n->n; i++) {
        if (n->type == KX_YAML_MAP)
            h = node_digest(n->keys[i], h);
        h = node_digest(n->vals[i], h);
    }
    return h;
}

static int push_rule(kx_ruleset *rs, kx_rule *r, kx_err *err)
{
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 64;
        kx_rule **v = realloc(rs->rules, cap * sizeof(*v));
        if (!v)
            return kx_err_set(err, r->file, r->line, 0, "out of memory"), -ENOMEM;
        rs->rules = v;
        rs->cap = cap;
    }
    r->index = rs->n;
    rs->rules[rs->n++] = r;
    return 0;
}

static int opt_str(kx__ctx *c, const kx_yaml_node *root, const char *key, const char **out)
{
    const kx_yaml_node *n = kx_yaml_get(root, key);
    *out = NULL;
    if (!n)
        return 0;
    if (n->type != KX_YAML_SCALAR)
        return kx_yaml_err(c->err, c->file, n, "\"%s\" must be a string", key);
    *out = kx__strndup(c, n->str, n->len);
    return *out ? 0 : -ENOMEM;
}

/* A list of strings, or one string standing for a list of one. */
int kx__str_list(kx__ctx *c, const kx_yaml_node *n, const char *what, const char ***out,
                 size_t *nout)
{
    const kx_yaml_node *const *v = (const kx_yaml_node *const *)&n;
    size_t cnt = 1;
    if (n->type == KX_YAML_SEQ) {
        v = (const kx_yaml_node *const *)n->vals;
        cnt = n->n;
    } else if (n->type != KX_YAML_SCALAR) {
        return kx_yaml_err(c->err, c->file, n, "\"%s\" must be a list of strings", what);
    }
    const char **s = kx__alloc(c, cnt * sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        if (v[i]->type != KX_YAML_SCALAR)
            return kx_yaml_err(c->err, c->file, v[i], "\"%s\" must be a list of strings", what);
        if (!(s[i] = kx__strndup(c, v[i]->str, v[i]->len)))
            return -ENOMEM;
    }
    *out = s;
    *nout = cnt;
    return 0;
}

static int compile_search(kx__ctx *c, const kx_yaml_node *key, const kx_yaml_node *val,
                          kx__search *s)
{
    if (!(s->name = kx__strndup(c, key->str, key->len)))
        return -ENOMEM;
    if (val->type == KX_YAML_MAP) {
        if (val->n == 0)
            return kx_yaml_err(c->err, c->file, key, "search identifier \"%s\" is empty", s->name);
        if (val->n == 1 && kx_yaml_is(val->keys[0], "timeofday")) {
            kx_timeofday *t = NULL;
            int rc = kx_timeofday_parse(val->vals[0], c->file, &t, c->err);
            if (rc)
                return rc;
            s->tod = t;
            if (c->rule && !c->rule->timezone) {
                const char *z = kx_timeofday_zone(t);
                ((kx_rule *)c->rule)->timezone = kx__strndup(c, z, strlen(z));
            }
            return kx__res_add_tod(c, t);
        }
        kx__group *g = kx__alloc(c, sizeof(*g));
        kx__fcond *conds = kx__alloc(c, val->n * sizeof(*conds));
        if (!g || !conds)
            return -ENOMEM;
        for (size_t i = 0; i < val->n; i++) {
            int rc = kx__fcond_compile(c, val->keys[i], val->vals[i], &conds[i]);
            if (rc)
                return rc;
        }
        g->conds = conds;
        g->nconds = val->n;
        s->groups = g;
        s->ngroups = 1;
        return 0;
    }
    if (val->type != KX_YAML_SEQ || val->n == 0)
        return kx_yaml_err(c->err, c->file, val->type == KX_YAML_SEQ ? key : val,
                           "search identifier \"%s\" must be a non-empty mapping or list", s->name);
    /* A list: maps are OR-ed groups; plain values together form one keyword group. */
    size_t nmaps = 0, nkw = 0;
    for (size_t i = 0; i < val->n; i++) {
        const kx_yaml_node *it = val->vals[i];
        if (it->type == KX_YAML_MAP && it->n > 0)
            nmaps++;
        else if (it->type == KX_YAML_SCALAR)
            nkw++;
        else
            return kx_yaml_err(c->err, c->file, it,
                               "expected a keyword or a mapping of field conditions");
    }
    kx__group *groups = kx__alloc(c, (nmaps + (nkw > 0)) * sizeof(*groups));
    if (!groups)
        return -ENOMEM;
    size_t g = 0;
    if (nkw) {
        const kx_yaml_node **kw = kx__alloc(c, nkw * sizeof(*kw));
        kx__fcond *f = kx__alloc(c, sizeof(*f));
        if (!kw || !f)
            return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < val->n; i++)
            if (val->vals[i]->type == KX_YAML_SCALAR)
                kw[k++] = val->vals[i];
        int rc = kx__keywords_compile(c, kw, nkw, f);
        if (rc)
            return rc;
        groups[g].conds = f;
        groups[g++].nconds = 1;
    }
    for (size_t i = 0; i < val->n; i++) {
        const kx_yaml_node *it = val->vals[i];
        if (it->type != KX_YAML_MAP)
            continue;
        kx__fcond *conds = kx__alloc(c, it->n * sizeof(*conds));
        if (!conds)
            return -ENOMEM;
        for (size_t j = 0; j < it->n; j++) {
            int rc = kx__fcond_compile(c, it->keys[j], it->vals[j], &conds[j]);
            if (rc)
                return rc;
        }
        groups[g].conds = conds;
        groups[g++].nconds = it->n;
    }
    s->groups = groups;
    s->ngroups = g;
    return 0;
}

int kx__detection_compile(kx__ctx *c, const kx_yaml_node *det, bool filter, kx__detection *d)
{
    const char *what = filter ? "filter" : "detection";
    if (det->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, det, "\"%s\" must be a mapping", what);
    const kx_yaml_node *cond = NULL;
    size_t ns = 0;
    for (size_t i = 0; i < det->n; i++) {
        const kx_yaml_node *k = det->keys[i];
        if (k->type != KX_YAML_SCALAR)
            return kx_yaml_err(c->err, c->file, k, "expected a search identifier name");
        if (kx_yaml_is(k, "condition"))
            cond = det->vals[i];
        else if (!kx_yaml_is(k, "timeframe") && !(filter && kx_yaml_is(k, "rules")))
            ns++;
    }
    if (!cond)
        return kx_yaml_err(c->err, c->file, det, "missing required key \"condition\"");
    kx__search *s = kx__alloc(c, ns * sizeof(*s));
    if (!s)
        return -ENOMEM;
    size_t j = 0;
    for (size_t i = 0; i < det->n; i++) {
        const kx_yaml_node *k = det->keys[i];
        if (kx_yaml_is(k, "condition") || (filter && kx_yaml_is(k, "rules")))
            continue;
        if (kx_yaml_is(k, "timeframe")) {
            /* Only meaningful with the deprecated aggregation syntax, which the condition
             * parser rejects with a pointer to correlation rules. */
            kx__warn(c, c->file, k->line, k->col, "\"timeframe\" is ignored");
            continue;
        }
        int rc = compile_search(c, k, det->vals[i], &s[j++]);
        if (rc)
            return rc;
    }
    d->searches = s;
    d->nsearches = ns;
    return kx__cond_compile(c, cond, d);
}

static int compile_logsource(kx__ctx *c, const kx_yaml_node *ls, kx__detection *d)
{
    if (!ls || kx_yaml_is_null(ls))
        return 0;
    if (ls->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, ls, "\"logsource\" must be a mapping");
    int rc = opt_str(c, ls, "product", &d->product);
    if (!rc)
        rc = opt_str(c, ls, "service", &d->service);
    if (!rc)
        rc = opt_str(c, ls, "category", &d->category);
    return rc;
}

/* klaxon extension `regex_budget`: what a rule answers when one of its regexes is given up
 * (docs/rules.md). The default follows the level: missing a high or critical detection is
 * worse than a spurious alert that says it is one. Sets c->rule and c->re_fail_closed for
 * the rule's regexes. */
static int regex_budget(kx__ctx *c, const kx_yaml_node *root, const kx_rule *r)
{
    c->rule = r;
    c->re_fail_closed = !strcmp(r->level, "high") || !strcmp(r->level, "critical");
    const kx_yaml_node *n = kx_yaml_get(root, "regex_budget");
    if (!n)
        return 0;
    if (kx_yaml_is(n, "fail_closed"))
        c->re_fail_closed = true;
    else if (kx_yaml_is(n, "fail_open"))
        c->re_fail_closed = false;
    else
        return kx_yaml_err(c->err, c->file, n,
                           "invalid regex_budget \"%s\" (expected fail_closed or fail_open)",
                           n->type == KX_YAML_SCALAR ? n->str : "(not a string)");
    return 0;
}

static int load_doc(kx_ruleset *rs, kx__ctx *c, const kx_yaml_node *root)
{
    if (root->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, root, "a rule must be a YAML mapping");
    const kx_yaml_node *det = kx_yaml_get(root, "detection");
    const kx_yaml_node *corr = kx_yaml_get(root, "correlation");
    kx_rule *r = kx_arena_alloc(&rs->rule_arena, sizeof(*r)); /* see kx_ruleset.rule_arena */
    if (r)
        memset(r, 0, sizeof(*r));
    else
        kx_err_set(c->err, c->file, 0, 0, "out of memory");
    rule_priv *pv = kx__alloc(c, sizeof(*pv));
    char *file = kx__strndup(c, c->file, strlen(c->file));
    if (!r || !pv || !file)
        return -ENOMEM;
    r->priv = pv;
    r->file = file;
    r->line = root->line;
    r->digest = node_digest(root, 0);
    r->generate = true;

    const kx_yaml_node *t = kx_yaml_get(root, "title");
    if (!t)
        return kx_yaml_err(c->err, c->file, root, "missing required key \"title\"");
    if (t->type != KX_YAML_SCALAR || t->len == 0)
        return kx_yaml_err(c->err, c->file, t, "\"title\" must be a non-empty string");
    if (corr && det)
        return kx_yaml_err(c->err, c->file, corr,
                           "a rule cannot have both \"detection\" and \"correlation\"");
    if (!corr && !det)
        return kx_yaml_err(c->err, c->file, root, "missing required key \"detection\"");

    int rc;
    const char *id, *name, *level;
    if ((rc = opt_str(c, root, "title", &r->title)) || (rc = opt_str(c, root, "id", &id)) ||
        (rc = opt_str(c, root, "name", &name)) || (rc = opt_str(c, root, "level", &level)) ||
        (rc = opt_str(c, root, "team", &r->team)) ||
        (rc = opt_str(c, root, "category", &r->category)) ||
        (rc = opt_str(c, root, "description", &r->description)) ||
        (rc = opt_str(c, root, "runbook", &r->runbook)))
        return rc;
    /* Sigma's author is free text; one that is not a string (a list of names) is kept out
     * of alerts rather than refusing a rule Sigma accepts. */
    const kx_yaml_node *au = kx_yaml_get(root, "author");
    if (au && au->type == KX_YAML_SCALAR && au->len &&
        !(r->author = kx__strndup(c, au->str, au->len)))
        return -ENOMEM;
    const kx_yaml_node *ra = kx_yaml_get(root, "realert");
    if (ra && !kx_yaml_is_null(ra)) {
        long long ms;
        if ((rc = kx_yaml_duration_ms(ra, c->file, &ms, c->err)))
            return rc;
        if (ms < 1000 || ms > 30 * 86400 * 1000LL)
            return kx_yaml_err(c->err, c->file, ra, "realert must be between 1s and 30d");
        r->realert_ms = ms;
    }
    static const struct {
        const char *key;
        size_t off, noff;
    } lists[] = {
        {"references", offsetof(kx_rule, references), offsetof(kx_rule, nreferences)},
        {"falsepositives", offsetof(kx_rule, falsepositives), offsetof(kx_rule, nfalsepositives)},
        {"fields", offsetof(kx_rule, fields), offsetof(kx_rule, nfields)},
    };
    for (size_t i = 0; i < KX_ARRAY_LEN(lists); i++) {
        const kx_yaml_node *ln = kx_yaml_get(root, lists[i].key);
        if (!ln || kx_yaml_is_null(ln))
            continue;
        const char **v = NULL;
        if ((rc = kx__str_list(c, ln, lists[i].key, &v, (size_t *)((char *)r + lists[i].noff))))
            return rc;
        *(const char *const **)((char *)r + lists[i].off) = v;
    }
    const kx_yaml_node *n = kx_yaml_get(root, "id");
    pv->id_line = n ? n->line : root->line;
    pv->id_written = id != NULL;
    pv->id_col = n ? n->col : root->col;
    n = kx_yaml_get(root, "name");
    pv->name_line = n ? n->line : root->line;
    pv->name_col = n ? n->col : root->col;
    r->name = name;
    const char *rid = id ? id : name ? name : r->title;
    if (!(r->id = kx_arena_strndup(&rs->rule_arena, rid, strlen(rid))))
        return kx_err_set(c->err, c->file, 0, 0, "out of memory"), -ENOMEM;
    if (level) {
        static const char *const levels[] = {"informational", "low", "medium", "high", "critical"};
        size_t i = 0;
        while (i < KX_ARRAY_LEN(levels) && strcmp(level, levels[i]))
            i++;
        if (i == KX_ARRAY_LEN(levels))
            return kx_yaml_err(c->err, c->file, kx_yaml_get(root, "level"),
                               "invalid level \"%s\" (expected informational, low, medium, high "
                               "or critical)",
                               level);
    }
    r->level = level ? level : "medium";
    if ((n = kx_yaml_get(root, "tags")) && !kx_yaml_is_null(n)) {
        const char **tags = NULL;
        if ((rc = kx__str_list(c, n, "tags", &tags, &r->ntags)))
            return rc;
        r->tags = tags;
    }

    if (corr) {
        r->kind = KX_RULE_CORRELATION;
        if ((n = kx_yaml_get(root, "regex_budget")))
            return kx_yaml_err(c->err, c->file, n,
                               "\"regex_budget\" applies to detection rules only");
        rc = kx__correlation_compile(c, root, corr, r, pv);
    } else {
        r->kind = KX_RULE_DETECTION;
        if (!(pv->det = kx__alloc(c, sizeof(*pv->det))))
            return -ENOMEM;
        if ((rc = regex_budget(c, root, r)))
            return rc;
        pv->det->re_fail_closed = c->re_fail_closed;
        /* klaxon `timezone`: the zone time-part modifiers (hour, day, ...) read times in */
        const kx_yaml_node *zn = kx_yaml_get(root, "timezone");
        const kx_tz *tz = NULL;
        if (zn && (zn->type != KX_YAML_SCALAR || kx_tz_get(zn->str, &tz)))
            return kx_yaml_err(c->err, c->file, zn, "unknown time zone \"%s\"",
                               zn->type == KX_YAML_SCALAR ? zn->str : "?");
        c->time_zone = tz;
        pv->det->tz = tz; /* a filter's searches compiled into this rule read times in it too */
        rc = compile_logsource(c, kx_yaml_get(root, "logsource"), pv->det);
        if (!rc)
            rc = kx__detection_compile(c, det, false, pv->det);
        c->time_zone = NULL;
    }
    return rc ? rc : push_rule(rs, r, c->err);
}

int kx__load_file(kx_ruleset *rs, const char *path, kx__diag *dg, kx_err *err)
{
    kx_yaml_doc *docs = NULL;
    int rc = kx_yaml_load_file(path, &docs, err);
    if (rc)
        return kx__diag_error(dg, rc, err);
    kx__ctx c = {.arena = &rs->arena,
                 .res = &rs->res,
                 .file = path,
                 .err = err,
                 .rx = &rs->rx,
                 .dg = dg,
                 .lists = &rs->lists};
    /* A document is pushed only once it compiled whole (load_doc's last step): one with an
     * error leaves nothing behind but arena bytes, freed with the ruleset. A filter is kept
     * as YAML (with its file's documents) until every rule is loaded: filter.c. */
    bool has_filter = false;
    for (kx_yaml_doc *d = docs; d; d = d->next)
        has_filter |= d->root && (kx__is_filter_doc(d->root) || kx__is_mapping_doc(d->root));
    if (has_filter && (rc = kx__filter_keep_docs(rs, docs)) != 0) {
        kx_yaml_free(docs);
        return kx_err_set(err, path, 0, 0, "out of memory"), rc;
    }
    for (kx_yaml_doc *d = docs; d && !rc; d = d->next) {
        if (!d->root || kx_yaml_is_null(d->root))
            continue;
        rc = kx__is_filter_doc(d->root)    ? kx__filter_add(rs, &c, d->root)
             : kx__is_mapping_doc(d->root) ? kx__mapping_add(rs, &c, d->root)
                                           : load_doc(rs, &c, d->root);
        if (rc && rc != -ENOMEM)
            rc = kx__diag_error(dg, rc, err);
    }
    if (!has_filter)
        kx_yaml_free(docs);
    return rc;
}
