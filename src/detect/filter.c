/*
 * Sigma filters (the Sigma filters specification, with pySigma's semantics): a document
 * with `filter` where a rule has `detection` narrows other rules without editing them, so a
 * team silences a known-benign case of a shipped rule in a file of its own:
 *
 *   title: Backups run as root by the backup agent
 *   logsource: {product: linux, service: sudo}
 *   filter:
 *     rules: [sudo_root]            # ids or names, or `any` (every rule of the logsource)
 *     agent: {user: backup-agent}
 *     condition: not agent
 *
 * Each detection rule the filter names (or every one, with `any`) whose logsource lies
 * within the filter's (each of product, service, category the filter gives is the rule's
 * too) matches only when its own condition and the filter's both hold: `(rule) and
 * (filter)`. The filter's search identifiers are compiled again for every rule it narrows
 * and appended to that rule's (their ids shifted past the rule's own), so the compiled set
 * -- prefilter, routes, memo -- sees an ordinary rule. Filters apply to detection rules
 * only (a correlation is narrowed through the rules it counts). A named rule whose logsource
 * is outside the filter's is not narrowed, and a load says so (a warning).
 *
 * The filters' YAML is kept from their file's load (load.c) to here, after every rule is
 * loaded and resolved: a filter may come before the rules it names.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_int.h"

bool kx__is_filter_doc(const kx_yaml_node *root)
{
    return root->type == KX_YAML_MAP && kx_yaml_get(root, "filter") &&
           !kx_yaml_get(root, "detection") && !kx_yaml_get(root, "correlation");
}

int kx__filter_keep_docs(kx_ruleset *rs, kx_yaml_doc *docs)
{
    kx_yaml_doc **v = realloc(rs->kept_docs, (rs->nkept + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    rs->kept_docs = v;
    rs->kept_docs[rs->nkept++] = docs;
    return 0;
}

void kx__filters_release(kx_ruleset *rs)
{
    for (size_t i = 0; i < rs->nkept; i++)
        kx_yaml_free(rs->kept_docs[i]);
    free(rs->kept_docs);
    rs->kept_docs = NULL;
    rs->nkept = 0;
    rs->filters = NULL;
    rs->filters_tail = &rs->filters;
    rs->mappings = NULL;
    rs->mappings_tail = &rs->mappings;
}

/* The keys a filter document may have: the specification's, and the metadata rules carry. */
static const char *const filter_keys[] = {
    "title",  "id",        "name",   "description", "author", "date", "modified",
    "status", "logsource", "filter", "references",  "tags",   NULL};

int kx__filter_add(kx_ruleset *rs, kx__ctx *c, const kx_yaml_node *root)
{
    int rc = kx_yaml_check_keys(root, c->file, filter_keys, c->err);
    if (rc)
        return rc;
    const kx_yaml_node *t = kx_yaml_get(root, "title");
    if (!t)
        return kx_yaml_err(c->err, c->file, root, "missing required key \"title\"");
    if (t->type != KX_YAML_SCALAR || !t->len)
        return kx_yaml_err(c->err, c->file, t, "\"title\" must be a non-empty string");
    const kx_yaml_node *ls = kx_yaml_get(root, "logsource");
    if (!ls || ls->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, ls ? ls : root,
                           "a filter needs a logsource (a mapping): the rules it may narrow");
    const kx_yaml_node *f = kx_yaml_get(root, "filter");
    if (f->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, f, "\"filter\" must be a mapping");
    const kx_yaml_node *rules = kx_yaml_get(f, "rules");
    if (!rules)
        return kx_yaml_err(c->err, c->file, f,
                           "a filter needs \"rules\": the rules' ids or names, or any");
    if (rules->type == KX_YAML_MAP || (rules->type == KX_YAML_SEQ && rules->n == 0))
        return kx_yaml_err(c->err, c->file, rules,
                           "\"rules\" must be a rule id or name, a list of them, or any");
    const kx_yaml_node *cond = kx_yaml_get(f, "condition");
    if (!cond)
        return kx_yaml_err(c->err, c->file, f, "missing required key \"condition\"");
    if (cond->type != KX_YAML_SCALAR)
        return kx_yaml_err(c->err, c->file, cond, "a filter's condition is one string");
    /* Compiled once here for its errors (they point into the filter's file at load, not at
     * the first rule it narrows); compiled again per rule when applied. */
    kx__detection probe = {0};
    kx__ctx pc = *c; /* not as part of the rule loaded before it in the file */
    pc.rule = NULL;
    pc.re_fail_closed = false;
    pc.time_zone = NULL;
    if ((rc = kx__detection_compile(&pc, f, true, &probe)))
        return rc;
    return kx__keep(c, root, &rs->filters_tail);
}

int kx__keep(kx__ctx *c, const kx_yaml_node *root, kx__filter ***tail)
{
    kx__filter *x = kx__alloc(c, sizeof(*x));
    char *file = kx__strndup(c, c->file, strlen(c->file));
    if (!x || !file)
        return -ENOMEM;
    x->file = file;
    x->root = root;
    **tail = x;
    *tail = &x->next;
    return 0;
}

static bool same(const char *a, const char *b)
{
    return a && b && !strcasecmp(a, b);
}

/* The rule's logsource lies within ls (a filter's or a mapping's): each part ls gives, the
 * rule has. */
bool kx__within(const kx__detection *d, const kx_yaml_node *ls)
{
    static const char *const parts[] = {"product", "service", "category"};
    const char *have[] = {d->product, d->service, d->category};
    for (size_t i = 0; i < 3; i++) {
        const kx_yaml_node *p = kx_yaml_get(ls, parts[i]);
        if (p && !kx_yaml_is_null(p) && (p->type != KX_YAML_SCALAR || !same(p->str, have[i])))
            return false;
    }
    return true;
}

