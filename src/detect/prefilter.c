/*
 * The prefilter: every literal of every rule, scanned for in one pass per field.
 *
 * Atoms. A string value's pattern (equals, startswith, endswith, contains, or a wildcard
 * pattern's longest literal run) becomes an atom: (field id, kind, cased, bytes). Identical
 * atoms of different rules are one atom (`Image|endswith: \powershell.exe` in a hundred rules
 * is scanned for once). A regular expression Hyperscan answers in byte mode is an atom of
 * its own (kind KX__ATOM_RE): the pattern, scanned with the field's other regexes in one
 * multi-pattern database. Values that are neither (numbers, null, exists, cidr, fieldref,
 * neq, PCRE2-only regexes, keyword regexes) and patterns without a literal (a lone *) have
 * no atom.
 *
 * Databases. Per route (route.c), the atoms of one field that the route's rules use go into
 * one Hyperscan block-mode literal database, caseless unless `cased` (ASCII folding, as the
 * interpreter does); anchors are checked in the scan callback (scan.c). Keyword atoms form
 * one more database, scanned over the raw text and every field value, as keyword matching
 * reads them.
 *
 * Exactness. An equals/startswith/endswith/contains atom hit is exactly "some value of the
 * field matches the pattern", so evaluation reads the hit (kx__value.exact) instead of
 * comparing bytes again. A wildcard pattern's atom and a regex atom are only necessary: the
 * value is compared (the regex run) exactly when its rule is evaluated. A regex atom's
 * database is compiled without UTF-8 mode, which answers only ASCII values like PCRE2, so
 * any other value counts as a hit of every regex atom of its field (scan.c).
 *
 * Triggers. For each rule a set of atoms at least one of which must hit for the rule to
 * match: computed over the condition tree, an OR needs any of its children's triggers, an
 * AND the cheapest child's (short literals hit often, so length decides), a NOT nothing.
 * A rule whose condition needs nothing is evaluated for every event it applies to.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect_set.h"

/* A rule's need: at least one of atoms must hit, or (any) nothing is known. */
typedef struct need {
    uint32_t *a;
    size_t n, cap;
    bool any;
} need;

static void need_free(need *nd)
{
    free(nd->a);
    memset(nd, 0, sizeof(*nd));
}

static int need_push(need *nd, uint32_t atom)
{
    if (nd->n == nd->cap) {
        size_t cap = nd->cap ? nd->cap * 2 : 8;
        uint32_t *a = realloc(nd->a, cap * sizeof(*a));
        if (!a)
            return -ENOMEM;
        nd->a = a;
        nd->cap = cap;
    }
    nd->a[nd->n++] = atom;
    return 0;
}

/* ---- atoms ---- */

static uint32_t atom_hash(uint32_t fid, uint8_t kind, bool cased, unsigned re_flags, const char *s,
                          size_t n)
{
    uint32_t h = 2166136261u ^ fid ^ ((uint32_t)kind << 24) ^ (cased ? 0x80000000u : 0) ^
                 (re_flags * 0x9e3779b9u);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int slots_grow(kx__prefilter *pf)
{
    uint32_t cap = pf->mask ? (pf->mask + 1) * 2 : 256;
    uint32_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < pf->natoms; i++) {
        const kx__atom *a = &pf->atoms[i];
        uint32_t h = atom_hash(a->fid, a->kind, a->cased, a->re_flags, a->s, a->len) & (cap - 1);
        while (slots[h])
            h = (h + 1) & (cap - 1);
        slots[h] = i + 1;
    }
    free(pf->slots);
    pf->slots = slots;
    pf->mask = cap - 1;
    return 0;
}

