/*
 * Field mappings (like pySigma's processing pipelines: field name mapping, and conditions
 * added per logsource): generic
 * Sigma rules name Sigma's taxonomy fields (User, SourceIp, CommandLine...), klaxon's
 * decoders produce their own (user, src_ip, command). A mapping document in the rules tree
 * says which is which for a logsource:
 *
 *   title: Linux syslog as klaxon decodes it
 *   logsource: {product: linux}
 *   fieldmapping:
 *     User: user
 *     SourceIp: src_ip
 *     Image: [exe, process]        # several: any of them
 *   conditions:                    # optional: what every rule of the logsource must also meet
 *     program: [sshd, sudo]
 *
 * Every detection rule whose logsource lies within the mapping's reads the mapped fields
 * instead (names compare exactly, as Sigma's do); a field mapped to several reads any of
 * them (the map holding it becomes one map per field, OR-ed, as pySigma's one-to-many
 * mapping does). A correlation's group-by and value fields, read from the events a rule it
 * counts matched, are mapped as that rule's fields are (to the first of several). Applied
 * after Sigma filters, so a filter written in the taxonomy is mapped with its rule; the
 * mapped names are what `rules explain` shows. A rule under two mappings takes both, in
 * load order.
 *
 * `conditions` (pySigma's add-condition transformation) is a selection in the decoders'
 * names: each rule within the logsource becomes `(rule) and conditions` after its fields are
 * mapped (kx__narrow, as a filter narrows), and lists the mapping among its filters.
 */
#include <errno.h>
#include <string.h>

#include "rules_int.h"

bool kx__is_mapping_doc(const kx_yaml_node *root)
{
    return root->type == KX_YAML_MAP && kx_yaml_get(root, "fieldmapping") &&
           !kx_yaml_get(root, "detection") && !kx_yaml_get(root, "correlation") &&
           !kx_yaml_get(root, "filter");
}

static const char *const mapping_keys[] = {"title",      "id",       "description", "author",
                                           "date",       "modified", "logsource",   "fieldmapping",
                                           "conditions", "fields",   NULL};

/* The detection a mapping's `conditions` stand for, {conditions: MAP, condition:
 * conditions}, built in the arena around the document's map (which the caller keeps). */
static const kx_yaml_node *conditions_detection(kx__ctx *c, const kx_yaml_node *conds)
{
    kx_yaml_node *nodes = kx__alloc(c, 3 * sizeof(*nodes));
    kx_yaml_node **keys = kx__alloc(c, 2 * sizeof(*keys)), **vals = kx__alloc(c, 2 * sizeof(*vals));
    if (!nodes || !keys || !vals)
        return NULL;
    kx_yaml_node name = {.type = KX_YAML_SCALAR,
                         .line = conds->line,
                         .col = conds->col,
                         .str = "conditions",
                         .len = 10};
    nodes[0] = name;
    nodes[1] = name;
    nodes[1].str = "condition";
    nodes[1].len = 9;
    keys[0] = &nodes[0];
    vals[0] = (kx_yaml_node *)conds;
    keys[1] = &nodes[1];
    vals[1] = &nodes[0]; /* condition: conditions */
    nodes[2] = (kx_yaml_node){.type = KX_YAML_MAP,
                              .line = conds->line,
                              .col = conds->col,
                              .n = 2,
                              .keys = keys,
                              .vals = vals};
    return &nodes[2];
}

