/*
 * Correlation documents: the `correlation` section of a Sigma correlation rule (and
 * klaxon's correlation types and extension keys) -> the correlation fields of kx_rule. The
 * rules it references are named here and linked by resolve.c once every file is loaded.
 */
#include <math.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_int.h"

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
    kx_cmp_term *terms = kx__alloc(c, KX_CMP_MAX_TERMS * sizeof(*terms));
    if (!terms)
        return -ENOMEM;
    r->cond = terms;
    if (!cond && temporal) {
        /* Sigma: all the referenced rules must match (in order for temporal_ordered). */
        terms[0] = (kx_cmp_term){KX_CMP_GTE, (double)r->nrefs};
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
        if (r->ncond == KX_CMP_MAX_TERMS)
            return kx_yaml_err(c->err, c->file, op, "too many condition operators");
        terms[r->ncond++] = (kx_cmp_term){ops[i].cmp, d};
    }
    if (r->ncond == 0)
        return kx_yaml_err(c->err, c->file, cond, "condition has no operator such as gte");
    if (corr_monotone(r->corr_type) && kx_cmp_holds(r->cond, r->ncond, 0)) {
        /* "At most N": judged when a window closes, which klaxon does for event_count. */
        if (r->corr_type == KX_CORR_EVENT_COUNT) {
            r->closing = true;
            /* Only windows with events are judged: a condition no count >= 1 meets (eq: 0,
             * lt: 1) would never fire. The counts where the answer can change are near the
             * terms' values, so those and 1 are the ones to try. */
            bool can = kx_cmp_holds(r->cond, r->ncond, 1);
            for (size_t i = 0; i < r->ncond && !can; i++)
                for (double d = -1; d <= 1 && !can; d++) {
                    double v = (double)(long long)r->cond[i].value + d;
                    can = v >= 1 && kx_cmp_holds(r->cond, r->ncond, v);
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

/* The correlation types by their names in a rule (`correlation.type`). */
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

const char *kx_corr_type_name(kx_corr_type t)
{
    for (size_t i = 0; i < KX_ARRAY_LEN(types); i++)
        if (types[i].type == t)
            return types[i].name;
    return "?";
}

int kx__correlation_compile(kx__ctx *c, const kx_yaml_node *root, const kx_yaml_node *corr,
                            kx_rule *r, rule_priv *pv)
{
    if (corr->type != KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, corr, "\"correlation\" must be a mapping");
    static const char *const known[] = {"type",      "rules",    "group-by",   "timespan",
                                        "condition", "generate", "aliases",    "field",
                                        "suppress",  "lateness", "max_groups", "deviations",
                                        "history",   "keep",     "resolve"};
    for (size_t i = 0; i < corr->n; i++) {
        const kx_yaml_node *k = corr->keys[i];
        size_t j = 0;
        while (j < KX_ARRAY_LEN(known) && !kx_yaml_is(k, known[j]))
            j++;
        if (j == KX_ARRAY_LEN(known))
            return kx_yaml_err(c->err, c->file, k, "unknown key \"%s\" in correlation",
                               k->type == KX_YAML_SCALAR ? k->str : "?");
    }
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
    int rc = kx__str_list(c, rules, "rules", &pv->ref_names, &pv->nrefs);
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
        if ((rc = kx__str_list(c, n, "group-by", &g, &r->ngroup_by)))
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
    const kx_yaml_node *rs = kx_yaml_get(corr, "resolve");
    if (rs && !kx_yaml_is_null(rs)) {
        if (!kx_yaml_is(rs, "auto"))
            return kx_yaml_err(c->err, c->file, rs, "resolve must be \"auto\"");
        /* A sliding window drains; the others have no "below the condition again" to wait
         * for (an absence resolves on its own). */
        bool sliding = r->corr_type == KX_CORR_EVENT_COUNT || r->corr_type == KX_CORR_VALUE_COUNT ||
                       r->corr_type == KX_CORR_TEMPORAL ||
                       r->corr_type == KX_CORR_TEMPORAL_ORDERED ||
                       r->corr_type == KX_CORR_VALUE_SUM || r->corr_type == KX_CORR_VALUE_AVG;
        if (!sliding || r->closing)
            return kx_yaml_err(c->err, c->file, rs,
                               "resolve: auto applies to sliding-window thresholds (event_count "
                               "at least N, value_count, temporal, temporal_ordered, value_sum, "
                               "value_avg)%s",
                               r->corr_type == KX_CORR_ABSENCE ? "; an absence resolves on its own"
                                                               : "");
        r->resolve_auto = true;
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
        if ((rc = kx__str_list(c, field, "field", &fv, &r->nvalue_fields)))
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
