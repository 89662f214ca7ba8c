/*
 * After every file is loaded: ids and names must be unique across the whole set, and each
 * correlation's references (by id or name, possibly in other files, possibly other
 * correlations: chaining) are linked, with their group-by and value fields resolved through
 * aliases per referenced rule.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_int.h"

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
            kx__warn(c, r->file, pv->aliases[a].line, pv->aliases[a].col,
                     "alias \"%s\" is not used in group-by", pv->aliases[a].name);
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

int kx__resolve(kx_ruleset *rs, kx__diag *dg, kx_err *err)
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
            rc = kx__diag_error(dg,
                                kx_err_set(err, b->file, pb->name_line, pb->name_col,
                                           "duplicate rule name \"%s\" (first defined at %s:%d)",
                                           b->name, a->file, a->line),
                                err);
    }
    for (size_t i = 1; i < n && !rc; i++) {
        const kx_rule *a = by_id[i - 1], *b = by_id[i];
        const rule_priv *pa = a->priv, *pb = b->priv;
        /* ids taken from equal names: one mistake, reported above */
        bool from_names = !pa->id_written && !pb->id_written && a->name && b->name;
        if (!strcmp(a->id, b->id) && !from_names)
            rc = kx__diag_error(dg,
                                kx_err_set(err, b->file, pb->id_line, pb->id_col,
                                           "duplicate rule id \"%s\" (first defined at %s:%d)",
                                           b->id, a->file, a->line),
                                err);
    }
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .err = err, .rx = &rs->rx, .dg = dg};
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
        bool bad = false; /* linting: every reference is checked */
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
            if (rc && dg && rc != -ENOMEM) {
                kx__diag_error(dg, rc, err);
                rc = 0;
                bad = true;
            }
        }
        if (bad) {
            r->refs = NULL; /* linting: reported, and this correlation counts nothing */
            r->nrefs = 0;
            continue;
        }
        if (rc)
            break;
        r->refs = refs;
        r->nrefs = pv->nrefs;
        if ((rc = resolve_fields(&c, r, pv)) && rc != -ENOMEM &&
            (rc = kx__diag_error(dg, rc, err)) == 0) {
            r->refs = NULL;
            r->nrefs = 0;
            continue;
        }
        if (rc)
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
            rc = kx__diag_error(dg,
                                kx_err_set(err, r->file, r->line, 1,
                                           "correlation \"%s\" is part of a reference cycle or "
                                           "a chain deeper than %d",
                                           r->id, KX_RULE_MAX_CHAIN),
                                err);
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
