/*
 * kx_decoder: one input's decoding settings, read once from YAML, and kx_decode, which runs
 * format decoding (json.c / syslog.c), extractors (extract.c), then event time, tenant and
 * logsource, in that order, so extracted fields can feed time_field and tenant_field.
 *
 * Config is strict: every map the decoder reads rejects keys it does not know, at the key's
 * line:col, so a typo ("tenant_feild") fails the load instead of silently doing nothing.
 *
 * Ownership: the decoder copies every string it keeps out of the YAML tree; the event gets
 * borrowed pointers to the decoder's strings (tenant, logsource), which stay valid while the
 * decoder lives, or arena strings. kx_decode neither counts nor logs malformed events: the
 * caller has the topic/offset context for that. Events decoded with a limit hit
 * (ev->limits) it does count and log, rate-limited, from the event's origin: they go on to
 * the rules like any other, so the caller has no reason to look.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/decode_int.h"
#include "klaxon/metrics.h"

typedef struct kx__logsource {
    char *product, *service, *category;
} kx__logsource;

typedef struct kx__program {
    char *name;
    kx__logsource ls;
} kx__program;

struct kx_decoder {
    kx_format format;
    char *tenant;       /* never NULL */
    char *tenant_field; /* NULL = static tenant only */
    char *time_field;   /* NULL = the JSON defaults / syslog header */
    kx__logsource ls;
    kx__syslog_cfg syslog;
    kx__extractor *xs;
    size_t nxs;
    kx__program *progs; /* sorted by name for bsearch */
    size_t nprogs;
    pcre2_match_context *mctx;
    kx_ratelimit rl;
};

/* Tried in this order when the input sets no time_field (Elastic, generic, CloudTrail, Go). */
static const char *const default_time_fields[] = {"@timestamp", "timestamp", "eventTime", "time"};

static int check_keys(const kx_yaml_node *map, const char *const *allowed, const char *what,
                      const char *file, kx_err *err)
{
    if (map->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, map, "%s must be a map", what);
    return kx_yaml_check_keys(map, file, allowed, err);
}

int kx__dup_nonempty(const kx_yaml_node *n, const char *file, char **out, kx_err *err)
{
    const char *s;
    int rc = kx_yaml_str(n, file, &s, err);
    if (rc)
        return rc;
    if (n->len == 0)
        return kx_yaml_err(err, file, n, "must not be empty");
    free(*out); /* a repeated key: the last one wins, as in the YAML map */
    *out = strndup(n->str, n->len);
    return *out ? 0 : -ENOMEM;
}

static void logsource_fini(kx__logsource *ls)
{
    free(ls->product);
    free(ls->service);
    free(ls->category);
}

static int logsource_parse(const kx_yaml_node *n, const char *file, kx__logsource *ls, kx_err *err)
{
    static const char *const keys[] = {"product", "service", "category", NULL};
    char **dst[] = {&ls->product, &ls->service, &ls->category};
    int rc = check_keys(n, keys, "logsource", file, err);
    for (size_t k = 0; rc == 0 && keys[k]; k++) {
        const kx_yaml_node *v = kx_yaml_get(n, keys[k]);
        if (v)
            rc = kx__dup_nonempty(v, file, dst[k], err);
    }
    return rc;
}

