/*
 * Detection rules that can never match (`klaxon rules lint` warns, a load logs it): what the
 * compiled rule says for certain, after filters and field mappings, never a guess about the
 * events. A rule is reported only when no event whatever could make its condition true:
 *
 *   - a field condition with no value left (`expand` of an empty list);
 *   - a time part no time has (`EventTime|hour: 24`, `|month: 13`...);
 *   - one map asking a field to be absent (`exists: false`) and to hold a value;
 *   - a condition false for every truth value of its search identifiers (`sel and not sel`),
 *     with the identifiers above taken as false.
 *
 * Search identifiers are taken as independent of each other, which can only allow more: a
 * condition that no assignment satisfies is unsatisfiable for real events too.
 */
#include <stdio.h>
#include <string.h>

#include "rules_int.h"

/* Up to this many identifiers the condition is checked against every assignment. */
#define KX__NEVER_MAX_VARS 16

static bool timepart_never(const kx__value *v)
{
    static const double lo[] = {0, 0, 0, 1, 1, 1, -1e18}, hi[] = {0, 59, 23, 31, 53, 12, 1e18};
    if (v->kind != KX__VAL_NUM || !v->timepart || v->cmp != KX_CMP_EQ || v->negate)
        return false;
    return v->num < lo[v->timepart] || v->num > hi[v->timepart] || v->num != (double)(long)v->num;
}

/* Does v need the field to be there with a value? */
static bool needs_value(const kx__value *v)
{
    return !(v->kind == KX__VAL_NULL || (v->kind == KX__VAL_EXISTS && !v->exists));
}

/* Does f hold only where the field has a value? (OR: every value needs one; all: one does) */
static bool fcond_needs_value(const kx__fcond *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nvals; i++)
        n += needs_value(&f->vals[i]);
    return f->all ? n > 0 : n > 0 && n == f->nvals;
}

static bool absent_only(const kx__fcond *f)
{
    return f->field && f->nvals == 1 && f->vals[0].kind == KX__VAL_EXISTS && !f->vals[0].exists;
}

/* Why field condition f can never hold, into why; false when it can. */
static bool fcond_never(const kx__fcond *f, char *why, size_t cap)
{
    if (f->nvals == 0) {
        snprintf(why, cap, "\"%s\" has no value to compare (an empty list)", f->key);
        return true;
    }
    size_t never = 0;
    for (size_t i = 0; i < f->nvals; i++)
        never += timepart_never(&f->vals[i]);
    if (f->all ? never > 0 : never == f->nvals) {
        snprintf(why, cap, "\"%s\" asks for a time part no time has", f->key);
        return true;
    }
    return false;
}

static bool group_never(const kx__group *g, char *why, size_t cap)
{
    for (size_t i = 0; i < g->nconds; i++) {
        const kx__fcond *f = &g->conds[i];
        if (fcond_never(f, why, cap))
            return true;
        if (!absent_only(f))
            continue;
        for (size_t j = 0; j < g->nconds; j++) {
            const kx__fcond *o = &g->conds[j];
            if (j != i && o->field && !strcmp(o->field, f->field) && fcond_needs_value(o)) {
                snprintf(why, cap, "\"%s\" and \"%s\" in one map: absent and with a value", f->key,
                         o->key);
                return true;
            }
        }
    }
    return false;
}

static bool search_never(const kx__search *s, char *why, size_t cap)
{
    if (s->tod)
        return false;
    char first[256] = "no map", other[256] = "";
    for (size_t g = 0; g < s->ngroups; g++)
        if (!group_never(&s->groups[g], g ? other : first, sizeof(first)))
            return false;
    snprintf(why, cap, "search \"%s\": %s", s->name ? s->name : "?", first);
    return true;
}

/* The condition's value with the identifiers' values in bits (bit i: identifier i). */
static bool eval(const kx__cnode *n, const uint8_t *val)
{
    switch (n->op) {
    case KX__C_ID:
        return val[n->ids[0]];
    case KX__C_ONE_OF:
        for (size_t i = 0; i < n->nids; i++)
            if (val[n->ids[i]])
                return true;
        return false;
    case KX__C_ALL_OF:
        for (size_t i = 0; i < n->nids; i++)
            if (!val[n->ids[i]])
                return false;
        return true;
    case KX__C_AND:
        for (size_t i = 0; i < n->nkids; i++)
            if (!eval(n->kids[i], val))
                return false;
        return true;
    case KX__C_OR:
        for (size_t i = 0; i < n->nkids; i++)
            if (eval(n->kids[i], val))
                return true;
        return false;
    case KX__C_NOT:
        return !eval(n->kids[0], val);
    }
    return false;
}

/* Is the condition true for some assignment of the free identifiers (the others false)? */
static bool satisfiable(const kx__detection *d, uint8_t *val, const size_t *free_ids, size_t nfree)
{
    for (uint32_t m = 0; m < (1u << nfree); m++) {
        for (size_t k = 0; k < nfree; k++)
            val[free_ids[k]] = (m >> k) & 1;
        if (eval(d->cond, val))
            return true;
    }
    return false;
}

bool kx__detection_never(const kx__detection *d, char *why, size_t cap)
{
    enum { NEVER = 0, FREE = 1 };
    uint8_t kind[256], val[256];
    size_t free_ids[KX__NEVER_MAX_VARS], nfree = 0;
    if (d->nsearches > sizeof(kind))
        return false; /* too many to say anything for certain cheaply */
    char reason[512] = "";
    for (size_t i = 0; i < d->nsearches; i++) {
        char w[512];
        kind[i] = search_never(&d->searches[i], w, sizeof(w)) ? NEVER : FREE;
        if (kind[i] == NEVER && !reason[0])
            snprintf(reason, sizeof(reason), "%s", w);
        val[i] = 0;
        if (kind[i] == FREE) {
            if (nfree == KX__NEVER_MAX_VARS)
                return false;
            free_ids[nfree++] = i;
        }
    }
    if (satisfiable(d, val, free_ids, nfree))
        return false;
    /* Why: the identifiers that never hold, unless the condition fails even with them free. */
    bool own = !reason[0];
    if (reason[0] && d->nsearches <= KX__NEVER_MAX_VARS) {
        size_t all[KX__NEVER_MAX_VARS];
        for (size_t i = 0; i < d->nsearches; i++)
            all[i] = i;
        own = !satisfiable(d, val, all, d->nsearches);
    }
    snprintf(why, cap, "%s",
             own || !reason[0] ? "its condition is false whatever its search identifiers say"
                               : reason);
    return true;
}

void kx__never_warn(kx_ruleset *rs, kx__diag *dg)
{
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .dg = dg};
    for (size_t i = 0; i < rs->n; i++) {
        const kx_rule *r = rs->rules[i];
        const kx__detection *d = kx__rule_detection(r);
        char why[600];
        if (d && kx__detection_never(d, why, sizeof(why)))
            kx__warn(&c, r->file, r->line, 1, "rule \"%s\" can never match: %s", r->title, why);
    }
}
