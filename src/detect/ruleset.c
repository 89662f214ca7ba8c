/*
 * The ruleset: its life (load runs the passes in order -- files.c, load.c with
 * correlation_load.c, resolve.c, then the compiled set of match.c -- and destroy frees it
 * all), its public accessors, and the build helpers value.c and condition.c share.
 *
 * Loading is all-or-nothing: every rule, string and compiled pattern lives in the ruleset
 * being built (its arena plus a list of regex/time-of-day objects to free), so the first
 * error destroys that one object and the caller's *out is never written. Rules keep the
 * order they appear in (files.c fixes the file order), which is the order kx_ruleset_match
 * reports matches in.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_int.h"

#define KX__ARENA_BLOCK (64 * 1024)

enum { RES_REGEX, RES_TOD };

struct kx__res {
    int kind;
    void *a;
    void *b;
    kx__res *next;
};

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

int kx__res_add_regex(kx__ctx *c, kx__regex *re)
{
    return res_add(c, RES_REGEX, re, NULL);
}

int kx__res_add_tod(kx__ctx *c, kx_timeofday *t)
{
    return res_add(c, RES_TOD, t, NULL);
}

void kx__res_free(kx__res *r)
{
    if (r->kind == RES_REGEX) {
        kx__regex_destroy(r->a);
    } else {
        kx_timeofday_destroy(r->a);
    }
}

/* ---- public API ---- */

/* An empty ruleset to load into, or NULL (err says why). */
static kx_ruleset *rs_new(kx_err *err)
{
    kx_ruleset *rs = calloc(1, sizeof(*rs));
    if (!rs) {
        kx_err_set(err, NULL, 0, 0, "out of memory");
        return NULL;
    }
    kx_arena_init(&rs->arena, KX__ARENA_BLOCK);
    kx_arena_init(&rs->rule_arena, KX__ARENA_BLOCK);
    rs->filters_tail = &rs->filters;
    rs->mappings_tail = &rs->mappings;
    if (kx__rx_init(&rs->rx)) {
        kx_err_set(err, NULL, 0, 0, "out of memory");
        kx_ruleset_destroy(rs);
        return NULL;
    }
    return rs;
}

int kx_ruleset_load(const char *const *paths, size_t npaths, kx_ruleset **out, kx_err *err)
{
    kx_ruleset *rs = rs_new(err);
    strvec files = {0}, lists = {0};
    int rc = 0;
    if (!rs)
        return -ENOMEM;
    for (size_t i = 0; i < npaths && !rc; i++)
        rc = kx__rule_files(paths[i], &files, &lists, err);
    if (!rc)
        rc = kx__lists_load(rs, &lists, NULL, err);
    for (size_t i = 0; i < files.n && !rc; i++)
        rc = kx__load_file(rs, files.v[i], NULL, err);
    if (!rc)
        rc = kx__resolve(rs, NULL, err);
    if (!rc)
        rc = kx__filters_apply(rs, NULL, err);
    if (!rc)
        rc = kx__mappings_apply(rs, NULL, err);
    kx__filters_release(rs);
    if (!rc)
        kx__never_warn(rs, NULL);
    if (!rc)
        rc = kx__cset_create(&rs->arena, rs->rules, rs->n, &rs->cs, err);
    if (rc)
        goto fail;
    kx__strvec_free(&files);
    kx__strvec_free(&lists);
    if (rs->rx.nlinear + rs->rx.npcre2)
        kx_log(KX_LOG_INFO, "detect",
               "regular expressions: %zu in linear time (Hyperscan), %zu on PCRE2 under limits "
               "(listed at debug level)",
               rs->rx.nlinear, rs->rx.npcre2);
    *out = rs;
    return 0;
fail:
    kx__strvec_free(&files);
    kx__strvec_free(&lists);
    kx_ruleset_destroy(rs);
    return rc;
}

void kx__warn(kx__ctx *c, const char *file, int line, int col, const char *fmt, ...)
{
    kx_err e = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    snprintf(e.file, sizeof(e.file), "%s", file ? file : "");
    e.line = line;
    e.col = col;
    if (c->dg) {
        c->dg->warnings++;
        c->dg->cb(c->dg->ud, KX_LINT_WARNING, &e);
        return;
    }
    char buf[1024];
    kx_err_format(&e, buf, sizeof(buf));
    kx_log(KX_LOG_WARN, "rules", "%s", buf);
}

int kx__diag_error(kx__diag *dg, int rc, const kx_err *err)
{
    if (!rc || !dg || rc == -ENOMEM)
        return rc;
    dg->errors++;
    dg->cb(dg->ud, KX_LINT_ERROR, err);
    return 0;
}