static int syslog_parse(kx_decoder *d, const kx_yaml_node *n, const char *file, kx_err *err)
{
    static const char *const keys[] = {"timezone", "year", "skew", NULL};
    const kx_yaml_node *v;
    int rc = check_keys(n, keys, "syslog", file, err);
    if (rc)
        return rc;
    if ((v = kx_yaml_get(n, "timezone"))) {
        char *name = NULL;
        if ((rc = kx__dup_nonempty(v, file, &name, err)))
            return rc;
        rc = kx_tz_get(name, &d->syslog.tz);
        if (rc == -ENOENT)
            kx_yaml_err(err, file, v, "unknown time zone \"%s\"", name);
        else if (rc)
            kx_yaml_err(err, file, v, "cannot load time zone \"%s\": %s", name, strerror(-rc));
        free(name);
        if (rc)
            return -EINVAL;
    }
    if ((v = kx_yaml_get(n, "year")) && !kx_yaml_is(v, "auto")) {
        long long y;
        if ((rc = kx_yaml_int(v, file, 1970, 9999, &y, err)))
            return rc;
        d->syslog.year = (int)y;
    }
    if ((v = kx_yaml_get(n, "skew"))) {
        long long ms;
        if ((rc = kx_yaml_duration_ms(v, file, &ms, err)))
            return rc;
        if (ms < 0 || ms > 30LL * 86400 * 1000)
            return kx_yaml_err(err, file, v, "skew: between 0s and 30d");
        d->syslog.skew_ms = ms ? ms : 1; /* 0s: none at all (1 ms) */
    }
    return 0;
}

static int program_cmp(const void *a, const void *b)
{
    return strcmp(((const kx__program *)a)->name, ((const kx__program *)b)->name);
}

static int programs_parse(kx_decoder *d, const kx_yaml_node *n, const char *file, kx_err *err)
{
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "programs must be a map of program -> logsource");
    d->progs = calloc(n->n ? n->n : 1, sizeof(*d->progs));
    if (!d->progs)
        return -ENOMEM;
    for (size_t k = 0; k < n->n; k++) {
        kx__program *p = &d->progs[d->nprogs];
        int rc;
        if ((rc = kx__dup_nonempty(n->keys[k], file, &p->name, err)))
            return rc;
        d->nprogs++;
        for (size_t j = 0; j + 1 < d->nprogs; j++)
            if (strcmp(d->progs[j].name, p->name) == 0)
                return kx_yaml_err(err, file, n->keys[k], "duplicate program \"%s\"", p->name);
        if ((rc = logsource_parse(n->vals[k], file, &p->ls, err)))
            return rc;
    }
    qsort(d->progs, d->nprogs, sizeof(*d->progs), program_cmp);
    return 0;
}

static int shared_parse(kx_decoder *d, const kx_yaml_node *n, const char *file, kx_err *err)
{
    static const char *const keys[] = {"extractors", "programs", NULL};
    const kx_yaml_node *v;
    int rc = check_keys(n, keys, "decode", file, err);
    if (rc)
        return rc;
    if ((v = kx_yaml_get(n, "programs")) && (rc = programs_parse(d, v, file, err)))
        return rc;
    if ((v = kx_yaml_get(n, "extractors"))) {
        if (v->type != KX_YAML_SEQ)
            return kx_yaml_err(err, file, v, "extractors must be a list");
        d->xs = calloc(v->n ? v->n : 1, sizeof(*d->xs));
        if (!d->xs)
            return -ENOMEM;
        for (size_t k = 0; k < v->n; k++) {
            if ((rc = kx__extractor_init(&d->xs[k], v->vals[k], file, err)))
                return rc;
            d->nxs++;
        }
    }
    return 0;
}