int kx__mapping_add(kx_ruleset *rs, kx__ctx *c, const kx_yaml_node *root)
{
    int rc = kx_yaml_check_keys(root, c->file, mapping_keys, c->err);
    if (rc)
        return rc;
    const kx_yaml_node *t = kx_yaml_get(root, "title");
    if (!t || t->type != KX_YAML_SCALAR || !t->len)
        return kx_yaml_err(c->err, c->file, t ? t : root, "a field mapping needs a title");
    const kx_yaml_node *ls = kx_yaml_get(root, "logsource");
    if (!ls || ls->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, ls ? ls : root,
                           "a field mapping needs a logsource (a mapping): the rules it maps");
    const kx_yaml_node *m = kx_yaml_get(root, "fieldmapping");
    const kx_yaml_node *conds = kx_yaml_get(root, "conditions");
    if (m->type != KX_YAML_MAP || (!m->n && !conds))
        return kx_yaml_err(c->err, c->file, m,
                           "\"fieldmapping\" maps Sigma field names to the decoders' fields");
    const kx_yaml_node *fields = kx_yaml_get(root, "fields");
    for (size_t i = 0; fields && fields->type == KX_YAML_SEQ && i < fields->n; i++)
        if (fields->vals[i]->type != KX_YAML_SCALAR || !fields->vals[i]->len)
            return kx_yaml_err(c->err, c->file, fields->vals[i], "expected a field name");
    if (fields && (fields->type != KX_YAML_SEQ || !fields->n))
        return kx_yaml_err(c->err, c->file, fields,
                           "\"fields\" lists every field the logsource's events carry");
    if (conds && (conds->type != KX_YAML_MAP || !conds->n))
        return kx_yaml_err(c->err, c->file, conds,
                           "\"conditions\" is a selection (a map of field: value) every rule of "
                           "the logsource must also meet");
    if (conds) {
        /* compiled once here for its errors, as a filter is; again per rule when applied */
        const kx_yaml_node *det = conditions_detection(c, conds);
        kx__detection probe = {0};
        kx__ctx pc = *c;
        pc.rule = NULL;
        pc.re_fail_closed = false;
        pc.time_zone = NULL;
        if (!det)
            return -ENOMEM;
        if ((rc = kx__detection_compile(&pc, det, true, &probe)))
            return rc;
    }
    for (size_t i = 0; i < m->n; i++) {
        const kx_yaml_node *k = m->keys[i], *v = m->vals[i];
        bool ok = k->type == KX_YAML_SCALAR && k->len && !memchr(k->str, '|', k->len);
        if (ok && v->type == KX_YAML_SEQ) {
            ok = v->n > 0;
            for (size_t j = 0; ok && j < v->n; j++)
                ok = v->vals[j]->type == KX_YAML_SCALAR && v->vals[j]->len;
        } else if (ok) {
            ok = v->type == KX_YAML_SCALAR && v->len;
        }
        if (!ok)
            return kx_yaml_err(c->err, c->file, v,
                               "a field mapping maps a field name to a field name or a list "
                               "of them");
    }
    return kx__keep(c, root, &rs->mappings_tail);
}

/* The targets of name under map m (NULL: not mapped), and how many. */
static const kx_yaml_node *const *targets(const kx_yaml_node *m, const char *name, size_t *n)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->keys[i]->str, name) != 0)
            continue;
        const kx_yaml_node *v = m->vals[i];
        *n = v->type == KX_YAML_SEQ ? v->n : 1;
        if (v->type == KX_YAML_SEQ)
            return (const kx_yaml_node *const *)v->vals;
        return (const kx_yaml_node *const *)&m->vals[i];
    }
    *n = 0;
    return NULL;
}

/* Does a fieldref value of f name a mapped field? */
static bool ref_mapped(const kx_yaml_node *m, const kx__fcond *f)
{
    size_t n;
    for (size_t v = 0; v < f->nvals; v++)
        if (f->vals[v].kind == KX__VAL_FIELDREF && targets(m, f->vals[v].ref, &n))
            return true;
    return false;
}

/* f's fieldref values with the fields they name mapped (to the first of several, as a
 * correlation's fields are): vals is f's own copy. */
static int map_refs(kx__ctx *c, const kx_yaml_node *m, kx__value *vals, size_t n)
{
    for (size_t v = 0; v < n; v++) {
        size_t nt;
        const kx_yaml_node *const *t =
            vals[v].kind == KX__VAL_FIELDREF ? targets(m, vals[v].ref, &nt) : NULL;
        if (t && !(vals[v].ref = kx__strndup(c, t[0]->str, t[0]->len)))
            return -ENOMEM;
    }
    return 0;
}