static int atom_get(kx__prefilter *pf, uint32_t fid, uint8_t kind, bool cased, unsigned re_flags,
                    const char *s, size_t len, uint32_t *out)
{
    if (!pf->slots || (pf->natoms + 1) * 2 > pf->mask + 1) {
        int rc = slots_grow(pf);
        if (rc)
            return rc;
    }
    uint32_t h = atom_hash(fid, kind, cased, re_flags, s, len) & pf->mask;
    for (uint32_t id; (id = pf->slots[h]) != 0; h = (h + 1) & pf->mask) {
        const kx__atom *a = &pf->atoms[id - 1];
        if (a->fid == fid && a->kind == kind && a->cased == cased && a->re_flags == re_flags &&
            a->len == len && memcmp(a->s, s, len) == 0) {
            *out = id - 1;
            return 0;
        }
    }
    if (pf->natoms == pf->cap) {
        uint32_t cap = pf->cap ? pf->cap * 2 : 256;
        kx__atom *atoms = realloc(pf->atoms, cap * sizeof(*atoms));
        if (!atoms)
            return -ENOMEM;
        pf->atoms = atoms;
        pf->cap = cap;
    }
    uint32_t id = pf->natoms++;
    kx__atom *a = &pf->atoms[id];
    memset(a, 0, sizeof(*a));
    a->fid = fid;
    a->kind = kind;
    a->cased = cased;
    a->s = s;
    a->len = (uint32_t)len;
    a->re_flags = re_flags;
    pf->slots[h] = id + 1;
    *out = id;
    return 0;
}

/* A wildcard pattern's literal run this short hits nearly every value: it makes a poor
 * trigger, so such a value gets no atom and is compared when its rule is evaluated. */
#define KX__ATOM_MIN_INEXACT 3
/* windash: a value with at most this many dash positions is expanded into its 5^k spellings
 * (each an exact atom) rather than scanned for its longest literal run. */
#define KX__ATOM_MAX_DASHES 2

static const char *const dashes[5] = {"-", "/", "\xe2\x80\x93", "\xe2\x80\x94", "\xe2\x80\x95"};

typedef struct atoms_out {
    uint32_t ids[64];
    size_t n;
    bool exact;
} atoms_out;

static int add_atom(kx__cset *cs, uint32_t fid, uint8_t kind, bool cased, const char *s, size_t len,
                    atoms_out *out)
{
    if (out->n == KX_ARRAY_LEN(out->ids))
        return 1; /* too many: no atoms for this value */
    return atom_get(&cs->pf, fid, kind, cased, 0, s, len, &out->ids[out->n++]);
}

/* A pattern made of literals and at most KX__ATOM_MAX_DASHES windash positions between an
 * optional leading and trailing *: its spellings, each an exact atom of the anchored kind. */
static int glob_spellings(kx__cset *cs, uint32_t fid, bool cased, const kx__pat *p, atoms_out *out)
{
    size_t lo = 0, hi = p->ntoks, ndash = 0, len = 0;
    bool lead = hi && p->toks[0].kind == KX__TOK_STAR;
    lo += lead;
    bool trail = hi > lo && p->toks[hi - 1].kind == KX__TOK_STAR;
    hi -= trail;
    for (size_t i = lo; i < hi; i++) {
        if (p->toks[i].kind == KX__TOK_DASH)
            ndash++, len += 3;
        else if (p->toks[i].kind == KX__TOK_LIT)
            len += p->toks[i].len;
        else
            return 1; /* * or ? inside */
    }
    if (ndash == 0 || ndash > KX__ATOM_MAX_DASHES || len == 0)
        return 1;
    uint8_t kind = lead && trail ? KX__PAT_CONTAINS
                   : lead        ? KX__PAT_ENDS
                   : trail       ? KX__PAT_STARTS
                                 : KX__PAT_EQ;
    size_t nvar = ndash == 1 ? 5 : 25;
    for (size_t v = 0; v < nvar; v++) {
        char *buf = kx_arena_alloc(cs->arena, len);
        if (!buf)
            return -ENOMEM;
        size_t n = 0, d = 0, pick = v;
        for (size_t i = lo; i < hi; i++) {
            const kx__tok *t = &p->toks[i];
            if (t->kind == KX__TOK_LIT) {
                memcpy(buf + n, t->s, t->len);
                n += t->len;
                continue;
            }
            const char *ds = dashes[pick % 5];
            pick /= 5, d++;
            size_t dl = strlen(ds);
            memcpy(buf + n, ds, dl);
            n += dl;
        }
        int rc = add_atom(cs, fid, kind, cased, buf, n, out);
        if (rc)
            return rc;
    }
    return 0;
}