static int input_parse(kx_decoder *d, const kx_yaml_node *n, int format_override, const char *file,
                       kx_err *err)
{
    static const char *const keys[] = {"topic",      "format",    "tenant", "tenant_field",
                                       "time_field", "logsource", "syslog", NULL};
    const kx_yaml_node *v;
    int rc = check_keys(n, keys, "input", file, err);
    if (rc)
        return rc;
    if ((v = kx_yaml_get(n, "format"))) {
        if (kx_yaml_is(v, "json"))
            d->format = KX_FMT_JSON;
        else if (kx_yaml_is(v, "syslog"))
            d->format = KX_FMT_SYSLOG;
        else
            return kx_yaml_err(err, file, v, "unknown format \"%.*s\" (json, syslog)",
                               v->type == KX_YAML_SCALAR ? (int)v->len : 0,
                               v->type == KX_YAML_SCALAR ? v->str : "");
    }
    if (format_override >= 0)
        d->format = (kx_format)format_override;
    if ((v = kx_yaml_get(n, "tenant")) && (rc = kx__dup_nonempty(v, file, &d->tenant, err)))
        return rc;
    if ((v = kx_yaml_get(n, "tenant_field")) &&
        (rc = kx__dup_nonempty(v, file, &d->tenant_field, err)))
        return rc;
    if ((v = kx_yaml_get(n, "time_field")) && (rc = kx__dup_nonempty(v, file, &d->time_field, err)))
        return rc;
    if ((v = kx_yaml_get(n, "logsource")) && (rc = logsource_parse(v, file, &d->ls, err)))
        return rc;
    if ((v = kx_yaml_get(n, "syslog")) && (rc = syslog_parse(d, v, file, err)))
        return rc;
    return 0;
}

/* Does the config's decode section name program p (in programs, or an extractor's)? */
static bool config_names(const kx_decoder *d, size_t nprogs, size_t nxs, const char *p)
{
    for (size_t i = 0; i < nprogs; i++)
        if (!strcmp(d->progs[i].name, p))
            return true;
    for (size_t i = 0; i < nxs; i++)
        if (d->xs[i].program && !strcmp(d->xs[i].program, p))
            return true;
    return false;
}

/* The content's decoders (decoders/ tree, content.c) for every program the config does not
 * name: its logsource and its extractors, scoped to it. */
static int content_add(kx_decoder *d, const kx_decoder_set *set, kx_err *err)
{
    size_t cfg_progs = d->nprogs, cfg_xs = d->nxs;
    for (size_t i = 0; i < kx_decoder_set_size(set); i++) {
        const char *file;
        const kx_yaml_node *def = kx_decoder_set_at(set, i, &file);
        const kx_yaml_node *const *names;
        size_t np = kx_decoder_def_programs(def, &names);
        const kx_yaml_node *xs = kx_yaml_get(def, "extractors");
        size_t nx = xs ? xs->n : 0;
        for (size_t k = 0; k < np; k++) {
            if (config_names(d, cfg_progs, cfg_xs, names[k]->str))
                continue;
            const kx_yaml_node *ls = kx_yaml_get(def, "logsource");
            kx__program *pv = realloc(d->progs, (d->nprogs + 1) * sizeof(*pv));
            if (pv)
                d->progs = pv;
            kx__extractor *xv = pv ? realloc(d->xs, (d->nxs + nx + 1) * sizeof(*xv)) : NULL;
            if (xv)
                d->xs = xv;
            if (!pv || !xv)
                return -ENOMEM;
            int rc = 0;
            if (ls) {
                kx__program *p = &d->progs[d->nprogs];
                memset(p, 0, sizeof(*p));
                if (!(p->name = strdup(names[k]->str)))
                    return -ENOMEM;
                d->nprogs++;
                rc = logsource_parse(ls, file, &p->ls, err);
            }
            for (size_t j = 0; !rc && j < nx; j++) {
                if ((rc = kx__extractor_init(&d->xs[d->nxs], xs->vals[j], file, err)))
                    break;
                d->nxs++;
                if (!(d->xs[d->nxs - 1].program = strdup(names[k]->str)))
                    rc = -ENOMEM;
            }
            if (rc)
                return rc;
        }
    }
    qsort(d->progs, d->nprogs, sizeof(*d->progs), program_cmp);
    return 0;
}

int kx_decoder_create(const kx_yaml_node *input, const kx_yaml_node *shared, int format_override,
                      const char *file, kx_decoder **out, kx_err *err)
{
    return kx_decoder_create_with(input, shared, NULL, format_override, file, out, err);
}