size_t kx_ruleset_lint(const char *const *paths, size_t npaths, kx_lint_cb cb, void *ud,
                       kx_lint_totals *totals)
{
    kx__diag dg = {.cb = cb, .ud = ud};
    kx_err err = {0};
    kx_ruleset *rs = rs_new(&err);
    strvec files = {0}, lists = {0};
    int rc = 0;
    if (!rs) {
        cb(ud, KX_LINT_ERROR, &err);
        return 1;
    }
    for (size_t i = 0; i < npaths && !rc; i++)
        if ((rc = kx__rule_files(paths[i], &files, &lists, &err)))
            rc = kx__diag_error(&dg, rc, &err);
    if (!rc)
        rc = kx__lists_load(rs, &lists, &dg, &err);
    for (size_t i = 0; i < files.n && !rc; i++)
        rc = kx__load_file(rs, files.v[i], &dg, &err);
    if (!rc)
        rc = kx__resolve(rs, &dg, &err);
    if (!rc)
        rc = kx__filters_apply(rs, &dg, &err);
    if (!rc)
        rc = kx__mappings_apply(rs, &dg, &err);
    kx__filters_release(rs);
    if (!rc)
        kx__never_warn(rs, &dg);
    /* The compiled set only for a set that would load: a left-out rule may have left
     * patterns behind. What it can refuse (a pattern set too large) is rare. */
    if (!rc && !dg.errors)
        rc =
            kx__diag_error(&dg, kx__cset_create(&rs->arena, rs->rules, rs->n, &rs->cs, &err), &err);
    if (rc) { /* out of memory: the lint itself could not go on */
        kx_err_set(&err, NULL, 0, 0, "out of memory");
        dg.errors++;
        cb(ud, KX_LINT_ERROR, &err);
    }
    if (totals) {
        *totals = (kx_lint_totals){.errors = dg.errors, .warnings = dg.warnings};
        for (size_t i = 0; i < rs->n; i++)
            rs->rules[i]->kind == KX_RULE_CORRELATION ? totals->correlation++ : totals->detection++;
    }
    kx__strvec_free(&files);
    kx__strvec_free(&lists);
    kx_ruleset_destroy(rs);
    return dg.errors;
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
    kx__filters_release(rs);
    kx__lists_free(&rs->lists);
    kx__cset_destroy(rs->cs);
    kx__rx_fini(&rs->rx);
    free(rs->rules);
    kx_arena_fini(&rs->arena);
    kx_arena_fini(&rs->rule_arena);
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

void kx_rule_logsource(const kx_rule *r, const char **product, const char **service,
                       const char **category)
{
    const kx__detection *d = kx__rule_detection(r);
    *product = d ? d->product : NULL;
    *service = d ? d->service : NULL;
    *category = d ? d->category : NULL;
}

size_t kx_ruleset_match(kx_ruleset *rs, const kx_event *ev, kx_match_cb cb, void *ud)
{
    kx__rx_event_begin(&rs->rx);
    return kx__cset_match(rs->cs, ev, &rs->rx, cb, ud);
}

const char *kx_ruleset_match_reason(const kx_ruleset *rs)
{
    return rs->rx.match_reason;
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

int kx_ruleset_prepare(kx_ruleset *rs, const char *product, const char *service,
                       const char *category)
{
    return kx__route_prepare(rs->cs, product, service, category);
}

void kx_ruleset_prepare_like(kx_ruleset *rs, const kx_ruleset *old)
{
    kx__routes_prepare_like(rs->cs, old ? old->cs : NULL);
}

void kx_ruleset_set_memo(kx_ruleset *rs, bool on)
{
    rs->cs->memo_on = on;
}

static int cmp_rule_id(const void *a, const void *b)
{
    return strcmp((*(const kx_rule *const *)a)->id, (*(const kx_rule *const *)b)->id);
}

size_t kx_ruleset_carry_counters(kx_ruleset *to, const kx_ruleset *from)
{
    if (!from || !from->n)
        return 0;
    const kx_rule **old = malloc(from->n * sizeof(*old));
    if (!old)
        return 0; /* the counters start over: a metric reset, nothing else */
    memcpy(old, from->rules, from->n * sizeof(*old));
    qsort(old, from->n, sizeof(*old), cmp_rule_id);
    size_t kept = 0;
    for (size_t i = 0; i < to->n; i++) {
        kx_rule *r = to->rules[i];
        const kx_rule *key = r, *const *hit =
                                    bsearch(&key, old, from->n, sizeof(*old), cmp_rule_id);
        if (hit && (*hit)->digest == r->digest) {
            r->matches = (*hit)->matches;
            kept++;
        }
    }
    free(old);
    return kept;
}

int kx_corr_ref_index(const kx_rule *c, const kx_rule *ref)
{
    for (size_t j = 0; j < c->nrefs; j++)
        if (c->refs[j] == ref)
            return (int)j;
    return -1;
}