/* The atoms of pattern p appended to out: rc 1 when p has no usable literal. */
static int pat_atoms(kx__cset *cs, uint32_t fid, bool cased, const kx__pat *p, atoms_out *out)
{
    switch (p->kind) {
    case KX__PAT_EQ:
    case KX__PAT_STARTS:
    case KX__PAT_ENDS:
    case KX__PAT_CONTAINS:
        if (p->len == 0)
            return 1;
        return add_atom(cs, fid, (uint8_t)p->kind, cased, p->s, p->len, out);
    case KX__PAT_GLOB: {
        size_t mark = out->n;
        int rc = glob_spellings(cs, fid, cased, p, out);
        if (rc <= 0)
            return rc;
        out->n = mark;
        const kx__tok *best = NULL;
        for (size_t i = 0; i < p->ntoks; i++)
            if (p->toks[i].kind == KX__TOK_LIT && (!best || p->toks[i].len > best->len))
                best = &p->toks[i];
        if (!best || best->len < KX__ATOM_MIN_INEXACT)
            return 1;
        out->exact = false;
        return add_atom(cs, fid, KX__PAT_CONTAINS, cased, best->s, best->len, out);
    }
    case KX__PAT_ANY:
        break;
    }
    return 1;
}

/* A field's regular expression that Hyperscan answers in byte mode: one atom, the pattern
 * itself, necessary only (non-ASCII values count as hits, scan.c); the value is still
 * matched by its regex when its rule is evaluated. Keyword regexes get none. */
static int regex_atom(kx__cset *cs, uint32_t fid, const kx__value *v, atoms_out *out)
{
    const char *pat;
    unsigned flags;
    if (fid == KX__FID_KEYWORD || !v->re || !kx__regex_byte_form(v->re, &pat, &flags))
        return 1;
    out->exact = false;
    return atom_get(&cs->pf, fid, KX__ATOM_RE, false, flags, pat, strlen(pat), &out->ids[out->n++]);
}

/* Gives v its atoms when every pattern has a literal (or its regex has a byte-mode form);
 * adds them to the rule's list. */
