/*
 * Sigma conditions: a recursive-descent parser into an AST, and its evaluation.
 *
 * Grammar (precedence from loosest to tightest, as the Sigma specification lists it):
 *     expr    := and ("or" and)*
 *     and     := unary ("and" unary)*
 *     unary   := "not" unary | primary
 *     primary := "(" expr ")" | quant "of" (pattern | "them") | identifier
 *     quant   := "1" | "any" | "all"
 * and/or nodes are n-ary so a long chain evaluates in a loop, not by deep recursion; the
 * nesting of parentheses and "not" is capped (KX__COND_MAX_DEPTH). The AST has room for the
 * parts of Sigma not written yet: new node kinds (aggregations would sit above it as their
 * own node) extend kx__cop without touching the parser's structure.
 *
 * "x of pattern" is resolved at load time to the list of identifier indices it covers, so
 * evaluation never looks at names. Errors point at the offending token: the column is the
 * condition scalar's column plus the token's offset when the scalar is plain and single-line.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect_int.h"
#include "klaxon/metrics.h"

enum { T_END, T_WORD, T_LPAREN, T_RPAREN, T_PIPE };

typedef struct parser {
    kx__ctx *c;
    const kx_yaml_node *node;
    kx__detection *d;
    const char *s;
    size_t n;
    size_t pos; /* scan position */
    int tok;    /* current token */
    size_t ts;  /* its offset */
    size_t tl;  /* its length */
    int depth;
} parser;