static void shift_ids(kx__cnode *n, uint32_t by)
{
    uint32_t *ids = (uint32_t *)n->ids; /* this compile's own, in the arena */
    for (size_t i = 0; i < n->nids; i++)
        ids[i] += by;
    for (size_t i = 0; i < n->nkids; i++)
        shift_ids(n->kids[i], by);
}

int kx__narrow(kx_ruleset *rs, const char *file, const kx_yaml_node *det, const kx_yaml_node *title,
               kx_rule *r, kx_err *err)
{
    rule_priv *pv = r->priv;
    kx__detection *d = pv->det;
    kx__ctx c = {.arena = &rs->arena,
                 .res = &rs->res,
                 .file = file,
                 .err = err,
                 .rx = &rs->rx,
                 .rule = r,
                 .re_fail_closed = d->re_fail_closed,
                 .lists = &rs->lists,
                 .time_zone = d->tz};
    kx__detection fd = {0};
    int rc = kx__detection_compile(&c, det, true, &fd);
    if (rc)
        return rc;
    size_t n = d->nsearches;
    kx__search *s = kx__alloc(&c, (n + fd.nsearches) * sizeof(*s));
    kx__cnode *and = kx__alloc(&c, sizeof(*and));
    kx__cnode **kids = kx__alloc(&c, 2 * sizeof(*kids));
    const char **names = kx__alloc(&c, (r->nfilters + 1) * sizeof(*names));
    char *name = title ? kx__strndup(&c, title->str, title->len) : NULL;
    if (!s || !and || !kids || !names || !name)
        return -ENOMEM;
    memcpy(s, d->searches, n * sizeof(*s));
    memcpy(s + n, fd.searches, fd.nsearches * sizeof(*s));
    shift_ids((kx__cnode *)fd.cond, (uint32_t)n);
    kids[0] = (kx__cnode *)d->cond;
    kids[1] = (kx__cnode *)fd.cond;
    *and = (kx__cnode){.op = KX__C_AND, .kids = kids, .nkids = 2};
    d->searches = s;
    d->nsearches = n + fd.nsearches;
    d->cond = and;
    if (r->nfilters)
        memcpy(names, r->filters, r->nfilters * sizeof(*names));
    names[r->nfilters] = name;
    r->filters = names;
    r->nfilters++;
    return 0;
}

/* A rule named by a filter: its id, else its name. */
static kx_rule *named(kx_ruleset *rs, const char *ref)
{
    for (size_t i = 0; i < rs->n; i++)
        if (!strcmp(rs->rules[i]->id, ref))
            return rs->rules[i];
    for (size_t i = 0; i < rs->n; i++)
        if (rs->rules[i]->name && !strcmp(rs->rules[i]->name, ref))
            return rs->rules[i];
    return NULL;
}

static int apply_one(kx_ruleset *rs, const kx__filter *f, kx__diag *dg, kx_err *err)
{
    const kx_yaml_node *fm = kx_yaml_get(f->root, "filter");
    const kx_yaml_node *rules = kx_yaml_get(fm, "rules");
    const kx_yaml_node *ls = kx_yaml_get(f->root, "logsource");
    const kx_yaml_node *t = kx_yaml_get(f->root, "title");
    kx__ctx wc = {.arena = &rs->arena, .err = err, .dg = dg};
    int rc = 0;
    /* each rule once, however often it is named */
    bool *done = kx__alloc(&wc, rs->n ? rs->n : 1);
    if (!done)
        return -ENOMEM;
    if (rules->type == KX_YAML_SCALAR && !strcasecmp(rules->str, "any")) {
        for (size_t i = 0; i < rs->n && !rc; i++) {
            kx_rule *r = rs->rules[i];
            if (r->kind == KX_RULE_DETECTION && kx__within(kx__rule_detection(r), ls))
                rc = kx__diag_error(dg, kx__narrow(rs, f->file, fm, t, r, err), err);
        }
        return rc;
    }
    const kx_yaml_node *const *refs =
        rules->type == KX_YAML_SEQ ? (const kx_yaml_node *const *)rules->vals : &rules;
    size_t nrefs = rules->type == KX_YAML_SEQ ? rules->n : 1;
    for (size_t j = 0; j < nrefs && !rc; j++) {
        const kx_yaml_node *ref = refs[j];
        kx_rule *r = ref->type == KX_YAML_SCALAR ? named(rs, ref->str) : NULL;
        if (!r)
            rc = kx_yaml_err(err, f->file, ref, "filter names unknown rule \"%s\"",
                             ref->type == KX_YAML_SCALAR ? ref->str : "?");
        else if (r->kind != KX_RULE_DETECTION)
            rc = kx_yaml_err(err, f->file, ref,
                             "\"%s\" is a correlation: a filter narrows detection rules (name "
                             "the rules it counts)",
                             ref->str);
        else if (done[r->index])
            ;
        else if (!kx__within(kx__rule_detection(r), ls))
            kx__warn(&wc, f->file, ref->line, ref->col,
                     "filter \"%.*s\" does not narrow \"%s\": its logsource is not within the "
                     "filter's",
                     (int)t->len, t->str, ref->str);
        else if (!(rc = kx__narrow(rs, f->file, fm, t, r, err)))
            done[r->index] = true;
        rc = kx__diag_error(dg, rc, err);
    }
    return rc;
}

int kx__filters_apply(kx_ruleset *rs, kx__diag *dg, kx_err *err)
{
    int rc = 0;
    for (const kx__filter *f = rs->filters; f && !rc; f = f->next)
        rc = apply_one(rs, f, dg, err);
    return rc;
}