int kx_decoder_create_with(const kx_yaml_node *input, const kx_yaml_node *shared,
                           const kx_decoder_set *content, int format_override, const char *file,
                           kx_decoder **out, kx_err *err)
{
    int rc;
    kx_decoder *d = calloc(1, sizeof(*d));

    *out = NULL;
    if (!d)
        return -ENOMEM;
    d->format = format_override >= 0 ? (kx_format)format_override : KX_FMT_JSON;
    if (format_override > KX_FMT_SYSLOG) {
        rc = kx_err_set(err, file, 0, 0, "unknown format override %d", format_override);
        goto fail;
    }
    if (input && !(input->type == KX_YAML_SCALAR && kx_yaml_is_null(input)) &&
        (rc = input_parse(d, input, format_override, file, err)))
        goto fail;
    if (shared && !(shared->type == KX_YAML_SCALAR && kx_yaml_is_null(shared)) &&
        (rc = shared_parse(d, shared, file, err)))
        goto fail;
    if (content && (rc = content_add(d, content, err)))
        goto fail;
    if (!d->tenant && !(d->tenant = strdup("default"))) {
        rc = -ENOMEM;
        goto fail;
    }
    if (!d->syslog.tz && (rc = kx_tz_get("UTC", &d->syslog.tz))) {
        kx_err_set(err, file, 0, 0, "cannot load time zone \"UTC\": %s", strerror(-rc));
        goto fail;
    }
    d->mctx = pcre2_match_context_create(NULL);
    if (!d->mctx) {
        rc = -ENOMEM;
        goto fail;
    }
    pcre2_set_match_limit(d->mctx, KX_DECODE_MATCH_LIMIT);
    pcre2_set_depth_limit(d->mctx, KX_DECODE_DEPTH_LIMIT);
    d->rl.interval_ms = 10000;
    d->rl.burst = 5;
    *out = d;
    return 0;
fail:
    if (rc == -ENOMEM)
        kx_err_set(err, file, 0, 0, "out of memory");
    kx_decoder_destroy(d);
    return rc;
}

void kx_decoder_destroy(kx_decoder *d)
{
    if (!d)
        return;
    for (size_t k = 0; k < d->nxs; k++)
        kx__extractor_fini(&d->xs[k]);
    free(d->xs);
    for (size_t k = 0; k < d->nprogs; k++) {
        free(d->progs[k].name);
        logsource_fini(&d->progs[k].ls);
    }
    free(d->progs);
    pcre2_match_context_free(d->mctx);
    logsource_fini(&d->ls);
    free(d->time_field);
    free(d->tenant_field);
    free(d->tenant);
    free(d);
}

kx_format kx_decoder_format(const kx_decoder *d)
{
    return d->format;
}

/* A field's value as event time: RFC 3339 text, or an epoch number (as number or text). */
static bool field_time(const kx_field *f, int64_t *ms)
{
    if (f->type == KX_VAL_NUM)
        return kx_parse_epoch(f->value, f->value_len, ms) == 0;
    if (f->type == KX_VAL_STR)
        return kx_parse_rfc3339(f->value, f->value_len, ms) == 0 ||
               kx_parse_epoch(f->value, f->value_len, ms) == 0;
    return false;
}

static void event_time(const kx_decoder *d, kx_event *ev)
{
    const kx_field *f;
    int64_t ms;

    if (d->time_field) {
        if ((f = kx_event_get(ev, d->time_field)) && field_time(f, &ms)) {
            ev->time_ms = ms;
            ev->time_from_log = true;
        }
        return;
    }
    if (d->format != KX_FMT_JSON)
        return; /* syslog took its time from the header */
    for (size_t k = 0; k < KX_ARRAY_LEN(default_time_fields); k++) {
        if ((f = kx_event_get(ev, default_time_fields[k])) && field_time(f, &ms)) {
            ev->time_ms = ms;
            ev->time_from_log = true;
            return;
        }
    }
}