/* One map of a search under m: as many maps as the combinations of its fields' targets
 * (one, when every mapped field has one target), appended to out[*nout]. */
static int map_group(kx__ctx *c, const kx_yaml_node *m, const kx__group *g, kx__group *out,
                     size_t *nout, size_t cap)
{
    size_t combos = 1;
    for (size_t i = 0; i < g->nconds; i++) {
        size_t n = 0;
        if (g->conds[i].field && targets(m, g->conds[i].field, &n) && n > 1)
            combos = combos > cap / n ? cap + 1 : combos * n;
    }
    if (*nout + combos > cap)
        return kx_err_set(c->err, c->file, 0, 0, "field mapping: too many combinations"), -E2BIG;
    for (size_t k = 0; k < combos; k++) {
        kx__fcond *conds = kx__alloc(c, (g->nconds ? g->nconds : 1) * sizeof(*conds));
        if (!conds)
            return -ENOMEM;
        size_t rest = k;
        for (size_t i = 0; i < g->nconds; i++) {
            conds[i] = g->conds[i];
            size_t n = 0;
            const kx_yaml_node *const *t =
                g->conds[i].field ? targets(m, g->conds[i].field, &n) : NULL;
            if (!t && ref_mapped(m, &g->conds[i])) {
                kx__value *vals =
                    kx__alloc(c, (conds[i].nvals ? conds[i].nvals : 1) * sizeof(*vals));
                if (!vals)
                    return -ENOMEM;
                memcpy(vals, g->conds[i].vals, conds[i].nvals * sizeof(*vals));
                conds[i].vals = vals;
                if (map_refs(c, m, vals, conds[i].nvals))
                    return -ENOMEM;
            }
            if (!t)
                continue;
            const kx_yaml_node *pick = t[rest % n];
            rest /= n;
            /* Own copies of the values: the compiled set writes per-field data into them
             * (prefilter atoms), and each field needs its own. */
            kx__value *vals = kx__alloc(c, (conds[i].nvals ? conds[i].nvals : 1) * sizeof(*vals));
            if (!vals || !(conds[i].field = kx__strndup(c, pick->str, pick->len)))
                return -ENOMEM;
            /* the key as explain shows it: the mapped name, the modifiers as written */
            const char *mods = g->conds[i].key ? strchr(g->conds[i].key, '|') : NULL;
            size_t ml = mods ? strlen(mods) : 0, kl = pick->len + ml;
            char *key = kx__alloc(c, kl + 1);
            if (!key)
                return -ENOMEM;
            memcpy(key, pick->str, pick->len);
            memcpy(key + pick->len, mods ? mods : "", ml);
            conds[i].key = key;
            memcpy(vals, g->conds[i].vals, conds[i].nvals * sizeof(*vals));
            conds[i].vals = vals;
            if (map_refs(c, m, vals, conds[i].nvals))
                return -ENOMEM;
        }
        out[(*nout)++] = (kx__group){.conds = conds, .nconds = g->nconds};
    }
    return 0;
}

#define KX__MAP_MAX_GROUPS 4096 /* maps one search may grow to */

/* How many maps g becomes under m (0: none of its fields is mapped). */
static size_t combos_of(const kx_yaml_node *m, const kx__group *g)
{
    size_t combos = 1;
    bool mapped = false;
    for (size_t i = 0; i < g->nconds; i++) {
        size_t n = 0;
        if (g->conds[i].field && targets(m, g->conds[i].field, &n)) {
            mapped = true;
            combos = combos > KX__MAP_MAX_GROUPS / n ? KX__MAP_MAX_GROUPS + 1 : combos * n;
        } else if (ref_mapped(m, &g->conds[i])) {
            mapped = true;
        }
    }
    return mapped ? combos : 0;
}