static int perr(parser *p, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int perr(parser *p, size_t off, const char *fmt, ...)
{
    char msg[sizeof(p->c->err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int col = p->node->col;
    /* Offsets only translate to columns when the text is exactly what the file holds. */
    if (!p->node->quoted && !memchr(p->s, '\n', p->n))
        col += (int)off;
    return kx_err_set(p->c->err, p->c->file, p->node->line, col, "%s", msg);
}

static void next(parser *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                             p->s[p->pos] == '\r'))
        p->pos++;
    p->ts = p->pos;
    p->tl = 0;
    if (p->pos == p->n) {
        p->tok = T_END;
        return;
    }
    char ch = p->s[p->pos];
    if (ch == '(' || ch == ')' || ch == '|') {
        p->tok = ch == '(' ? T_LPAREN : ch == ')' ? T_RPAREN : T_PIPE;
        p->tl = 1;
        p->pos++;
        return;
    }
    while (p->pos < p->n && !strchr(" \t\r\n()|", p->s[p->pos]))
        p->pos++;
    p->tok = T_WORD;
    p->tl = p->pos - p->ts;
}

static bool word_is(const parser *p, const char *w)
{
    return p->tok == T_WORD && p->tl == strlen(w) && memcmp(p->s + p->ts, w, p->tl) == 0;
}

static bool is_reserved(const parser *p)
{
    return word_is(p, "and") || word_is(p, "or") || word_is(p, "not") || word_is(p, "of") ||
           word_is(p, "them");
}

static kx__cnode *node_new(parser *p, kx__cop op)
{
    kx__cnode *n = kx__alloc(p->c, sizeof(*n));
    if (n)
        n->op = op;
    return n;
}

/* Identifier names may hold * wildcards ("selection_*"); nothing else is special. */
static bool name_match(const char *pat, size_t pn, const char *name)
{
    size_t p = 0, i = 0, star = SIZE_MAX, star_i = 0, n = strlen(name);
    while (i < n) {
        if (p < pn && pat[p] == '*') {
            star = p++;
            star_i = i;
        } else if (p < pn && pat[p] == name[i]) {
            p++;
            i++;
        } else if (star != SIZE_MAX) {
            p = star + 1;
            i = ++star_i;
        } else {
            return false;
        }
    }
    while (p < pn && pat[p] == '*')
        p++;
    return p == pn;
}

static int parse_or(parser *p, kx__cnode **out);

static int unexpected(parser *p)
{
    if (p->tok == T_END)
        return perr(p, p->ts, "condition ends where an identifier was expected");
    if (p->tok == T_PIPE)
        return perr(p, p->ts,
                    "aggregation expressions (\"| count() ...\") are deprecated in Sigma: "
                    "write a correlation rule instead");
    if (word_is(p, "near"))
        return perr(p, p->ts,
                    "\"near\" is deprecated in Sigma: write a temporal correlation rule "
                    "instead");
    return perr(p, p->ts, "unexpected \"%.*s\" in condition", (int)p->tl, p->s + p->ts);
}

static int parse_of(parser *p, kx__cnode **out)
{
    bool all = word_is(p, "all");
    next(p); /* the quantifier */
    if (!word_is(p, "of"))
        return perr(p, p->ts, "expected \"of\" after \"%s\"", all ? "all" : "1");
    next(p);
    if (p->tok != T_WORD || (is_reserved(p) && !word_is(p, "them")))
        return p->tok == T_WORD || p->tok == T_END
                   ? perr(p, p->ts, "expected an identifier pattern or \"them\" after \"of\"")
                   : unexpected(p);
    bool them = word_is(p, "them");
    const char *pat = p->s + p->ts;
    size_t pl = p->tl;
    size_t cnt = 0;
    for (size_t i = 0; i < p->d->nsearches; i++) {
        const char *name = p->d->searches[i].name;
        if (them ? name[0] != '_' : name_match(pat, pl, name))
            cnt++;
    }
    if (cnt == 0)
        return them ? perr(p, p->ts, "\"them\" matches no search identifier")
                    : perr(p, p->ts, "pattern \"%.*s\" matches no search identifier", (int)pl, pat);
    uint32_t *ids = kx__alloc(p->c, cnt * sizeof(*ids));
    kx__cnode *n = node_new(p, all ? KX__C_ALL_OF : KX__C_ONE_OF);
    if (!ids || !n)
        return -ENOMEM;
    cnt = 0;
    for (size_t i = 0; i < p->d->nsearches; i++) {
        const char *name = p->d->searches[i].name;
        if (them ? name[0] != '_' : name_match(pat, pl, name))
            ids[cnt++] = (uint32_t)i;
    }
    n->ids = ids;
    n->nids = cnt;
    next(p);
    *out = n;
    return 0;
}

static int parse_primary(parser *p, kx__cnode **out)
{
    if (p->tok == T_LPAREN) {
        size_t open = p->ts;
        if (++p->depth > KX__COND_MAX_DEPTH)
            return perr(p, p->ts, "condition nested too deeply (more than %d levels)",
                        KX__COND_MAX_DEPTH);
        next(p);
        int rc = parse_or(p, out);
        if (rc)
            return rc;
        if (p->tok != T_RPAREN)
            return p->tok == T_END ? perr(p, open, "unclosed \"(\" in condition") : unexpected(p);
        p->depth--;
        next(p);
        return 0;
    }
    if (p->tok != T_WORD)
        return unexpected(p);
    if (word_is(p, "all") || word_is(p, "any") || word_is(p, "1"))
        return parse_of(p, out);
    /* "2 of x": a number followed by "of" is a quantifier Sigma does not define. */
    if (p->s[p->ts] >= '0' && p->s[p->ts] <= '9') {
        size_t save_pos = p->pos, ts = p->ts, tl = p->tl;
        next(p);
        bool of = word_is(p, "of");
        p->pos = save_pos, p->ts = ts, p->tl = tl, p->tok = T_WORD;
        if (of)
            return perr(p, p->ts,
                        "only \"1 of\", \"any of\" and \"all of\" are supported, not "
                        "\"%.*s of\"",
                        (int)p->tl, p->s + p->ts);
    }
    if (is_reserved(p) || word_is(p, "near"))
        return unexpected(p);
    for (size_t i = 0; i < p->d->nsearches; i++) {
        const char *name = p->d->searches[i].name;
        if (strlen(name) == p->tl && memcmp(name, p->s + p->ts, p->tl) == 0) {
            uint32_t *ids = kx__alloc(p->c, sizeof(*ids));
            kx__cnode *n = node_new(p, KX__C_ID);
            if (!ids || !n)
                return -ENOMEM;
            ids[0] = (uint32_t)i;
            n->ids = ids;
            n->nids = 1;
            next(p);
            *out = n;
            return 0;
        }
    }
    return perr(p, p->ts, "condition references unknown identifier \"%.*s\"", (int)p->tl,
                p->s + p->ts);
}

static int parse_unary(parser *p, kx__cnode **out)
{
    if (!word_is(p, "not"))
        return parse_primary(p, out);
    if (++p->depth > KX__COND_MAX_DEPTH)
        return perr(p, p->ts, "condition nested too deeply (more than %d levels)",
                    KX__COND_MAX_DEPTH);
    next(p);
    kx__cnode *kid = NULL, *n = node_new(p, KX__C_NOT);
    kx__cnode **kids = kx__alloc(p->c, sizeof(*kids));
    if (!n || !kids)
        return -ENOMEM;
    int rc = parse_unary(p, &kid);
    if (rc)
        return rc;
    p->depth--;
    kids[0] = kid;
    n->kids = kids;
    n->nkids = 1;
    *out = n;
    return 0;
}

/* One level of an n-ary operator: operands from sub, separated by the word op. */
static int parse_nary(parser *p, const char *op, kx__cop kind, int (*sub)(parser *, kx__cnode **),
                      kx__cnode **out)
{
    kx__cnode *first = NULL;
    int rc = sub(p, &first);
    if (rc)
        return rc;
    if (!word_is(p, op)) {
        *out = first;
        return 0;
    }
    size_t cap = 8, n = 0;
    kx__cnode **v = malloc(cap * sizeof(*v));
    if (!v)
        return kx_err_set(p->c->err, p->c->file, 0, 0, "out of memory"), -ENOMEM;
    v[n++] = first;
    while (word_is(p, op)) {
        next(p);
        kx__cnode *k = NULL;
        if ((rc = sub(p, &k)))
            goto done;
        if (n == cap) {
            kx__cnode **nv = realloc(v, cap * 2 * sizeof(*v));
            if (!nv) {
                rc = -ENOMEM;
                kx_err_set(p->c->err, p->c->file, 0, 0, "out of memory");
                goto done;
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = k;
    }
    kx__cnode *node = node_new(p, kind);
    kx__cnode **kids = kx__alloc(p->c, n * sizeof(*kids));
    if (!node || !kids) {
        rc = -ENOMEM;
        goto done;
    }
    memcpy(kids, v, n * sizeof(*kids));
    node->kids = kids;
    node->nkids = n;
    *out = node;
done:
    free(v);
    return rc;
}

static int parse_and(parser *p, kx__cnode **out)
{
    return parse_nary(p, "and", KX__C_AND, parse_unary, out);
}

static int parse_or(parser *p, kx__cnode **out)
{
    return parse_nary(p, "or", KX__C_OR, parse_and, out);
}

static int parse_one(kx__ctx *c, const kx_yaml_node *node, kx__detection *d, kx__cnode **out)
{
    if (node->type != KX_YAML_SCALAR)
        return kx_yaml_err(c->err, c->file, node,
                           "condition must be a string or a list of strings");
    parser p = {.c = c, .node = node, .d = d, .s = node->str, .n = node->len};
    next(&p);
    if (p.tok == T_END)
        return kx_yaml_err(c->err, c->file, node, "condition is empty");
    int rc = parse_or(&p, out);
    if (rc)
        return rc;
    return p.tok == T_END ? 0 : unexpected(&p);
}

int kx__cond_compile(kx__ctx *c, const kx_yaml_node *cond, kx__detection *d)
{
    if (cond->type != KX_YAML_SEQ) {
        kx__cnode *n = NULL;
        int rc = parse_one(c, cond, d, &n);
        if (!rc)
            d->cond = n;
        return rc;
    }
    /* A list of conditions means any of them (Sigma: each would be its own query). */
    if (cond->n == 0)
        return kx_yaml_err(c->err, c->file, cond, "condition is empty");
    kx__cnode *n = kx__alloc(c, sizeof(*n));
    kx__cnode **kids = kx__alloc(c, cond->n * sizeof(*kids));
    if (!n || !kids)
        return -ENOMEM;
    for (size_t i = 0; i < cond->n; i++) {
        int rc = parse_one(c, cond->vals[i], d, &kids[i]);
        if (rc)
            return rc;
    }
    n->op = KX__C_OR;
    n->kids = kids;
    n->nkids = cond->n;
    d->cond = cond->n == 1 ? kids[0] : n;
    return 0;
}

bool kx__search_match(const kx__search *s, const kx__eval *x)
{
    if (s->tod)
        return kx_timeofday_match(s->tod, x->ev->time_ms);
    for (size_t g = 0; g < s->ngroups; g++) {
        const kx__group *grp = &s->groups[g];
        size_t i = 0;
        while (i < grp->nconds && kx__fcond_match(&grp->conds[i], x))
            i++;
        if (i == grp->nconds)
            return true;
    }
    return false;
}

bool kx__cond_eval(const kx__cnode *n, const kx__detection *d, const kx__eval *x)
{
    switch (n->op) {
    case KX__C_ID:
        return kx__search_match(&d->searches[n->ids[0]], x);
    case KX__C_ONE_OF:
        for (size_t i = 0; i < n->nids; i++)
            if (kx__search_match(&d->searches[n->ids[i]], x))
                return true;
        return false;
    case KX__C_ALL_OF:
        for (size_t i = 0; i < n->nids; i++)
            if (!kx__search_match(&d->searches[n->ids[i]], x))
                return false;
        return true;
    case KX__C_AND:
        for (size_t i = 0; i < n->nkids; i++)
            if (!kx__cond_eval(n->kids[i], d, x))
                return false;
        return true;
    case KX__C_OR:
        for (size_t i = 0; i < n->nkids; i++)
            if (kx__cond_eval(n->kids[i], d, x))
                return true;
        return false;
    case KX__C_NOT:
        return !kx__cond_eval(n->kids[0], d, x);
    }
    return false;
}

/* ---- three values: a live list not read yet is unknown (Kleene's logic) ---- */

static int search3(const kx__search *s, const kx__eval *x)
{
    if (s->tod)
        return kx_timeofday_match(s->tod, x->ev->time_ms);
    int any = 0; /* OR of the maps: 1 true, -1 unknown, 0 false */
    for (size_t g = 0; g < s->ngroups && any != 1; g++) {
        const kx__group *grp = &s->groups[g];
        int all = 1; /* AND of the field conditions */
        for (size_t i = 0; i < grp->nconds && all != 0; i++) {
            int m = kx__fcond_match3(&grp->conds[i], x);
            all = m == 0 ? 0 : m < 0 ? -1 : all;
        }
        any = all == 1 ? 1 : all < 0 ? -1 : any;
    }
    return any;
}

static int and3(int a, int b)
{
    return a == 0 || b == 0 ? 0 : a < 0 || b < 0 ? -1 : 1;
}

static int or3(int a, int b)
{
    return a == 1 || b == 1 ? 1 : a < 0 || b < 0 ? -1 : 0;
}

static int cond3(const kx__cnode *n, const kx__detection *d, const kx__eval *x)
{
    int v;
    switch (n->op) {
    case KX__C_ID:
        return search3(&d->searches[n->ids[0]], x);
    case KX__C_ONE_OF:
    case KX__C_ALL_OF:
        v = n->op == KX__C_ALL_OF;
        for (size_t i = 0; i < n->nids; i++) {
            int s = search3(&d->searches[n->ids[i]], x);
            v = n->op == KX__C_ALL_OF ? and3(v, s) : or3(v, s);
        }
        return v;
    case KX__C_AND:
    case KX__C_OR:
        v = n->op == KX__C_AND;
        for (size_t i = 0; i < n->nkids; i++) {
            int k = cond3(n->kids[i], d, x);
            v = n->op == KX__C_AND ? and3(v, k) : or3(v, k);
        }
        return v;
    case KX__C_NOT:
        v = cond3(n->kids[0], d, x);
        return v < 0 ? -1 : !v;
    }
    return 0;
}

bool kx__detection_match(const kx__detection *d, const kx__eval *x)
{
    kx__rx *rx = x->rx;
    rx->reason = NULL;
    rx->match_reason = NULL;
    rx->force = -1;
    rx->list_unknown = false;
    uint64_t budget0 = rx->budget;
    bool m = kx__cond_eval(d->cond, d, x);
    if (!rx->reason)
        return m;
    if (rx->list_unknown) {
        /* A live list not read yet was asked (value.c): with it unknown, is the answer? The
         * same list may count for and against (`a and not b`): no single guess for it can
         * say, three values can. Unknown: klaxon cannot say, so it fails closed and says so. */
        const char *why = rx->reason;
        int m3 = cond3(d->cond, d, x);
        rx->reason = why;
        if (m3 >= 0)
            return m3 == 1;
        kx_metric_inc(KX_M_LIST_FAILED_CLOSED);
        rx->match_reason = why;
        return true;
    }
    /* A regex was given up, with every such regex as no match the answer is m. Does it depend
     * on them? Evaluate once more with each given-up regex as a match, from the same budget
     * (PCRE2 runs are deterministic, so the same regexes give up). The same answer: it is
     * decided whatever they say, and stands as any other answer. Otherwise the rule's policy
     * decides: fail closed, a match, with the reason in the alert; fail open, no match.
     *
     * This is also what keeps the prefilter exact: a rule whose trigger atoms did not hit is
     * false however its atom-less values (PCRE2 regexes among them) answer, so evaluated
     * here it would be decided false, as skipping it says. The extra evaluation happens only
     * for a rule with a given-up regex, and costs at most one more budget. */
    const char *why = rx->reason;
    uint64_t left = rx->budget;
    rx->budget = budget0;
    rx->force = 1;
    bool hi = kx__cond_eval(d->cond, d, x);
    rx->force = -1;
    rx->budget = rx->budget < left ? rx->budget : left;
    rx->reason = why;
    if (hi == m)
        return m;
    kx_metric_inc(d->re_fail_closed ? KX_M_REGEX_FAILED_CLOSED : KX_M_REGEX_FAILED_OPEN);
    m = d->re_fail_closed;
    if (m)
        rx->match_reason = why;
    return m;
}
