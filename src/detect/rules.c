/*
 * Rule loading and the ruleset: YAML files -> kx_rule records with compiled detections,
 * correlation rules linked to the detection rules they count, and the per-event match loop.
 *
 * Loading is all-or-nothing: every rule, string and compiled pattern lives in the ruleset
 * being built (its arena plus a list of PCRE2/time-of-day objects to free), so the first
 * error destroys that one object and the caller's *out is never written. Files are loaded in
 * a fixed order (paths as given; directories walked recursively, sorted), and rules keep the
 * order they appear in, which is the order kx_ruleset_match reports matches in.
 *
 * Correlation references are resolved after every file is loaded, because a correlation
 * may name rules from other files (by id or by name).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "detect_set.h"

#define KX__ARENA_BLOCK (64 * 1024)
#define KX__MAX_DIR_DEPTH 32

enum { RES_CODE, RES_TOD };

struct kx__res {
    int kind;
    void *a;
    void *b;
    kx__res *next;
};

struct kx_ruleset {
    kx_arena arena;
    kx__res *res;
    kx_rule **rules;
    size_t n;
    size_t cap;
    pcre2_match_context *mctx;
    kx__cset *cs; /* the compiled set (match.c), built once every rule is resolved */
};

/* One Sigma field alias: alias name -> (rule name or id -> field). */
typedef struct alias_def {
    const char *name;
    size_t n;
    const char **rules;
    const char **fields;
    int line, col;
} alias_def;

/* What a rule keeps beyond the public record. */
typedef struct rule_priv {
    kx__detection *det; /* detection rules */
    /* correlation rules, until references are resolved */
    const char **ref_names;
    int *ref_line;
    int *ref_col;
    size_t nrefs;
    bool corr_generate;
    const char **value_fields; /* as written (may name aliases) */
    struct alias_def *aliases; /* copied: the YAML tree is gone by resolve() */
    size_t naliases;
    /* where id and name were written, for duplicate errors */
    int id_line, id_col;
    int name_line, name_col;
} rule_priv;

/* ---- build helpers shared with value.c and condition.c ---- */

void *kx__alloc(kx__ctx *c, size_t n)
{
    void *p = kx_arena_alloc(c->arena, n ? n : 1);
    if (!p) {
        kx_err_set(c->err, c->file, 0, 0, "out of memory");
        return NULL;
    }
    memset(p, 0, n);
    return p;
}

char *kx__strndup(kx__ctx *c, const char *s, size_t n)
{
    char *p = kx_arena_strndup(c->arena, s, n);
    if (!p)
        kx_err_set(c->err, c->file, 0, 0, "out of memory");
    return p;
}

static int res_add(kx__ctx *c, int kind, void *a, void *b)
{
    kx__res *r = malloc(sizeof(*r));
    if (!r) {
        kx__res tmp = {.kind = kind, .a = a, .b = b};
        kx__res_free(&tmp);
        return kx_err_set(c->err, c->file, 0, 0, "out of memory"), -ENOMEM;
    }
    r->kind = kind;
    r->a = a;
    r->b = b;
    r->next = *c->res;
    *c->res = r;
    return 0;
}

int kx__res_add_code(kx__ctx *c, pcre2_code *code, pcre2_match_data *md)
{
    return res_add(c, RES_CODE, code, md);
}

int kx__res_add_tod(kx__ctx *c, kx_timeofday *t)
{
    return res_add(c, RES_TOD, t, NULL);
}

void kx__res_free(kx__res *r)
{
    if (r->kind == RES_CODE) {
        pcre2_match_data_free(r->b);
        pcre2_code_free(r->a);
    } else {
        kx_timeofday_destroy(r->a);
    }
}

/* ---- file discovery ---- */

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

static int strvec_push(strvec *sv, char *s)
{
    if (!s)
        return -ENOMEM;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 64;
        char **v = realloc(sv->v, cap * sizeof(*v));
        if (!v) {
            free(s);
            return -ENOMEM;
        }
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = s;
    return 0;
}