static int atomize_value(kx__cset *cs, uint32_t fid, kx__value *v, need *rule_atoms)
{
    if ((v->kind != KX__VAL_PAT && v->kind != KX__VAL_RE) || v->negate ||
        (v->kind == KX__VAL_PAT && v->npats == 0))
        return 0;
    atoms_out out = {.n = 0, .exact = true};
    if (v->kind == KX__VAL_RE) {
        int rc = regex_atom(cs, fid, v, &out);
        if (rc)
            return rc > 0 ? 0 : rc;
    }
    for (size_t i = 0; v->kind == KX__VAL_PAT && i < v->npats; i++) {
        int rc = pat_atoms(cs, fid, v->cased, &v->pats[i], &out);
        if (rc > 0)
            return 0; /* no atoms: the value is compared when its rule is evaluated */
        if (rc < 0)
            return rc;
    }
    uint32_t *atoms = kx_arena_alloc(cs->arena, out.n * sizeof(*atoms));
    if (!atoms)
        return -ENOMEM;
    memcpy(atoms, out.ids, out.n * sizeof(*atoms));
    v->atoms = atoms; /* in the ruleset's arena, like the value itself */
    v->natoms = out.n;
    v->exact = out.exact;
    for (size_t i = 0; i < out.n; i++) {
        int rc = need_push(rule_atoms, out.ids[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static double need_cost(const kx__prefilter *pf, const need *nd)
{
    /* Short literals hit often: a 2-byte atom costs about as much as many long ones. */
    double c = 0;
    for (size_t i = 0; i < nd->n; i++) {
        uint32_t len = pf->atoms[nd->a[i]].len;
        c += 1.0 + 32.0 / (double)(len * len);
    }
    return c;
}

static int need_or(need *acc, need *kid)
{
    if (acc->any)
        return 0;
    if (kid->any) {
        acc->any = true;
        return 0;
    }
    for (size_t i = 0; i < kid->n; i++) {
        int rc = need_push(acc, kid->a[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* AND: keep the cheaper of acc and kid (a need that says something beats one that does
 * not). kid is consumed. */
static void need_and(const kx__prefilter *pf, need *acc, bool *first, need *kid)
{
    if (*first) {
        *acc = *kid;
        *first = false;
        memset(kid, 0, sizeof(*kid));
        return;
    }
    bool take = !kid->any && (acc->any || need_cost(pf, kid) < need_cost(pf, acc));
    if (take) {
        need_free(acc);
        *acc = *kid;
        memset(kid, 0, sizeof(*kid));
    } else {
        need_free(kid);
    }
}

static int value_need(const kx__value *v, need *out)
{
    memset(out, 0, sizeof(*out));
    if (!v->atoms) {
        out->any = true;
        return 0;
    }
    for (size_t i = 0; i < v->natoms; i++) {
        int rc = need_push(out, v->atoms[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int fcond_need(const kx__prefilter *pf, const kx__fcond *f, need *out)
{
    memset(out, 0, sizeof(*out));
    bool first = true;
    for (size_t i = 0; i < f->nvals; i++) {
        need kid;
        int rc = value_need(&f->vals[i], &kid);
        if (!rc && f->all) {
            need_and(pf, out, &first, &kid);
            continue;
        }
        if (!rc)
            rc = need_or(out, &kid);
        need_free(&kid);
        if (rc)
            return rc;
    }
    if (f->nvals == 0)
        out->any = true;
    return 0;
}

static int search_need(const kx__prefilter *pf, const kx__search *s, need *out)
{
    memset(out, 0, sizeof(*out));
    if (s->tod || s->ngroups == 0) {
        out->any = true;
        return 0;
    }
    for (size_t g = 0; g < s->ngroups && !out->any; g++) {
        const kx__group *grp = &s->groups[g];
        need gn;
        bool first = true;
        memset(&gn, 0, sizeof(gn));
        gn.any = true;
        for (size_t i = 0; i < grp->nconds; i++) {
            need kid;
            int rc = fcond_need(pf, &grp->conds[i], &kid);
            if (rc) {
                need_free(&gn);
                return rc;
            }
            need_and(pf, &gn, &first, &kid);
        }
        int rc = need_or(out, &gn);
        need_free(&gn);
        if (rc)
            return rc;
    }
    return 0;
}

static int cond_need(const kx__prefilter *pf, const kx__cnode *n, const kx__detection *d, need *out)
{
    memset(out, 0, sizeof(*out));
    bool first = true;
    int rc = 0;
    switch (n->op) {
    case KX__C_ID:
        return search_need(pf, &d->searches[n->ids[0]], out);
    case KX__C_ONE_OF:
    case KX__C_ALL_OF:
        for (size_t i = 0; i < n->nids && !rc; i++) {
            need kid;
            rc = search_need(pf, &d->searches[n->ids[i]], &kid);
            if (rc)
                break;
            if (n->op == KX__C_ALL_OF) {
                need_and(pf, out, &first, &kid);
            } else {
                rc = need_or(out, &kid);
                need_free(&kid);
            }
        }
        if (n->nids == 0)
            out->any = true;
        return rc;
    case KX__C_AND:
    case KX__C_OR:
        for (size_t i = 0; i < n->nkids && !rc; i++) {
            need kid;
            rc = cond_need(pf, n->kids[i], d, &kid);
            if (rc)
                break;
            if (n->op == KX__C_AND) {
                need_and(pf, out, &first, &kid);
            } else {
                rc = need_or(out, &kid);
                need_free(&kid);
            }
        }
        if (n->nkids == 0)
            out->any = true;
        return rc;
    case KX__C_NOT:
        out->any = true;
        return 0;
    }
    out->any = true;
    return 0;
}

static int atom_add_rule(kx__atom *a, uint32_t ridx)
{
    if (a->nrules && a->rules[a->nrules - 1] == ridx)
        return 0;
    if (a->nrules == a->cap) {
        uint32_t cap = a->cap ? a->cap * 2 : 4;
        uint32_t *r = realloc(a->rules, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        a->rules = r;
        a->cap = cap;
    }
    a->rules[a->nrules++] = ridx;
    return 0;
}

/* ---- databases ---- */

/* After a compile that returned hrc: the error (what: "literal" or "regex", and which one), or
 * pf's one scratch grown to fit *out too. *out, when compiled, is the caller's to free. */
static int compiled(kx__prefilter *pf, hs_error_t hrc, hs_compile_error_t *ce, const char *what,
                    hs_database_t **out, kx_err *err)
{
    if (hrc != HS_SUCCESS) {
        kx_err_set(err, NULL, 0, 0, "prefilter: Hyperscan refused %s %d: %s", what,
                   ce ? ce->expression : -1, ce ? ce->message : "?");
        hs_free_compile_error(ce);
        *out = NULL;
        return -EINVAL;
    }
    if (hs_alloc_scratch(*out, &pf->scratch) != HS_SUCCESS) {
        kx_err_set(err, NULL, 0, 0, "prefilter: cannot allocate Hyperscan scratch");
        return -ENOMEM;
    }
    return 0;
}

int kx__prefilter_compile(kx__prefilter *pf, const bool *use, uint32_t fid, hs_database_t **out,
                          kx_err *err)
{
    size_t n = 0;
    for (uint32_t i = 0; i < pf->natoms; i++)
        n += use[i] && pf->atoms[i].fid == fid && pf->atoms[i].kind != KX__ATOM_RE;
    *out = NULL;
    if (n == 0)
        return 0;
    const char **exprs = calloc(n, sizeof(*exprs));
    size_t *lens = calloc(n, sizeof(*lens));
    unsigned *flags = calloc(n, sizeof(*flags));
    unsigned *ids = calloc(n, sizeof(*ids));
    int rc = exprs && lens && flags && ids ? 0 : -ENOMEM;
    size_t k = 0;
    for (uint32_t i = 0; i < pf->natoms && !rc; i++) {
        const kx__atom *a = &pf->atoms[i];
        if (!use[i] || a->fid != fid || a->kind == KX__ATOM_RE)
            continue;
        exprs[k] = a->s;
        lens[k] = a->len;
        /* The first occurrence of a literal is its leftmost, so a contains or startswith atom
         * needs no later report; endswith and equals need the last one. */
        bool once = a->kind == KX__PAT_CONTAINS || a->kind == KX__PAT_STARTS;
        flags[k] = (once ? HS_FLAG_SINGLEMATCH : 0) | (a->cased ? 0 : HS_FLAG_CASELESS);
        ids[k] = i;
        k++;
    }
    if (!rc) {
        hs_compile_error_t *ce = NULL;
        hs_error_t hrc = hs_compile_lit_multi(exprs, flags, ids, lens, (unsigned)n, HS_MODE_BLOCK,
                                              NULL, out, &ce);
        rc = compiled(pf, hrc, ce, "literal", out, err);
    }
    free(exprs);
    free(lens);
    free(flags);
    free(ids);
    return rc;
}

int kx__prefilter_compile_re(kx__prefilter *pf, const bool *use, uint32_t fid, hs_database_t **out,
                             uint32_t **ids_out, uint32_t *nids, kx_err *err)
{
    /* Only atoms that are some rule's trigger: a regex atom is never exact, so scanning for
     * one that decides no candidate would be wasted. */
    size_t n = 0;
    for (uint32_t i = 0; i < pf->natoms; i++) {
        const kx__atom *a = &pf->atoms[i];
        n += use[i] && a->fid == fid && a->kind == KX__ATOM_RE && a->nrules > 0;
    }
    *out = NULL;
    *ids_out = NULL;
    *nids = 0;
    if (n == 0)
        return 0;
    const char **exprs = calloc(n, sizeof(*exprs));
    unsigned *flags = calloc(n, sizeof(*flags));
    unsigned *ids = calloc(n, sizeof(*ids));
    uint32_t *keep = calloc(n, sizeof(*keep));
    int rc = exprs && flags && ids && keep ? 0 : -ENOMEM;
    size_t k = 0;
    for (uint32_t i = 0; i < pf->natoms && !rc; i++) {
        const kx__atom *a = &pf->atoms[i];
        if (!use[i] || a->fid != fid || a->kind != KX__ATOM_RE || a->nrules == 0)
            continue;
        exprs[k] = a->s;
        flags[k] = a->re_flags;
        ids[k] = keep[k] = i;
        k++;
    }
    if (!rc) {
        hs_compile_error_t *ce = NULL;
        hs_error_t hrc =
            hs_compile_multi(exprs, flags, ids, (unsigned)n, HS_MODE_BLOCK, NULL, out, &ce);
        rc = compiled(pf, hrc, ce, "regex", out, err);
    }
    free(exprs);
    free(flags);
    free(ids);
    if (rc == -EINVAL) {
        /* Refused together: the ids stay, so the caller can count them all as hit. */
        *ids_out = keep;
        *nids = (uint32_t)n;
        return rc;
    }
    if (rc) {
        hs_free_database(*out);
        *out = NULL;
        free(keep);
        return rc;
    }
    *ids_out = keep;
    *nids = (uint32_t)n;
    return 0;
}

/* ---- build ---- */

static int atomize_rule(kx__cset *cs, const kx__detection *d, need *rule_atoms)
{
    for (size_t s = 0; s < d->nsearches; s++) {
        const kx__search *se = &d->searches[s];
        for (size_t g = 0; g < se->ngroups; g++) {
            const kx__group *grp = &se->groups[g];
            for (size_t c = 0; c < grp->nconds; c++) {
                const kx__fcond *f = &grp->conds[c];
                for (size_t v = 0; v < f->nvals; v++) {
                    int rc = atomize_value(cs, f->fid, (kx__value *)&f->vals[v], rule_atoms);
                    if (rc)
                        return rc;
                }
            }
        }
    }
    return 0;
}

int kx__prefilter_build(kx__cset *cs, kx_rule **rules, size_t n, kx_err *err)
{
    kx__prefilter *pf = &cs->pf;
    size_t nn = n ? n : 1;
    pf->rule_atoms = calloc(nn, sizeof(*pf->rule_atoms));
    pf->rule_natoms = calloc(nn, sizeof(*pf->rule_natoms));
    pf->rule_trig = calloc(nn, sizeof(*pf->rule_trig));
    if (!pf->rule_atoms || !pf->rule_natoms || !pf->rule_trig)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const kx__detection *d = kx__rule_detection(rules[i]);
        if (!d)
            continue;
        need ra = {0};
        int rc = atomize_rule(cs, d, &ra);
        pf->rule_atoms[i] = ra.a;
        pf->rule_natoms[i] = (uint32_t)ra.n;
        if (rc)
            goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        const kx__detection *d = kx__rule_detection(rules[i]);
        if (!d)
            continue;
        need nd;
        int rc = cond_need(pf, d->cond, d, &nd);
        if (!rc && !nd.any) {
            pf->rule_trig[i] = true;
            for (size_t k = 0; k < nd.n && !rc; k++)
                rc = atom_add_rule(&pf->atoms[nd.a[k]], (uint32_t)i);
        }
        need_free(&nd);
        if (rc)
            goto nomem;
    }
    pf->atom_gen = calloc(pf->natoms ? pf->natoms : 1, sizeof(*pf->atom_gen));
    if (!pf->atom_gen)
        goto nomem;
    return 0;
nomem:
    kx_err_set(err, NULL, 0, 0, "out of memory");
    return -ENOMEM;
}

void kx__prefilter_fini(kx__prefilter *pf, size_t nrules)
{
    for (uint32_t i = 0; i < pf->natoms; i++)
        free(pf->atoms[i].rules);
    free(pf->atoms);
    free(pf->slots);
    hs_free_scratch(pf->scratch);
    free(pf->atom_gen);
    for (size_t i = 0; pf->rule_atoms && i < nrules; i++)
        free(pf->rule_atoms[i]);
    free(pf->rule_atoms);
    free(pf->rule_natoms);
    free(pf->rule_trig);
    memset(pf, 0, sizeof(*pf));
}