void kx_decoder_logsources(const kx_decoder *d, kx_logsource_cb cb, void *ud)
{
    cb(d->ls.product, d->ls.service, d->ls.category, ud);
    for (size_t i = 0; i < d->nprogs; i++) {
        const kx__logsource *p = &d->progs[i].ls;
        cb(p->product ? p->product : d->ls.product, p->service ? p->service : d->ls.service,
           p->category ? p->category : d->ls.category, ud);
    }
}

static void program_logsource(const kx_decoder *d, kx_event *ev)
{
    const kx_field *f;
    kx__program key = {0};
    const kx__program *p;

    if (!d->nprogs || !(f = kx_event_get(ev, "program")))
        return;
    key.name = (char *)f->value;
    p = bsearch(&key, d->progs, d->nprogs, sizeof(*d->progs), program_cmp);
    if (!p)
        return;
    if (p->ls.product)
        ev->product = p->ls.product;
    if (p->ls.service)
        ev->service = p->ls.service;
    if (p->ls.category)
        ev->category = p->ls.category;
}

/* A decoded event that hit limits (json.c): each limit counted, and one line saying which,
 * at a bounded rate (a flood of hostile events must not flood the log). Not malformed: the
 * event goes on to the rules. */
static void note_limits(kx_decoder *d, const kx_event *ev)
{
    static const kx_metric metric[KX_EV_LIMIT__COUNT] = {KX_M_LIMIT_DEPTH, KX_M_LIMIT_KEY,
                                                         KX_M_LIMIT_FIELDS, KX_M_LIMIT_NUMBER};
    char names[64];
    size_t n = 0;
    names[0] = '\0';
    for (unsigned i = 0; i < KX_EV_LIMIT__COUNT; i++) {
        if (!(ev->limits & (1u << i)))
            continue;
        kx_metric_inc(metric[i]);
        int w =
            snprintf(names + n, sizeof(names) - n, "%s%s", n ? "," : "", kx_event_limit_name(i));
        n += w > 0 && (size_t)w < sizeof(names) - n ? (size_t)w : 0;
    }
    if (ev->topic)
        kx_log_limited(&d->rl, KX_LOG_WARN, "decode",
                       "event decoded with limits hit (%s [%d] offset %lld): %s", ev->topic,
                       (int)ev->partition, (long long)ev->offset, names);
    else
        kx_log_limited(&d->rl, KX_LOG_WARN, "decode",
                       "event decoded with limits hit (line %lld): %s", (long long)ev->offset,
                       names);
}

int kx_decode(kx_decoder *d, const char *raw, size_t len, int64_t fallback_ms, kx_event *ev,
              const char **why)
{
    static const char *const none = "";
    const kx_field *f;
    int rc;

    *why = none;
    ev->raw = raw;
    ev->raw_len = len;
    ev->time_ms = fallback_ms;
    ev->time_from_log = false;
    ev->limits = 0;
    ev->tenant = d->tenant;
    ev->product = d->ls.product;
    ev->service = d->ls.service;
    ev->category = d->ls.category;
    if (len == 0) {
        *why = "empty";
        return -EINVAL;
    }
    if (d->format == KX_FMT_SYSLOG)
        rc = kx__syslog_decode(&d->syslog, raw, len, fallback_ms, ev, why);
    else
        rc = kx__json_decode(raw, len, ev, why);
    if (rc)
        return rc;
    if (d->nxs && (rc = kx__extract_run(d->xs, d->nxs, d->mctx, &d->rl, ev))) {
        *why = "out of memory";
        return rc;
    }
    if (ev->limits)
        note_limits(d, ev);
    event_time(d, ev);
    if (d->tenant_field && (f = kx_event_get(ev, d->tenant_field)) && f->value_len > 0)
        ev->tenant = f->value;
    if (d->format == KX_FMT_SYSLOG)
        program_logsource(d, ev);
    return 0;
}