static int map_detection(kx__ctx *c, const kx_yaml_node *m, kx__detection *d)
{
    kx__search *s = NULL;
    for (size_t i = 0; i < d->nsearches; i++) {
        const kx__search *old = &d->searches[i];
        size_t total = 0, mapped = 0;
        for (size_t j = 0; !old->tod && j < old->ngroups && total <= KX__MAP_MAX_GROUPS; j++) {
            size_t k = combos_of(m, &old->groups[j]);
            mapped += k > 0;
            total += k ? k : 1;
        }
        if (!mapped)
            continue; /* nothing of this search is mapped: it stays as it is */
        if (total > KX__MAP_MAX_GROUPS)
            return kx_err_set(c->err, c->file, 0, 0,
                              "field mapping: search \"%s\" of rule \"%s\" would grow to more "
                              "than %d maps",
                              old->name ? old->name : "?", c->rule ? c->rule->title : "?",
                              KX__MAP_MAX_GROUPS),
                   -E2BIG;
        if (!s) { /* a copy of the searches, the first time one changes */
            if (!(s = kx__alloc(c, d->nsearches * sizeof(*s))))
                return -ENOMEM;
            memcpy(s, d->searches, d->nsearches * sizeof(*s));
        }
        kx__group *g = kx__alloc(c, total * sizeof(*g));
        size_t n = 0;
        if (!g)
            return -ENOMEM;
        for (size_t j = 0; j < old->ngroups; j++) {
            int rc = map_group(c, m, &old->groups[j], g, &n, total);
            if (rc)
                return rc;
        }
        s[i].groups = g;
        s[i].ngroups = n;
    }
    if (s)
        d->searches = s;
    return 0;
}

/* The rule's `fields` (what its alerts show of the event), mapped to the first target. */
static int map_shown_fields(kx__ctx *c, const kx_yaml_node *m, kx_rule *r)
{
    const char **f = NULL;
    for (size_t i = 0; i < r->nfields; i++) {
        size_t n;
        const kx_yaml_node *const *t = targets(m, r->fields[i], &n);
        if (!t)
            continue;
        if (!f) {
            if (!(f = kx__alloc(c, r->nfields * sizeof(*f))))
                return -ENOMEM;
            memcpy(f, r->fields, r->nfields * sizeof(*f));
        }
        if (!(f[i] = kx__strndup(c, t[0]->str, t[0]->len)))
            return -ENOMEM;
    }
    if (f)
        r->fields = f;
    return 0;
}

/* ---- fields the logsource does not have ---- */

static bool listed(const kx_yaml_node *fields, const char *f)
{
    for (size_t i = 0; i < fields->n; i++)
        if (!strcmp(fields->vals[i]->str, f))
            return true;
    return false;
}

typedef struct seen_fields {
    const char *v[64];
    size_t n;
} seen_fields;

/* A warning for f read by r, once per rule. */
static void unknown_field(kx__ctx *c, const kx__filter *x, const kx_rule *r, seen_fields *seen,
                          const char *f)
{
    for (size_t i = 0; i < seen->n; i++)
        if (!strcmp(seen->v[i], f))
            return;
    if (seen->n < KX_ARRAY_LEN(seen->v))
        seen->v[seen->n++] = f;
    const kx_yaml_node *t = kx_yaml_get(x->root, "title");
    kx__warn(c, r->file, r->line, 1,
             "rule \"%s\" reads field \"%s\", which the events of its logsource do not carry "
             "(field mapping \"%.*s\" in %s lists their fields)",
             r->title, f, t ? (int)t->len : 1, t ? t->str : "?", x->file);
}

/* Each field the rules within a mapping's logsource read must be one of its `fields`. */
static void check_fields(kx_ruleset *rs, kx__diag *dg)
{
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .dg = dg};
    for (const kx__filter *x = rs->mappings; x; x = x->next) {
        const kx_yaml_node *fields = kx_yaml_get(x->root, "fields");
        const kx_yaml_node *ls = kx_yaml_get(x->root, "logsource");
        for (size_t i = 0; fields && i < rs->n; i++) {
            const kx_rule *r = rs->rules[i];
            const kx__detection *d = kx__rule_detection(r);
            if (!d || !kx__within(d, ls))
                continue;
            seen_fields seen = {.n = 0};
            for (size_t s = 0; s < d->nsearches; s++)
                for (size_t g = 0; g < d->searches[s].ngroups; g++) {
                    const kx__group *grp = &d->searches[s].groups[g];
                    for (size_t k = 0; k < grp->nconds; k++) {
                        const kx__fcond *f = &grp->conds[k];
                        if (f->field && !listed(fields, f->field))
                            unknown_field(&c, x, r, &seen, f->field);
                        for (size_t v = 0; v < f->nvals; v++)
                            if (f->vals[v].kind == KX__VAL_FIELDREF &&
                                !listed(fields, f->vals[v].ref))
                                unknown_field(&c, x, r, &seen, f->vals[v].ref);
                    }
                }
        }
    }
}