static void strvec_free(strvec *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_rule_ext(const char *name)
{
    size_t n = strlen(name);
    return (n > 4 && !strcmp(name + n - 4, ".yml")) || (n > 5 && !strcmp(name + n - 5, ".yaml"));
}

static int walk(const char *dir, int depth, strvec *out, kx_err *err)
{
    if (depth > KX__MAX_DIR_DEPTH)
        return kx_err_set(err, dir, 0, 0, "directories nested too deeply (symlink loop?)");
    DIR *d = opendir(dir);
    if (!d)
        return kx_err_set(err, dir, 0, 0, "%s", strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.') /* ., .. and hidden files such as editor swap files */
            continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *path = malloc(len);
        if (!path) {
            rc = kx_err_set(err, dir, 0, 0, "out of memory");
            break;
        }
        snprintf(path, len, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0) {
            rc = kx_err_set(err, path, 0, 0, "%s", strerror(errno));
            free(path);
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk(path, depth + 1, out, err);
            free(path);
        } else if (S_ISREG(st.st_mode) && has_rule_ext(de->d_name)) {
            if (strvec_push(out, path))
                rc = kx_err_set(err, dir, 0, 0, "out of memory");
        } else {
            free(path);
        }
    }
    closedir(d);
    return rc;
}

static int collect(const char *path, strvec *out, kx_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return kx_err_set(err, path, 0, 0, "%s", strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (strvec_push(out, strdup(path)))
            return kx_err_set(err, path, 0, 0, "out of memory");
        return 0;
    }
    size_t first = out->n;
    int rc = walk(path, 0, out, err);
    if (!rc)
        qsort(out->v + first, out->n - first, sizeof(char *), cmp_str);
    return rc;
}

/* ---- rule documents ---- */

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
static int str_list(kx__ctx *c, const kx_yaml_node *n, const char *what, const char ***out,
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

static int compile_detection(kx__ctx *c, const kx_yaml_node *det, kx__detection *d)
{
    if (det->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, det, "\"detection\" must be a mapping");
    const kx_yaml_node *cond = NULL;
    size_t ns = 0;
    for (size_t i = 0; i < det->n; i++) {
        const kx_yaml_node *k = det->keys[i];
        if (k->type != KX_YAML_SCALAR)
            return kx_yaml_err(c->err, c->file, k, "expected a search identifier name");
        if (kx_yaml_is(k, "condition"))
            cond = det->vals[i];
        else if (!kx_yaml_is(k, "timeframe"))
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
        if (kx_yaml_is(k, "condition"))
            continue;
        if (kx_yaml_is(k, "timeframe")) {
            /* Only meaningful with the deprecated aggregation syntax, which the condition
             * parser rejects with a pointer to correlation rules. */
            kx_log(KX_LOG_WARN, "detect", "%s:%d:%d: \"timeframe\" is ignored", c->file, k->line,
                   k->col);
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

/* Can a window's aggregate only grow as members are added? Then a condition that an empty
 * window already satisfies (lt, lte, neq) could only be judged when the window closes. */
static bool corr_monotone(kx_corr_type t)
{
    return t != KX_CORR_VALUE_AVG && t != KX_CORR_VALUE_PERCENTILE && t != KX_CORR_FIRST_SEEN &&
           t != KX_CORR_ABSENCE;
}

static int compile_condition(kx__ctx *c, const kx_yaml_node *corr, kx_rule *r,
                             const kx_yaml_node **field_node)
{
    static const struct {
        const char *name;
        kx_cmp cmp;
    } ops[] = {{"gt", KX_CMP_GT},   {"gte", KX_CMP_GTE}, {"lt", KX_CMP_LT},
               {"lte", KX_CMP_LTE}, {"eq", KX_CMP_EQ},   {"neq", KX_CMP_NEQ}};
    const kx_yaml_node *cond = kx_yaml_get(corr, "condition");
    *field_node = kx_yaml_get(corr, "field"); /* pySigma also accepts it here */
    bool temporal = r->corr_type == KX_CORR_TEMPORAL || r->corr_type == KX_CORR_TEMPORAL_ORDERED;
    kx_corr_term *terms = kx__alloc(c, KX_RULE_MAX_TERMS * sizeof(*terms));
    if (!terms)
        return -ENOMEM;
    r->cond = terms;
    if (!cond && temporal) {
        /* Sigma: all the referenced rules must match (in order for temporal_ordered). */
        terms[0] = (kx_corr_term){KX_CMP_GTE, (double)r->nrefs};
        r->ncond = 1;
        return 0;
    }
    if (r->corr_type == KX_CORR_ABSENCE) {
        if (cond)
            return kx_yaml_err(c->err, c->file, cond,
                               "absence takes no condition: a group silent for longer than the "
                               "timespan alerts");
        r->ncond = 0;
        return 0;
    }
    if (r->corr_type == KX_CORR_FIRST_SEEN) {
        /* No threshold: the first sighting is the event. `condition` may carry the field. */
        if (cond && cond->type == KX_YAML_MAP)
            for (size_t k = 0; k < cond->n; k++) {
                if (!kx_yaml_is(cond->keys[k], "field"))
                    return kx_yaml_err(c->err, c->file, cond->keys[k],
                                       "first_seen takes no condition operator (only field)");
                *field_node = cond->vals[k];
            }
        else if (cond)
            return kx_yaml_err(c->err, c->file, cond, "condition must be a mapping");
        r->ncond = 0;
        return 0;
    }
    if (!cond)
        return kx_yaml_err(c->err, c->file, corr, "missing required key \"condition\"");
    if (cond->type != KX_YAML_MAP || cond->n == 0)
        return kx_yaml_err(c->err, c->file, cond, "condition must be a mapping such as {gte: 10}");
    for (size_t k = 0; k < cond->n; k++) {
        const kx_yaml_node *op = cond->keys[k];
        if (kx_yaml_is(op, "field")) {
            *field_node = cond->vals[k];
            continue;
        }
        size_t i = 0;
        while (i < KX_ARRAY_LEN(ops) && !kx_yaml_is(op, ops[i].name))
            i++;
        if (i == KX_ARRAY_LEN(ops))
            return kx_yaml_err(c->err, c->file, op,
                               "unknown condition operator \"%s\" (expected gt, gte, lt, lte, eq "
                               "or neq)",
                               op->type == KX_YAML_SCALAR ? op->str : "?");
        const kx_yaml_node *v = cond->vals[k];
        char *end = NULL;
        double d = v->type == KX_YAML_SCALAR && v->len ? strtod(v->str, &end) : 0;
        if (!end || *end || d != d || d > 9e15 || d < -9e15)
            return kx_yaml_err(c->err, c->file, v, "condition value must be a number");
        bool counted = r->corr_type != KX_CORR_VALUE_SUM && r->corr_type != KX_CORR_VALUE_AVG &&
                       r->corr_type != KX_CORR_VALUE_PERCENTILE;
        if (counted && (d < 0 || d != (double)(long long)d))
            return kx_yaml_err(c->err, c->file, v,
                               "condition value must be a whole number >= 0 for %s", "a count");
        if (r->ncond == KX_RULE_MAX_TERMS)
            return kx_yaml_err(c->err, c->file, op, "too many condition operators");
        terms[r->ncond++] = (kx_corr_term){ops[i].cmp, d};
    }
    if (r->ncond == 0)
        return kx_yaml_err(c->err, c->file, cond, "condition has no operator such as gte");
    if (corr_monotone(r->corr_type) && kx_corr_holds(r, 0)) {
        /* "At most N": judged when a window closes, which klaxon does for event_count. */
        if (r->corr_type == KX_CORR_EVENT_COUNT) {
            r->closing = true;
            /* Only windows with events are judged: a condition no count >= 1 meets (eq: 0,
             * lt: 1) would never fire. The counts where the answer can change are near the
             * terms' values, so those and 1 are the ones to try. */
            bool can = kx_corr_holds(r, 1);
            for (size_t i = 0; i < r->ncond && !can; i++)
                for (double d = -1; d <= 1 && !can; d++) {
                    double v = (double)(long long)r->cond[i].value + d;
                    can = v >= 1 && kx_corr_holds(r, v);
                }
            if (!can)
                return kx_yaml_err(c->err, c->file, cond,
                                   "this condition holds only for a window without events, and "
                                   "klaxon judges only windows with events: use an absence rule "
                                   "for \"no event in the timespan\"");
        } else
            return kx_yaml_err(c->err, c->file, cond,
                               "this condition holds for an empty window (lt, lte, neq or a "
                               "range from 0): klaxon judges such conditions when windows close "
                               "for event_count only; use event_count, or value_avg / "
                               "value_percentile");
    }
    return 0;
}

static int compile_correlation(kx__ctx *c, const kx_yaml_node *root, const kx_yaml_node *corr,
                               kx_rule *r, rule_priv *pv)
{
    if (corr->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, corr, "\"correlation\" must be a mapping");
    static const char *const known[] = {
        "type",  "rules",    "group-by", "timespan",   "condition",  "generate", "aliases",
        "field", "suppress", "lateness", "max_groups", "deviations", "history",  "keep"};
    for (size_t i = 0; i < corr->n; i++) {
        const kx_yaml_node *k = corr->keys[i];
        size_t j = 0;
        while (j < KX_ARRAY_LEN(known) && !kx_yaml_is(k, known[j]))
            j++;
        if (j == KX_ARRAY_LEN(known))
            return kx_yaml_err(c->err, c->file, k, "unknown key \"%s\" in correlation",
                               k->type == KX_YAML_SCALAR ? k->str : "?");
    }
    static const struct {
        const char *name;
        kx_corr_type type;
    } types[] = {{"event_count", KX_CORR_EVENT_COUNT},
                 {"value_count", KX_CORR_VALUE_COUNT},
                 {"temporal", KX_CORR_TEMPORAL},
                 {"temporal_ordered", KX_CORR_TEMPORAL_ORDERED},
                 {"value_sum", KX_CORR_VALUE_SUM},
                 {"value_avg", KX_CORR_VALUE_AVG},
                 {"value_percentile", KX_CORR_VALUE_PERCENTILE},
                 {"first_seen", KX_CORR_FIRST_SEEN},
                 {"baseline", KX_CORR_BASELINE},
                 {"absence", KX_CORR_ABSENCE}};
    const kx_yaml_node *type = kx_yaml_get(corr, "type");
    if (!type)
        return kx_yaml_err(c->err, c->file, corr, "missing required key \"type\"");
    size_t ti = 0;
    while (ti < KX_ARRAY_LEN(types) && !kx_yaml_is(type, types[ti].name))
        ti++;
    if (ti == KX_ARRAY_LEN(types))
        return kx_yaml_err(c->err, c->file, type, "unknown correlation type \"%s\"",
                           type->type == KX_YAML_SCALAR ? type->str : "(not a string)");
    r->corr_type = types[ti].type;

    const kx_yaml_node *rules = kx_yaml_get(corr, "rules");
    if (!rules)
        return kx_yaml_err(c->err, c->file, corr, "missing required key \"rules\"");
    int rc = str_list(c, rules, "rules", &pv->ref_names, &pv->nrefs);
    if (rc)
        return rc;
    if (pv->nrefs == 0)
        return kx_yaml_err(c->err, c->file, rules, "\"rules\" must not be empty");
    pv->ref_line = kx__alloc(c, pv->nrefs * sizeof(int));
    pv->ref_col = kx__alloc(c, pv->nrefs * sizeof(int));
    if (!pv->ref_line || !pv->ref_col)
        return -ENOMEM;
    for (size_t i = 0; i < pv->nrefs; i++) {
        const kx_yaml_node *it = rules->type == KX_YAML_SEQ ? rules->vals[i] : rules;
        pv->ref_line[i] = it->line;
        pv->ref_col[i] = it->col;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(pv->ref_names[i], pv->ref_names[j]))
                return kx_yaml_err(c->err, c->file, it, "rule \"%s\" is listed twice",
                                   pv->ref_names[i]);
    }
    r->nrefs = pv->nrefs; /* refs themselves are resolved after every file is loaded */

    const kx_yaml_node *n;
    if ((n = kx_yaml_get(corr, "group-by"))) {
        const char **g;
        if ((rc = str_list(c, n, "group-by", &g, &r->ngroup_by)))
            return rc;
        r->group_by = g;
        if (r->ngroup_by > KX_RULE_MAX_GROUP_BY)
            return kx_yaml_err(c->err, c->file, n, "group-by lists %zu fields; at most %d",
                               r->ngroup_by, KX_RULE_MAX_GROUP_BY);
    }

    const kx_yaml_node *ts = kx_yaml_get(corr, "timespan");
    if (!ts)
        return kx_yaml_err(c->err, c->file, corr, "missing required key \"timespan\"");
    long long ms;
    if ((rc = kx_yaml_duration_ms(ts, c->file, &ms, c->err)))
        return rc;
    if (ms <= 0)
        return kx_yaml_err(c->err, c->file, ts, "timespan must be greater than zero");
    r->timespan_ms = ms;
    r->suppress_ms = ms;
    r->lateness_ms = -1;
    if ((n = kx_yaml_get(corr, "suppress"))) {
        if ((rc = kx_yaml_duration_ms(n, c->file, &ms, c->err)))
            return rc;
        r->suppress_ms = ms;
    }
    if ((n = kx_yaml_get(corr, "lateness"))) {
        if ((rc = kx_yaml_duration_ms(n, c->file, &ms, c->err)))
            return rc;
        r->lateness_ms = ms;
    }
    r->max_groups = -1;
    if ((n = kx_yaml_get(corr, "max_groups"))) {
        long long mg;
        if ((rc = kx_yaml_int(n, c->file, 1, 100000000LL, &mg, c->err)))
            return rc;
        r->max_groups = mg;
    }

    const kx_yaml_node *field = NULL;
    if ((rc = compile_condition(c, corr, r, &field)))
        return rc;
    r->deviations = 3;
    r->history = 24;
    const kx_yaml_node *dv = kx_yaml_get(corr, "deviations"), *hi = kx_yaml_get(corr, "history");
    if ((dv || hi) && r->corr_type != KX_CORR_BASELINE)
        return kx_yaml_err(c->err, c->file, dv ? dv : hi, "\"%s\" applies to baseline only",
                           dv ? "deviations" : "history");
    if (dv) {
        char *end = NULL;
        double d = dv->type == KX_YAML_SCALAR && dv->len ? strtod(dv->str, &end) : -1;
        if (!end || *end || !(d >= 0 && d <= 1000))
            return kx_yaml_err(c->err, c->file, dv, "deviations must be a number from 0 to 1000");
        r->deviations = d;
    }
    if (hi) {
        long long h;
        if ((rc = kx_yaml_int(hi, c->file, 1, 10000, &h, c->err)))
            return rc;
        r->history = h;
    }
    r->keep_ms = (int64_t)7 * 24 * 3600 * 1000;
    const kx_yaml_node *kp = kx_yaml_get(corr, "keep");
    if (kp && r->corr_type != KX_CORR_ABSENCE)
        return kx_yaml_err(c->err, c->file, kp, "\"keep\" applies to absence only");
    if (kp) {
        long long keep;
        if ((rc = kx_yaml_duration_ms(kp, c->file, &keep, c->err)))
            return rc;
        if (keep <= 0)
            return kx_yaml_err(c->err, c->file, kp, "keep must be greater than zero");
        r->keep_ms = keep;
    }
    if (r->corr_type == KX_CORR_BASELINE &&
        r->timespan_ms > (int64_t)366 * 24 * 3600 * 1000 / (3 * r->history + 2))
        return kx_yaml_err(c->err, c->file, ts,
                           "baseline keeps (3 * history + 2) intervals; with this timespan that "
                           "is more than a year");
    bool wants_field = r->corr_type == KX_CORR_VALUE_COUNT || r->corr_type == KX_CORR_VALUE_SUM ||
                       r->corr_type == KX_CORR_FIRST_SEEN || r->corr_type == KX_CORR_VALUE_AVG ||
                       r->corr_type == KX_CORR_VALUE_PERCENTILE;
    if (wants_field && !field)
        return kx_yaml_err(c->err, c->file,
                           kx_yaml_get(corr, "condition") ? kx_yaml_get(corr, "condition") : corr,
                           "%s needs a \"field\" in its condition", types[ti].name);
    if (!wants_field && field)
        return kx_yaml_err(c->err, c->file, field, "\"field\" does not apply to %s",
                           types[ti].name);
    if (field) {
        const char **fv;
        if ((rc = str_list(c, field, "field", &fv, &r->nvalue_fields)))
            return rc;
        if (r->nvalue_fields > 1 && r->corr_type != KX_CORR_VALUE_COUNT &&
            r->corr_type != KX_CORR_FIRST_SEEN)
            return kx_yaml_err(c->err, c->file, field, "%s takes one field", types[ti].name);
        if (r->nvalue_fields > KX_RULE_MAX_GROUP_BY)
            return kx_yaml_err(c->err, c->file, field, "at most %d fields", KX_RULE_MAX_GROUP_BY);
        pv->value_fields = fv;
    }
    const kx_yaml_node *al = kx_yaml_get(corr, "aliases");
    if (al && !kx_yaml_is_null(al)) {
        if (al->type != KX_YAML_MAP)
            return kx_yaml_err(c->err, c->file, al,
                               "\"aliases\" must map alias names to {rule name: field}");
        pv->aliases = kx__alloc(c, (al->n ? al->n : 1) * sizeof(*pv->aliases));
        if (!pv->aliases)
            return -ENOMEM;
        for (size_t i = 0; i < al->n; i++) {
            const kx_yaml_node *k = al->keys[i], *m = al->vals[i];
            alias_def *d = &pv->aliases[pv->naliases++];
            if (k->type != KX_YAML_SCALAR || m->type != KX_YAML_MAP)
                return kx_yaml_err(c->err, c->file, m,
                                   "an alias must map rule names to field names");
            d->name = kx__strndup(c, k->str, k->len);
            d->line = k->line;
            d->col = k->col;
            d->n = m->n;
            d->rules = kx__alloc(c, (m->n ? m->n : 1) * sizeof(char *));
            d->fields = kx__alloc(c, (m->n ? m->n : 1) * sizeof(char *));
            if (!d->name || !d->rules || !d->fields)
                return -ENOMEM;
            for (size_t j = 0; j < m->n; j++) {
                if (m->vals[j]->type != KX_YAML_SCALAR || m->keys[j]->type != KX_YAML_SCALAR)
                    return kx_yaml_err(c->err, c->file, m->vals[j],
                                       "an alias must map rule names to field names");
                d->rules[j] = kx__strndup(c, m->keys[j]->str, m->keys[j]->len);
                d->fields[j] = kx__strndup(c, m->vals[j]->str, m->vals[j]->len);
                if (!d->rules[j] || !d->fields[j])
                    return -ENOMEM;
            }
        }
    }

    /* Sigma puts `generate` at the top level; pySigma also reads it inside `correlation`. */
    const kx_yaml_node *gen = kx_yaml_get(root, "generate");
    if (!gen)
        gen = kx_yaml_get(corr, "generate");
    if (gen && (rc = kx_yaml_bool(gen, c->file, &pv->corr_generate, c->err)))
        return rc;
    return 0;
}

static int load_doc(kx_ruleset *rs, kx__ctx *c, const kx_yaml_node *root)
{
    if (root->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, root, "a rule must be a YAML mapping");
    const kx_yaml_node *det = kx_yaml_get(root, "detection");
    const kx_yaml_node *corr = kx_yaml_get(root, "correlation");
    kx_rule *r = kx__alloc(c, sizeof(*r));
    rule_priv *pv = kx__alloc(c, sizeof(*pv));
    char *file = kx__strndup(c, c->file, strlen(c->file));
    if (!r || !pv || !file)
        return -ENOMEM;
    r->priv = pv;
    r->file = file;
    r->line = root->line;
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
        return kx_yaml_get(root, "filter")
                   ? kx_yaml_err(c->err, c->file, root, "Sigma filters are not supported yet")
                   : kx_yaml_err(c->err, c->file, root, "missing required key \"detection\"");

    int rc;
    const char *id, *name, *level;
    if ((rc = opt_str(c, root, "title", &r->title)) || (rc = opt_str(c, root, "id", &id)) ||
        (rc = opt_str(c, root, "name", &name)) || (rc = opt_str(c, root, "level", &level)) ||
        (rc = opt_str(c, root, "team", &r->team)) ||
        (rc = opt_str(c, root, "category", &r->category)))
        return rc;
    const kx_yaml_node *n = kx_yaml_get(root, "id");
    pv->id_line = n ? n->line : root->line;
    pv->id_col = n ? n->col : root->col;
    n = kx_yaml_get(root, "name");
    pv->name_line = n ? n->line : root->line;
    pv->name_col = n ? n->col : root->col;
    r->name = name;
    r->id = id ? id : name ? name : r->title;
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
        if ((rc = str_list(c, n, "tags", &tags, &r->ntags)))
            return rc;
        r->tags = tags;
    }

    if (corr) {
        r->kind = KX_RULE_CORRELATION;
        rc = compile_correlation(c, root, corr, r, pv);
    } else {
        r->kind = KX_RULE_DETECTION;
        if (!(pv->det = kx__alloc(c, sizeof(*pv->det))))
            return -ENOMEM;
        rc = compile_logsource(c, kx_yaml_get(root, "logsource"), pv->det);
        if (!rc)
            rc = compile_detection(c, det, pv->det);
    }
    return rc ? rc : push_rule(rs, r, c->err);
}

static int load_file(kx_ruleset *rs, const char *path, kx_err *err)
{
    kx_yaml_doc *docs = NULL;
    int rc = kx_yaml_load_file(path, &docs, err);
    if (rc)
        return rc;
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .file = path, .err = err};
    for (kx_yaml_doc *d = docs; d && !rc; d = d->next)
        if (d->root && !kx_yaml_is_null(d->root))
            rc = load_doc(rs, &c, d->root);
    kx_yaml_free(docs);
    return rc;
}

/* ---- after all files: unique ids and names, correlation references ---- */

static int cmp_id(const void *a, const void *b)
{
    const kx_rule *x = *(kx_rule *const *)a, *y = *(kx_rule *const *)b;
    int c = strcmp(x->id, y->id);
    return c ? c : x->index < y->index ? -1 : 1;
}

static int cmp_name(const void *a, const void *b)
{
    const kx_rule *x = *(kx_rule *const *)a, *y = *(kx_rule *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->index < y->index ? -1 : 1;
}

static const kx_rule *lookup(kx_rule **sorted, size_t n, bool by_name, const char *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(by_name ? sorted[mid]->name : sorted[mid]->id, key);
        if (c == 0)
            return sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The field name group-by/value entry `want` reads in what ref j matched: the alias' field
 * for that rule when `want` is an alias, else `want` itself. */
static int alias_field(kx__ctx *c, const kx_rule *r, const rule_priv *pv, size_t j,
                       const char *want, const char **out)
{
    const kx_rule *t = r->refs[j];
    for (size_t a = 0; a < pv->naliases; a++) {
        const alias_def *d = &pv->aliases[a];
        if (strcmp(d->name, want))
            continue;
        for (size_t k = 0; k < d->n; k++) {
            if (!strcmp(d->rules[k], pv->ref_names[j]) || !strcmp(d->rules[k], t->id) ||
                (t->name && !strcmp(d->rules[k], t->name))) {
                *out = d->fields[k];
                return 0;
            }
        }
        return kx_err_set(c->err, r->file, d->line, d->col,
                          "alias \"%s\" gives no field for rule \"%s\"", d->name, pv->ref_names[j]);
    }
    *out = want;
    return 0;
}

static int resolve_fields(kx__ctx *c, kx_rule *r, const rule_priv *pv)
{
    for (size_t a = 0; a < pv->naliases; a++) {
        bool used = false;
        for (size_t i = 0; i < r->ngroup_by; i++)
            used |= !strcmp(r->group_by[i], pv->aliases[a].name);
        for (size_t i = 0; i < r->nvalue_fields; i++)
            used |= !strcmp(pv->value_fields[i], pv->aliases[a].name);
        if (!used)
            kx_log(KX_LOG_WARN, "rules", "%s:%d:%d: alias \"%s\" is not used in group-by", r->file,
                   pv->aliases[a].line, pv->aliases[a].col, pv->aliases[a].name);
    }
    size_t ng = r->ngroup_by, nv = r->nvalue_fields;
    const char **gf = kx__alloc(c, (r->nrefs * ng > 0 ? r->nrefs * ng : 1) * sizeof(*gf));
    const char **vf = kx__alloc(c, (r->nrefs * nv > 0 ? r->nrefs * nv : 1) * sizeof(*vf));
    if (!gf || !vf)
        return -ENOMEM;
    for (size_t j = 0; j < r->nrefs; j++) {
        for (size_t i = 0; i < ng; i++) {
            int rc = alias_field(c, r, pv, j, r->group_by[i], &gf[j * ng + i]);
            if (rc)
                return rc;
        }
        for (size_t i = 0; i < nv; i++) {
            int rc = alias_field(c, r, pv, j, pv->value_fields[i], &vf[j * nv + i]);
            if (rc)
                return rc;
        }
    }
    r->group_fields = gf;
    r->value_fields = vf;
    r->value_names = pv->value_fields;
    return 0;
}

/* Longest path of correlation references below r (a cycle runs past the limit). */
static int chain_depth(const kx_rule *r, int depth)
{
    if (depth > KX_RULE_MAX_CHAIN)
        return depth;
    int best = depth + 1;
    for (size_t j = 0; j < r->nrefs; j++) {
        if (r->refs[j]->kind != KX_RULE_CORRELATION)
            continue;
        int d = chain_depth(r->refs[j], depth + 1);
        if (d > best)
            best = d;
        if (best > KX_RULE_MAX_CHAIN)
            break;
    }
    return best;
}

static int resolve(kx_ruleset *rs, kx_err *err)
{
    size_t n = rs->n, nn = 0;
    kx_rule **by_id = malloc((n ? n : 1) * sizeof(*by_id));
    kx_rule **by_name = malloc((n ? n : 1) * sizeof(*by_name));
    int rc = 0;
    if (!by_id || !by_name) {
        rc = kx_err_set(err, NULL, 0, 0, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        by_id[i] = rs->rules[i];
        if (rs->rules[i]->name)
            by_name[nn++] = rs->rules[i];
    }
    qsort(by_id, n, sizeof(*by_id), cmp_id);
    qsort(by_name, nn, sizeof(*by_name), cmp_name);
    /* Names first: a rule without an id takes its name as id, and the name is what the
     * author wrote twice. */
    for (size_t i = 1; i < nn && !rc; i++) {
        const kx_rule *a = by_name[i - 1], *b = by_name[i];
        const rule_priv *pb = b->priv;
        if (!strcmp(a->name, b->name))
            rc = kx_err_set(err, b->file, pb->name_line, pb->name_col,
                            "duplicate rule name \"%s\" (first defined at %s:%d)", b->name, a->file,
                            a->line);
    }
    for (size_t i = 1; i < n && !rc; i++) {
        const kx_rule *a = by_id[i - 1], *b = by_id[i];
        const rule_priv *pb = b->priv;
        if (!strcmp(a->id, b->id))
            rc = kx_err_set(err, b->file, pb->id_line, pb->id_col,
                            "duplicate rule id \"%s\" (first defined at %s:%d)", b->id, a->file,
                            a->line);
    }
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .err = err};
    /* Pass 1: resolve each correlation's references and count them per detection rule. */
    for (size_t i = 0; i < n && !rc; i++) {
        kx_rule *r = rs->rules[i];
        rule_priv *pv = r->priv;
        if (r->kind != KX_RULE_CORRELATION)
            continue;
        c.file = r->file;
        const kx_rule **refs = kx__alloc(&c, pv->nrefs * sizeof(*refs));
        if (!refs) {
            rc = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < pv->nrefs && !rc; j++) {
            const char *ref = pv->ref_names[j];
            const kx_rule *t = lookup(by_id, n, false, ref);
            if (!t)
                t = lookup(by_name, nn, true, ref);
            if (!t)
                rc = kx_err_set(err, r->file, pv->ref_line[j], pv->ref_col[j],
                                "correlation references unknown rule \"%s\"", ref);
            else if (t == r)
                rc = kx_err_set(err, r->file, pv->ref_line[j], pv->ref_col[j],
                                "correlation references itself");
            else if (t->kind == KX_RULE_CORRELATION &&
                     (t->corr_type == KX_CORR_ABSENCE || t->closing))
                rc = kx_err_set(err, r->file, pv->ref_line[j], pv->ref_col[j],
                                "\"%s\" is %s: its alerts cannot feed another correlation", ref,
                                t->closing ? "judged when windows close" : "an absence rule");
            else
                refs[j] = t;
        }
        if (rc)
            break;
        r->refs = refs;
        r->nrefs = pv->nrefs;
        if ((rc = resolve_fields(&c, r, pv)))
            break;
        for (size_t j = 0; j < r->nrefs; j++) {
            kx_rule *t = rs->rules[refs[j]->index];
            if (t->ncorrelations == 0)
                t->generate = false; /* first correlation seen decides until one says true */
            t->ncorrelations++;
            if (pv->corr_generate)
                t->generate = true;
        }
    }
    /* Chains must end: no cycles, at most KX_RULE_MAX_CHAIN correlations deep. */
    for (size_t i = 0; i < n && !rc; i++) {
        kx_rule *r = rs->rules[i];
        if (r->kind == KX_RULE_CORRELATION && chain_depth(r, 0) > KX_RULE_MAX_CHAIN)
            rc = kx_err_set(err, r->file, r->line, 1,
                            "correlation \"%s\" is part of a reference cycle or a chain deeper "
                            "than %d",
                            r->id, KX_RULE_MAX_CHAIN);
    }
    /* Pass 2: back-links from referenced rules to the correlations that count them. */
    for (size_t i = 0; i < n && !rc; i++) {
        kx_rule *t = rs->rules[i];
        if (t->ncorrelations == 0)
            continue;
        c.file = t->file;
        const kx_rule **v = kx__alloc(&c, t->ncorrelations * sizeof(*v));
        if (!v) {
            rc = -ENOMEM;
            break;
        }
        t->correlations = v;
        t->ncorrelations = 0;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        kx_rule *r = rs->rules[i];
        for (size_t j = 0; r->kind == KX_RULE_CORRELATION && j < r->nrefs; j++) {
            kx_rule *t = rs->rules[r->refs[j]->index];
            ((const kx_rule **)t->correlations)[t->ncorrelations++] = r;
        }
    }
out:
    free(by_id);
    free(by_name);
    return rc;
}

/* ---- public API ---- */

int kx_ruleset_load(const char *const *paths, size_t npaths, kx_ruleset **out, kx_err *err)
{
    kx_ruleset *rs = calloc(1, sizeof(*rs));
    strvec files = {0};
    int rc = 0;
    if (!rs)
        return kx_err_set(err, NULL, 0, 0, "out of memory"), -ENOMEM;
    kx_arena_init(&rs->arena, KX__ARENA_BLOCK);
    rs->mctx = pcre2_match_context_create(NULL);
    if (!rs->mctx) {
        rc = kx_err_set(err, NULL, 0, 0, "out of memory");
        goto fail;
    }
    pcre2_set_match_limit(rs->mctx, KX__RE_MATCH_LIMIT);
    pcre2_set_depth_limit(rs->mctx, KX__RE_DEPTH_LIMIT);
    for (size_t i = 0; i < npaths && !rc; i++)
        rc = collect(paths[i], &files, err);
    for (size_t i = 0; i < files.n && !rc; i++)
        rc = load_file(rs, files.v[i], err);
    if (!rc)
        rc = resolve(rs, err);
    if (!rc)
        rc = kx__cset_create(&rs->arena, rs->rules, rs->n, &rs->cs, err);
    if (rc)
        goto fail;
    strvec_free(&files);
    *out = rs;
    return 0;
fail:
    strvec_free(&files);
    kx_ruleset_destroy(rs);
    return rc;
}

void kx_ruleset_destroy(kx_ruleset *rs)
{
    if (!rs)
        return;
    for (kx__res *r = rs->res, *nx; r; r = nx) {
        nx = r->next;
        kx__res_free(r);
        free(r);
    }
    kx__cset_destroy(rs->cs);
    pcre2_match_context_free(rs->mctx);
    free(rs->rules);
    kx_arena_fini(&rs->arena);
    free(rs);
}

size_t kx_ruleset_size(const kx_ruleset *rs)
{
    return rs->n;
}

kx_rule *kx_ruleset_at(kx_ruleset *rs, size_t i)
{
    return i < rs->n ? rs->rules[i] : NULL;
}

const kx__detection *kx__rule_detection(const kx_rule *r)
{
    return r->kind == KX_RULE_DETECTION ? ((const rule_priv *)r->priv)->det : NULL;
}

size_t kx_ruleset_match(kx_ruleset *rs, const kx_event *ev, kx_match_cb cb, void *ud)
{
    kx__re_event_gen++;
    return kx__cset_match(rs->cs, ev, rs->mctx, cb, ud);
}

const kx__cset *kx__ruleset_cset(const kx_ruleset *rs)
{
    return rs->cs;
}

void kx_ruleset_stats_get(const kx_ruleset *rs, kx_ruleset_stats *out)
{
    *out = rs->cs->stats;
}

void kx_ruleset_set_prefilter(kx_ruleset *rs, bool on)
{
    rs->cs->prefilter_on = on;
}

bool kx_corr_holds(const kx_rule *c, double v)
{
    for (size_t i = 0; i < c->ncond; i++) {
        double x = c->cond[i].value;
        bool ok;
        switch (c->cond[i].cmp) {
        case KX_CMP_GT:
            ok = v > x;
            break;
        case KX_CMP_GTE:
            ok = v >= x;
            break;
        case KX_CMP_LT:
            ok = v < x;
            break;
        case KX_CMP_LTE:
            ok = v <= x;
            break;
        case KX_CMP_EQ:
            ok = v == x;
            break;
        default:
            ok = v != x;
            break;
        }
        if (!ok)
            return false;
    }
    return true;
}

int kx_corr_ref_index(const kx_rule *c, const kx_rule *ref)
{
    for (size_t j = 0; j < c->nrefs; j++)
        if (c->refs[j] == ref)
            return (int)j;
    return -1;
}

bool kx_cmp_eval(kx_cmp cmp, int64_t threshold, int64_t count)
{
    switch (cmp) {
    case KX_CMP_NEQ:
        return count != threshold;
    case KX_CMP_GT:
        return count > threshold;
    case KX_CMP_GTE:
        return count >= threshold;
    case KX_CMP_LT:
        return count < threshold;
    case KX_CMP_LTE:
        return count <= threshold;
    case KX_CMP_EQ:
        return count == threshold;
    }
    return false;
}
