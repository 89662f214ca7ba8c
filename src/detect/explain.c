/*
 * Why a rule did or did not match an event (`klaxon rules explain`, docs/rules.md): every
 * piece of the rule evaluated on its own -- the logsource, each search identifier, each map
 * of it, each field condition with the value that matched (or the field's values when none
 * did), and each node of the condition -- by the plain interpreter, the reference the
 * compiled set is tested against (match.c), so the answer is the engine's. A correlation is
 * explained through the rules it counts, with the group its key would read from the event.
 * The facts are returned as JSON; the command line prints them as text or as they are.
 */
#include <jansson.h>
#include <string.h>

#include "rules_int.h"

static bool ls_part(const char *want, const char *have)
{
    return !want || (have && !strcasecmp(want, have));
}

static json_t *opt(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The field's values in the event (all of them, in order). */
static json_t *field_values(const kx__eval *x, const kx__fcond *f)
{
    json_t *a = json_array();
    for (const kx_field *v = kx__field_first(x, f->fid, f->field); v;
         v = kx__field_next(x, v, f->field))
        json_array_append_new(a, v->type == KX_VAL_NULL ? json_null()
                                                        : json_stringn(v->value, v->value_len));
    return a;
}

static json_t *fcond_json(const kx__fcond *f, const kx__eval *x)
{
    json_t *vals = json_array();
    const char *matched = NULL;
    for (size_t i = 0; i < f->nvals; i++) {
        json_array_append_new(vals, opt(f->vals[i].src));
        kx__fcond one = *f;
        one.vals = &f->vals[i];
        one.nvals = 1;
        one.all = false;
        if (!matched && kx__fcond_match(&one, x))
            matched = f->vals[i].src ? f->vals[i].src : "";
    }
    bool value = kx__fcond_match(f, x);
    json_t *o = json_pack("{s:s, s:b, s:o, s:b}", "key", f->key ? f->key : "(keywords)", "value",
                          value, "values", vals, "all", f->all);
    json_object_set_new(o, "matched", opt(f->all ? NULL : matched));
    json_object_set_new(o, "event", f->field ? field_values(x, f) : json_null());
    return o;
}

static json_t *search_json(const kx__search *s, const kx__eval *x)
{
    json_t *o =
        json_pack("{s:s, s:b}", "name", s->name ? s->name : "?", "value", kx__search_match(s, x));
    if (s->tod) {
        json_object_set_new(o, "timeofday", json_true());
        return o;
    }
    json_t *groups = json_array();
    for (size_t g = 0; g < s->ngroups; g++) {
        const kx__group *grp = &s->groups[g];
        json_t *conds = json_array();
        bool all = true;
        for (size_t i = 0; i < grp->nconds; i++) {
            json_t *c = fcond_json(&grp->conds[i], x);
            all &= json_is_true(json_object_get(c, "value"));
            json_array_append_new(conds, c);
        }
        json_array_append_new(groups, json_pack("{s:b, s:o}", "value", all, "conditions", conds));
    }
    json_object_set_new(o, "groups", groups);
    return o;
}

static json_t *cond_json(const kx__cnode *n, const kx__detection *d, const kx__eval *x)
{
    static const char *const ops[] = {"id", "1 of", "all of", "and", "or", "not"};
    json_t *o = json_pack("{s:s, s:b}", "op", ops[n->op], "value", kx__cond_eval(n, d, x));
    if (n->nids) {
        json_t *ids = json_array();
        for (size_t i = 0; i < n->nids; i++)
            json_array_append_new(ids, opt(d->searches[n->ids[i]].name));
        json_object_set_new(o, "searches", ids);
    }
    if (n->nkids) {
        json_t *kids = json_array();
        for (size_t i = 0; i < n->nkids; i++)
            json_array_append_new(kids, cond_json(n->kids[i], d, x));
        json_object_set_new(o, "kids", kids);
    }
    return o;
}

static json_t *detection_json(kx_ruleset *rs, const kx_rule *r, const kx_event *ev)
{
    const kx__detection *d = kx__rule_detection(r);
    kx__eval x = {.ev = ev, .rx = &rs->rx, .by_name = true};
    kx__rx_event_begin(&rs->rx);
    bool fits = ls_part(d->product, ev->product) && ls_part(d->service, ev->service) &&
                ls_part(d->category, ev->category);
    json_t *o = json_pack("{s:s, s:s, s:{s:o, s:o, s:o}, s:b}", "id", r->id, "title", r->title,
                          "logsource", "product", opt(d->product), "service", opt(d->service),
                          "category", opt(d->category), "logsource_fits", fits);
    json_t *searches = json_array();
    for (size_t i = 0; i < d->nsearches; i++)
        json_array_append_new(searches, search_json(&d->searches[i], &x));
    json_object_set_new(o, "searches", searches);
    json_object_set_new(o, "condition", cond_json(d->cond, d, &x));
    json_object_set_new(o, "filters", json_integer((json_int_t)r->nfilters));
    /* The answer as the engine gives it: a given-up regex decided by the rule's regex_budget
     * (the parts above show each piece with that regex as no match). */
    kx__rx_event_begin(&rs->rx);
    bool value = kx__detection_match(d, &x);
    json_object_set_new(o, "match", json_boolean(fits && value));
    json_object_set_new(o, "degraded", opt(kx_ruleset_match_reason(rs)));
    return o;
}

struct json_t *kx_rule_explain(kx_ruleset *rs, const kx_rule *r, const kx_event *ev)
{
    if (r->kind == KX_RULE_DETECTION)
        return detection_json(rs, r, ev);
    /* A correlation: what each rule it counts says of the event, and the group the event
     * would fall in. Its windows are state over many events: `rules test` judges them. */
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", r->id, "title", r->title, "correlation",
                          kx_corr_type_name(r->corr_type));
    json_t *refs = json_array();
    bool any = false;
    for (size_t j = 0; j < r->nrefs; j++) {
        const kx_rule *t = r->refs[j];
        json_t *e = kx_rule_explain(rs, t, ev);
        bool m = json_is_true(json_object_get(e, "match"));
        any |= m;
        if (m) {
            json_t *group = json_object();
            for (size_t i = 0; i < r->ngroup_by; i++) {
                const char *field = r->group_fields[j * r->ngroup_by + i];
                const kx_field *f = NULL;
                for (size_t k = 0; k < ev->nfields && !f; k++)
                    if (!strcmp(ev->fields[k].name, field))
                        f = &ev->fields[k];
                json_object_set_new(group, r->group_by[i],
                                    f && f->type != KX_VAL_NULL
                                        ? json_stringn(f->value, f->value_len)
                                        : json_null());
            }
            json_object_set_new(e, "group", group);
        }
        json_array_append_new(refs, e);
    }
    json_object_set_new(o, "rules", refs);
    json_object_set_new(o, "counted", json_boolean(any));
    return o;
}