/* A correlation's field read from rule t's events, mapped as t's fields are. */
static const char *map_field(kx_ruleset *rs, const kx_rule *t, const char *f)
{
    const kx__detection *d = kx__rule_detection(t);
    for (const kx__filter *x = rs->mappings; d && x; x = x->next) {
        if (!kx__within(d, kx_yaml_get(x->root, "logsource")))
            continue;
        size_t n;
        const kx_yaml_node *const *to = targets(kx_yaml_get(x->root, "fieldmapping"), f, &n);
        if (to)
            f = to[0]->str;
    }
    return f;
}

int kx__mappings_apply(kx_ruleset *rs, kx__diag *dg, kx_err *err)
{
    int rc = 0;
    /* Every mapping's renames first, then every mapping's conditions: conditions are written
     * in the decoders' names, which no mapping may rename again. */
    for (int pass = 0; pass < 2; pass++) {
        for (const kx__filter *x = rs->mappings; x && !rc; x = x->next) {
            const kx_yaml_node *ls = kx_yaml_get(x->root, "logsource");
            const kx_yaml_node *m = kx_yaml_get(x->root, "fieldmapping");
            kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .file = x->file, .err = err};
            const kx_yaml_node *conds = pass ? kx_yaml_get(x->root, "conditions") : NULL;
            if (pass && !conds)
                continue;
            if (conds && !(conds = conditions_detection(&c, conds)))
                rc = -ENOMEM;
            for (size_t i = 0; i < rs->n && !rc; i++) {
                kx_rule *r = rs->rules[i];
                c.rule = r;
                if (r->kind != KX_RULE_DETECTION || !kx__within(kx__rule_detection(r), ls))
                    continue;
                if (!pass) {
                    rc = map_detection(&c, m, ((rule_priv *)r->priv)->det);
                    if (!rc)
                        rc = map_shown_fields(&c, m, r);
                } else {
                    rc = kx__narrow(rs, x->file, conds, kx_yaml_get(x->root, "title"), r, err);
                }
                rc = kx__diag_error(dg, rc, err);
            }
        }
    }
    if (!rc)
        check_fields(rs, dg);
    /* Correlations: their fields as the counted rules' events carry them. The strings come
     * from the kept YAML, which goes after this: copied into the arena. */
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .err = err};
    for (size_t i = 0; i < rs->n && !rc && rs->mappings; i++) {
        kx_rule *r = rs->rules[i];
        if (r->kind != KX_RULE_CORRELATION)
            continue;
        for (size_t j = 0; j < r->nrefs && !rc; j++) {
            const char **gf = (const char **)r->group_fields, **vf = (const char **)r->value_fields;
            for (size_t k = 0; gf && k < r->ngroup_by && !rc; k++) {
                const char *to = map_field(rs, r->refs[j], gf[j * r->ngroup_by + k]);
                if (to != gf[j * r->ngroup_by + k] &&
                    !(gf[j * r->ngroup_by + k] = kx__strndup(&c, to, strlen(to))))
                    rc = -ENOMEM;
            }
            for (size_t k = 0; vf && k < r->nvalue_fields && !rc; k++) {
                const char *to = map_field(rs, r->refs[j], vf[j * r->nvalue_fields + k]);
                if (to != vf[j * r->nvalue_fields + k] &&
                    !(vf[j * r->nvalue_fields + k] = kx__strndup(&c, to, strlen(to))))
                    rc = -ENOMEM;
            }
        }
    }
    return rc;
}
