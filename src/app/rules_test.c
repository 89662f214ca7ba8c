/*
 * klaxon rules test: each rule file's tests, run through `klaxon replay`'s engine.
 *
 * A rule file RULE.yml (or .yaml) has its tests beside it in RULE.tests.yml (or
 * RULE.tests.yaml; the rule loader leaves those out, files.c). A test case is events and
 * the alerts they must (alerts) and must not (must_not) produce:
 *
 *   config: ../../samples/klaxon.yaml   # optional: decode as its inputs (topic:), its decode:
 *   input: {format: json}               # optional: the default input of every case
 *   tests:
 *     - name: five failures from one source page once
 *       topic: auth                     # or input: {...} (an `inputs` entry's keys)
 *       events:                         # raw lines, or maps (written as one JSON line each)
 *         - "Mar 10 09:20:05 web-01 sshd[20611]: Failed password for root from ..."
 *       alerts:                         # exactly these alerts of RULE.yml's rules, in order
 *         - {rule: ssh_bruteforce, group: {src_ip: 203.0.113.7}, count: 5}
 *       must_not:                       # no alert of any rule may match one of these
 *         - {rule: sudo_root}
 *       lists:                          # optional: what live lists' Redis sets hold
 *         terminated_users: [former.admin]
 *
 * Each case runs alone (a new memory store, router and pipeline) with the whole rule set
 * loaded, through kx__replay_run: the events' own time is the clock, so windows, order,
 * lateness, suppression, absence (judged at the input's end) and first_seen are tested as
 * `run` would judge them. Alerts go to a file sink in a temporary directory and are compared
 * field by field: an expectation names the alert JSON's fields (docs/alerts.md) that must
 * match, recursively (maps: the keys given; lists: every item); `rule` is the rule's id,
 * name or title.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/log.h"
#include "klaxon/tz.h"
#include "klaxon/yaml.h"
#include "cli_int.h"

#define MAX_MESSAGES 8 /* mismatches shown per case */

/* ---- where a rule file's tests are ---- */

/* RULE.tests.yml (or .tests.yaml) beside rule_file into out; false when there is none. */
static bool tests_path(const char *rule_file, char *out, size_t cap)
{
    size_t n = strlen(rule_file);
    size_t base = n > 5 && !strcmp(rule_file + n - 5, ".yaml")  ? n - 5
                  : n > 4 && !strcmp(rule_file + n - 4, ".yml") ? n - 4
                                                                : n;
    static const char *const ext[] = {".tests.yml", ".tests.yaml"};
    struct stat st;
    for (size_t i = 0; i < 2; i++) {
        int k = snprintf(out, cap, "%.*s%s", (int)base, rule_file, ext[i]);
        if (k > 0 && (size_t)k < cap && stat(out, &st) == 0 && S_ISREG(st.st_mode))
            return true;
    }
    return false;
}

int kx__rules_tests_count(const kx_rule *r)
{
    /* Rules of one file come one after another: its tests are read once for all of them. */
    static char last_file[4096];
    static int last_count = -1;
    if (!strcmp(last_file, r->file))
        return last_count;
    snprintf(last_file, sizeof(last_file), "%s", r->file);
    last_count = -1;
    char path[4096];
    kx_yaml_doc *doc = NULL;
    kx_err err = {0};
    if (tests_path(r->file, path, sizeof(path)) && kx_yaml_load_file(path, &doc, &err) == 0) {
        const kx_yaml_node *t = doc && doc->root ? kx_yaml_get(doc->root, "tests") : NULL;
        last_count = t && t->type == KX_YAML_SEQ ? (int)t->n : 0;
    }
    kx_yaml_free(doc);
    return last_count;
}

/* ---- expectations ---- */

/* Whether s is a JSON number (RFC 8259's grammar: no hex, no inf or nan). */
static bool json_number_text(const char *s)
{
    const char *p = s + (*s == '-');
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return false;
    if (*p == '.') {
        if (*++p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p += p[1] == '+' || p[1] == '-' ? 2 : 1;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

/* A YAML scalar as JSON would type it: an unquoted true/false, null/~, or JSON number. */
static json_t *scalar_json(const kx_yaml_node *n)
{
    if (!n->quoted) {
        if (kx_yaml_is_null(n))
            return json_null();
        if (!strcmp(n->str, "true"))
            return json_true();
        if (!strcmp(n->str, "false"))
            return json_false();
        if (json_number_text(n->str)) {
            char *end;
            errno = 0;
            long long v = strtoll(n->str, &end, 10);
            if (!*end && !errno)
                return json_integer(v);
            double d = strtod(n->str, &end);
            if (!*end && isfinite(d))
                return json_real(d);
        }
    }
    return json_stringn(n->str, n->len);
}

static json_t *yaml_json(const kx_yaml_node *n)
{
    if (n->type == KX_YAML_MAP) {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++)
            json_object_setn_new(o, n->keys[i]->str, n->keys[i]->len, yaml_json(n->vals[i]));
        return o;
    }
    if (n->type == KX_YAML_SEQ) {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++)
            json_array_append_new(a, yaml_json(n->vals[i]));
        return a;
    }
    return scalar_json(n);
}

/* A JSON value as a short text for messages (borrowed until the next call). */
static const char *show(const json_t *v)
{
    static char buf[256];
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, sizeof(buf), "%s", s ? s : "?");
    if (s && strlen(s) >= sizeof(buf))
        memcpy(buf + sizeof(buf) - 4, "...", 4);
    free(s);
    return buf;
}

/* Does actual hold what want says? want: a map (the keys given must match), a list (every
 * item, as many), or a scalar (equal as JSON, numbers by value). On a mismatch, why. */
static bool holds(const json_t *want, const json_t *actual, kx_buf *path, kx_buf *why)
{
    size_t mark = path->len;
    bool ok = true;
    if (json_is_object(want)) {
        if (!json_is_object(actual)) {
            kx_buf_printf(why, "%s is %s, expected an object", path->data, show(actual));
            return false;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)want, k, v)
        {
            kx_buf_printf(path, "%s%s", mark ? "." : "", k);
            const json_t *a = json_object_get(actual, k);
            if (!a) {
                kx_buf_printf(why, "%s is missing, expected %s", path->data, show(v));
                ok = false;
            } else {
                ok = holds(v, a, path, why);
            }
            path->len = mark;
            path->data[mark] = '\0';
            if (!ok)
                return false;
        }
        return true;
    }
    if (json_is_array(want)) {
        if (!json_is_array(actual) || json_array_size(actual) != json_array_size(want)) {
            kx_buf_printf(why, "%s is %s", path->data, show(actual));
            kx_buf_printf(why, ", expected %s", show(want));
            return false;
        }
        for (size_t i = 0; i < json_array_size(want) && ok; i++) {
            kx_buf_printf(path, "[%zu]", i);
            ok = holds(json_array_get(want, i), json_array_get(actual, i), path, why);
            path->len = mark;
            path->data[mark] = '\0';
        }
        return ok;
    }
    /* Alert fields read from events are strings ("port": "22"), counts are numbers: a
     * number and a string match when the string is that number (count: "5", port: 22). */
    const json_t *num = json_is_number(want) ? want : json_is_number(actual) ? actual : NULL;
    const json_t *str = json_is_string(want) ? want : json_is_string(actual) ? actual : NULL;
    if (json_is_number(want) && json_is_number(actual)) {
        ok = json_number_value(want) == json_number_value(actual);
    } else if (num && str) {
        const char *t = json_string_value(str);
        char *end;
        double d = json_number_text(t) ? strtod(t, &end) : NAN;
        ok = d == json_number_value(num);
    } else
        ok = json_equal((json_t *)want, (json_t *)actual);
    if (!ok) { /* show() has one buffer: one call per printf */
        kx_buf_printf(why, "%s is %s", path->data, show(actual));
        kx_buf_printf(why, ", expected %s", show(want));
    }
    return ok;
}

/* ---- one tests file ---- */

typedef struct tcase {
    const kx_yaml_node *node;
    const char *name;
    const kx_yaml_node *events, *input, *topic;
    const kx_yaml_node *lists; /* NULL, or the values of live lists for this case */
    json_t *alerts;            /* NULL: not checked */
    json_t *must_not;          /* NULL: none */
} tcase;

typedef struct result {
    const char *tests_file, *rule_file;
    char *name;
    bool ok;
    kx_buf why; /* one line per mismatch */
} result;

typedef struct run {
    kx_ruleset *rules;
    result *res;
    size_t nres, capres;
    size_t passed, failed, bad_files;
    char **files; /* the tests files' paths, which results point at */
    size_t nfiles;
    char tmp[64];
} run;

static result *add_result(run *R, const char *tests_file, const char *rule_file, const char *name)
{
    if (R->nres == R->capres) {
        size_t cap = R->capres ? 2 * R->capres : 64;
        result *v = realloc(R->res, cap * sizeof(*v));
        if (!v)
            return NULL;
        R->res = v;
        R->capres = cap;
    }
    result *x = &R->res[R->nres++];
    memset(x, 0, sizeof(*x));
    x->tests_file = tests_file;
    x->rule_file = rule_file;
    x->name = strdup(name);
    x->ok = true;
    kx_buf_init(&x->why, 0);
    return x;
}

/* One more reason why x failed (the first MAX_MESSAGES are kept). */
static void fail(result *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(result *x, const char *fmt, ...)
{
    size_t lines = 0;
    for (size_t i = 0; i < x->why.len; i++)
        lines += x->why.data[i] == '\n';
    x->ok = false;
    if (lines >= MAX_MESSAGES)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    kx_buf_printf(&x->why, "%s\n", line);
}

/* `rule: X` -> the rule's id (X may be its id, name or title); NULL when no rule is X. */
static const char *rule_id(kx_ruleset *rs, const char *x)
{
    for (size_t i = 0; i < kx_ruleset_size(rs); i++) {
        const kx_rule *r = kx_ruleset_at(rs, i);
        if (!strcmp(r->id, x) || (r->name && !strcmp(r->name, x)) || !strcmp(r->title, x))
            return r->id;
    }
    return NULL;
}

/* The expectations of a case (`alerts` or `must_not`) as JSON, with `rule` as {id: ...}. */
static int expectations(kx_ruleset *rs, const char *file, const kx_yaml_node *n, json_t **out,
                        kx_err *err)
{
    if (n->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, n, "must be a list of alerts (maps of alert fields)");
    json_t *a = json_array();
    for (size_t i = 0; i < n->n; i++) {
        const kx_yaml_node *e = n->vals[i];
        if (e->type != KX_YAML_MAP) {
            json_decref(a);
            return kx_yaml_err(err, file, e, "an alert expectation must be a map of alert fields");
        }
        json_t *o = yaml_json(e);
        const kx_yaml_node *r = kx_yaml_get(e, "rule");
        if (r && r->type == KX_YAML_SCALAR) {
            const char *id = rule_id(rs, r->str);
            if (!id) {
                json_decref(o);
                json_decref(a);
                return kx_yaml_err(err, file, r, "no loaded rule has the id, name or title \"%s\"",
                                   r->str);
            }
            json_object_set_new(o, "rule", json_pack("{s:s}", "id", id));
        }
        json_array_append_new(a, o);
    }
    *out = a;
    return 0;
}

/* The input a case is decoded as must be one: a topic of the config's inputs, or an input
 * map a decoder takes (checked here, so its error points into the tests file). */
static int check_input(const char *file, const tcase *c, const kx_config *cfg,
                       const kx_yaml_node *decode, const kx_decoder_set *dset, kx_err *err)
{
    if (c->topic) {
        if (c->topic->type != KX_YAML_SCALAR)
            return kx_yaml_err(err, file, c->topic, "topic must be the name of a config input");
        for (size_t i = 0; cfg && i < cfg->ninputs; i++)
            if (cfg->input_topics[i] && !strcmp(cfg->input_topics[i], c->topic->str))
                return 0;
        return kx_yaml_err(err, file, c->topic,
                           cfg ? "the config has no input for topic \"%s\""
                               : "topic \"%s\" needs a config (the tests file's `config:`)",
                           c->topic->str);
    }
    if (!c->input)
        return 0;
    kx_decoder *d = NULL;
    int rc = kx_decoder_create_with(c->input, decode, dset, -1, file, &d, err);
    kx_decoder_destroy(d);
    return rc;
}

/* The index of the live list called name, or -1. */
static long live_index(const kx_ruleset *rs, const char *name)
{
    for (size_t i = 0, n = kx_ruleset_live_lists(rs); i < n; i++) {
        kx_live_list l;
        kx_ruleset_live_list(rs, i, &l);
        if (!strcmp(l.name, name))
            return (long)i;
    }
    return -1;
}

/* `lists: {NAME: [values]}`: what the Redis set of each named live list holds in this case. */
static int check_lists(const kx_ruleset *rs, const char *file, const kx_yaml_node *n, kx_err *err)
{
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "lists: a map of list name to its values");
    for (size_t i = 0; i < n->n; i++) {
        const kx_yaml_node *k = n->keys[i], *v = n->vals[i];
        if (live_index(rs, k->str) < 0)
            return kx_yaml_err(err, file, k,
                               "no list \"%s\" is read from Redis (NAME.list.yml with redis:): "
                               "a test gives values to such lists only",
                               k->str);
        if (v->type != KX_YAML_SEQ)
            return kx_yaml_err(err, file, v, "expected the list's values (a YAML list)");
        for (size_t j = 0; j < v->n; j++)
            if (v->vals[j]->type != KX_YAML_SCALAR ||
                memchr(v->vals[j]->str, '\0', v->vals[j]->len))
                return kx_yaml_err(err, file, v->vals[j], "expected a value");
    }
    return 0;
}

/* Gives every live list the values the case names for its Redis set (none when it names
 * none), so a case never sees another's. */
static int set_case_lists(kx_ruleset *rs, const kx_yaml_node *lists)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    int rc = 0;
    for (size_t i = 0, n = kx_ruleset_live_lists(rs); i < n && !rc; i++) {
        kx_live_list l;
        kx_ruleset_live_list(rs, i, &l);
        const kx_yaml_node *v = lists ? kx_yaml_get(lists, l.name) : NULL;
        kx_buf_reset(&b);
        for (size_t j = 0; v && j < v->n && !rc; j++)
            rc = kx_buf_append(&b, v->vals[j]->str, v->vals[j]->len + 1);
        if (!rc)
            rc = kx_ruleset_live_list_set(rs, i, b.data ? b.data : "", b.len, v ? v->n : 0, 1);
    }
    kx_buf_fini(&b);
    return rc;
}

static int parse_case(kx_ruleset *rs, const char *file, const kx_yaml_node *n, tcase *c,
                      kx_err *err)
{
    static const char *const keys[] = {"name",  "events", "alerts", "must_not",
                                       "topic", "input",  "lists",  NULL};
    memset(c, 0, sizeof(*c));
    c->node = n;
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "a test must be a map (name, events, alerts...)");
    int rc = kx_yaml_check_keys(n, file, keys, err);
    if (rc)
        return rc;
    const kx_yaml_node *name = kx_yaml_get(n, "name");
    if (!name || name->type != KX_YAML_SCALAR || !name->len)
        return kx_yaml_err(err, file, name ? name : n, "a test needs a name");
    c->name = name->str;
    c->events = kx_yaml_get(n, "events");
    if (!c->events || c->events->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, c->events ? c->events : n,
                           "a test needs events: a list of log lines or JSON objects");
    for (size_t i = 0; i < c->events->n; i++) {
        const kx_yaml_node *e = c->events->vals[i];
        if (e->type == KX_YAML_SEQ ||
            (e->type == KX_YAML_SCALAR && (memchr(e->str, '\n', e->len) || !e->len)))
            return kx_yaml_err(err, file, e,
                               "an event is one log line (a string) or one JSON object (a map)");
    }
    c->topic = kx_yaml_get(n, "topic");
    c->input = kx_yaml_get(n, "input");
    if (c->topic && c->input)
        return kx_yaml_err(err, file, c->input, "a test gives either topic or input, not both");
    if (c->input && c->input->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, c->input, "input must be a map (an `inputs` entry's keys)");
    if ((c->lists = kx_yaml_get(n, "lists")) && (rc = check_lists(rs, file, c->lists, err)))
        return rc;
    const kx_yaml_node *al = kx_yaml_get(n, "alerts"), *mn = kx_yaml_get(n, "must_not");
    if (!al && !mn)
        return kx_yaml_err(err, file, n, "a test needs alerts (what must fire), must_not, or both");
    if (al && (rc = expectations(rs, file, al, &c->alerts, err)))
        return rc;
    if (mn && (rc = expectations(rs, file, mn, &c->must_not, err)))
        return rc;
    return 0;
}

static void case_free(tcase *c)
{
    json_decref(c->alerts);
    json_decref(c->must_not);
}

/* Writes the case's events, one a line. */
static int write_events(const tcase *c, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    for (size_t i = 0; i < c->events->n; i++) {
        const kx_yaml_node *e = c->events->vals[i];
        if (e->type == KX_YAML_MAP) {
            json_t *j = yaml_json(e);
            json_dumpf(j, f, JSON_COMPACT);
            json_decref(j);
        } else {
            fwrite(e->str, 1, e->len, f);
        }
        fputc('\n', f);
    }
    return fclose(f) ? -errno : 0;
}

static json_t *read_alerts(const char *path)
{
    json_t *a = json_array();
    FILE *f = fopen(path, "r");
    if (!f)
        return a;
    json_error_t je;
    json_t *j;
    while ((j = json_loadf(f, JSON_DISABLE_EOF_CHECK, &je)) != NULL)
        json_array_append_new(a, j);
    fclose(f);
    return a;
}

/* "rule title, group {...}, count N, status S": one alert in a message. */
static void alert_line(const json_t *al, kx_buf *b)
{
    const char *title = json_string_value(json_object_get(json_object_get(al, "rule"), "title"));
    const char *status = json_string_value(json_object_get(al, "status"));
    kx_buf_reset(b);
    kx_buf_printf(b, "%s", title ? title : "?");
    kx_buf_printf(b, ", group %s", show(json_object_get(al, "group")));
    kx_buf_printf(b, ", count %s", show(json_object_get(al, "count")));
    kx_buf_printf(b, ", status %s", status ? status : "?");
}

static bool of_file(const json_t *al, kx_ruleset *rs, const char *rule_file)
{
    const char *id = json_string_value(json_object_get(json_object_get(al, "rule"), "id"));
    for (size_t i = 0; id && i < kx_ruleset_size(rs); i++) {
        const kx_rule *r = kx_ruleset_at(rs, i);
        if (!strcmp(r->id, id))
            return !strcmp(r->file, rule_file);
    }
    return false;
}

static void check_alerts(const run *R, result *x, const tcase *c, const char *rule_file,
                         json_t *got)
{
    kx_buf path, why, line;
    kx_buf_init(&path, 0);
    kx_buf_init(&why, 0);
    kx_buf_init(&line, 0);
    if (c->alerts) {
        json_t *mine = json_array();
        for (size_t i = 0; i < json_array_size(got); i++)
            if (of_file(json_array_get(got, i), R->rules, rule_file))
                json_array_append(mine, json_array_get(got, i));
        size_t nw = json_array_size(c->alerts), ng = json_array_size(mine);
        if (nw != ng) {
            fail(x, "expected %zu alert%s of the rule file, got %zu", nw, nw == 1 ? "" : "s", ng);
            for (size_t i = 0; i < ng; i++) {
                alert_line(json_array_get(mine, i), &line);
                fail(x, "  got: %s", line.data);
            }
        } else {
            for (size_t i = 0; i < nw; i++) {
                kx_buf_reset(&path);
                kx_buf_reset(&why);
                kx_buf_puts(&path, "");
                if (!holds(json_array_get(c->alerts, i), json_array_get(mine, i), &path, &why))
                    fail(x, "alert %zu: %s", i + 1, why.data);
            }
        }
        json_decref(mine);
    }
    for (size_t k = 0; c->must_not && k < json_array_size(c->must_not); k++)
        for (size_t i = 0; i < json_array_size(got); i++) {
            kx_buf_reset(&path);
            kx_buf_reset(&why);
            kx_buf_puts(&path, "");
            if (holds(json_array_get(c->must_not, k), json_array_get(got, i), &path, &why)) {
                alert_line(json_array_get(got, i), &line);
                fail(x, "must_not %zu fired: %s", k + 1, line.data);
            }
        }
    kx_buf_fini(&path);
    kx_buf_fini(&why);
    kx_buf_fini(&line);
}

static void run_case(run *R, const tcase *c, const char *tests_file, const char *rule_file,
                     kx_config *cfg, const kx_yaml_node *decode, const kx_decoder_set *dset)
{
    result *x = add_result(R, tests_file, rule_file, c->name);
    if (!x)
        return;
    char events[96], alerts[96], sinks[256];
    snprintf(events, sizeof(events), "%s/events", R->tmp);
    snprintf(alerts, sizeof(alerts), "%s/alerts", R->tmp);
    unlink(alerts);
    snprintf(sinks, sizeof(sinks), "sinks:\n  out: {type: file, path: '%s'}\n", alerts);
    kx_yaml_doc *alerting = NULL;
    kx_err err = {0};
    if (write_events(c, events) ||
        kx_yaml_load_mem("rules-test", sinks, strlen(sinks), &alerting, &err)) {
        fail(x, "could not write the events to %s", R->tmp);
        kx_yaml_free(alerting);
        R->failed++;
        return;
    }
    const char *files[] = {events};
    kx__replay_spec sp = {.cfg = cfg,
                          .decoders = dset,
                          .rules = R->rules,
                          .store_url = "memory",
                          .format = -1,
                          .topic = c->topic ? c->topic->str : NULL,
                          .input = c->topic ? NULL : c->input,
                          .decode = decode,
                          .alerting = alerting->root,
                          .files = files,
                          .nfiles = 1};
    /* A topic is decoded as the config's input (replay's own choice); without one, an input
     * given here, else JSON with defaults. */
    static const char json_input[] = "format: json\n";
    kx_yaml_doc *dflt = NULL;
    if (!sp.topic && !sp.input &&
        kx_yaml_load_mem("rules-test", json_input, strlen(json_input), &dflt, &err) == 0)
        sp.input = dflt->root;
    int code = set_case_lists(R->rules, c->lists) ? 1 : kx__replay_run(&sp);
    if (code) {
        fflush(stdout); /* the engine's messages went to stderr: keep them in order */
        fail(x, "the engine stopped (exit %d): see its message on stderr", code);
    } else {
        json_t *got = read_alerts(alerts);
        check_alerts(R, x, c, rule_file, got);
        json_decref(got);
    }
    kx_yaml_free(dflt);
    kx_yaml_free(alerting);
    unlink(events);
    unlink(alerts);
    if (x->ok)
        R->passed++;
    else
        R->failed++;
}

/* Runs the tests of one rule file; -EINVAL (reported) when its tests file is not valid. */
static int run_file(run *R, const char *rule_file, const char *tests_file)
{
    static const char *const keys[] = {"config", "input", "decode", "tests", NULL};
    kx_yaml_doc *doc = NULL;
    kx_config *cfg = NULL;
    kx_err err = {0};
    tcase *cases = NULL;
    size_t ncases = 0;
    int rc = kx_yaml_load_file(tests_file, &doc, &err);
    const kx_yaml_node *root = rc ? NULL : doc ? doc->root : NULL;
    const kx_yaml_node *tests = root ? kx_yaml_get(root, "tests") : NULL;
    if (!rc && (!root || root->type != KX_YAML_MAP))
        rc = kx_err_set(&err, tests_file, 1, 1, "a tests file is a map with a `tests` list");
    if (!rc)
        rc = kx_yaml_check_keys(root, tests_file, keys, &err);
    if (!rc && (!tests || tests->type != KX_YAML_SEQ))
        rc = kx_yaml_err(&err, tests_file, tests ? tests : root, "`tests` must be a list");
    const kx_yaml_node *cfg_node = root && !rc ? kx_yaml_get(root, "config") : NULL;
    if (!rc && cfg_node) {
        /* relative to the tests file, as a config's own paths are to the config */
        char path[4096];
        const char *slash = strrchr(tests_file, '/');
        if (cfg_node->type != KX_YAML_SCALAR)
            rc = kx_yaml_err(&err, tests_file, cfg_node, "config must be a path");
        else if (cfg_node->str[0] == '/' || !slash)
            snprintf(path, sizeof(path), "%s", cfg_node->str);
        else
            snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - tests_file), tests_file,
                     cfg_node->str);
        if (!rc)
            rc = kx_config_load(path, &cfg, &err);
    }
    const kx_yaml_node *input = root && !rc ? kx_yaml_get(root, "input") : NULL;
    if (!rc && input && input->type != KX_YAML_MAP)
        rc = kx_yaml_err(&err, tests_file, input, "input must be a map (an `inputs` entry's keys)");
    const kx_yaml_node *decode = root && !rc ? kx_yaml_get(root, "decode") : NULL;
    if (!decode && cfg)
        decode = cfg->decode;
    /* the decoder content the config names, else the shipped decoders */
    kx_decoder_set *dset = NULL;
    if (!rc && kx__decoders_load(cfg, NULL, 0, false, &dset))
        rc = kx_err_set(&err, tests_file, 0, 0, "the decoders do not load (above)");
    if (!rc && !(cases = calloc(tests->n ? tests->n : 1, sizeof(*cases))))
        rc = kx_err_set(&err, tests_file, 0, 0, "out of memory");
    for (size_t i = 0; !rc && i < tests->n; i++, ncases++) {
        rc = parse_case(R->rules, tests_file, tests->vals[i], &cases[i], &err);
        if (!rc && !cases[i].topic && !cases[i].input)
            cases[i].input = input;
        if (!rc)
            rc = check_input(tests_file, &cases[i], cfg, decode, dset, &err);
    }
    if (!rc) {
        for (size_t i = 0; i < ncases; i++)
            run_case(R, &cases[i], tests_file, rule_file, cfg, decode, dset);
    } else {
        kx__cli_print_err(&err);
        result *x = add_result(R, tests_file, rule_file, "(tests file)");
        if (x) {
            char buf[1024];
            kx_err_format(&err, buf, sizeof(buf));
            fail(x, "%s", buf);
        }
        R->bad_files++;
    }
    for (size_t i = 0; i < ncases; i++)
        case_free(&cases[i]);
    free(cases);
    kx_decoder_set_destroy(dset);
    kx_config_destroy(cfg);
    kx_yaml_free(doc);
    return rc;
}

/* ---- reports ---- */

static void xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* JUnit XML, as CI systems read it: a testsuite per tests file, a testcase per test. */
static int write_junit(const run *R, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"klaxon rules\" "
            "tests=\"%zu\" failures=\"%zu\">\n",
            R->nres, R->failed + R->bad_files);
    for (size_t i = 0; i < R->nres;) {
        size_t j = i, nf = 0;
        while (j < R->nres && !strcmp(R->res[j].tests_file, R->res[i].tests_file))
            nf += !R->res[j++].ok;
        fputs("  <testsuite name=\"", f);
        xml_text(f, R->res[i].tests_file);
        fprintf(f, "\" tests=\"%zu\" failures=\"%zu\">\n", j - i, nf);
        for (; i < j; i++) {
            fputs("    <testcase classname=\"", f);
            xml_text(f, R->res[i].rule_file);
            fputs("\" name=\"", f);
            xml_text(f, R->res[i].name);
            if (R->res[i].ok) {
                fputs("\"/>\n", f);
                continue;
            }
            fputs("\">\n      <failure message=\"", f);
            const char *nl = strchr(R->res[i].why.data, '\n');
            char first[512];
            snprintf(first, sizeof(first), "%.*s", nl ? (int)(nl - R->res[i].why.data) : 511,
                     R->res[i].why.data);
            xml_text(f, first);
            fputs("\">", f);
            xml_text(f, R->res[i].why.data);
            fputs("</failure>\n    </testcase>\n", f);
        }
        fputs("  </testsuite>\n", f);
    }
    fputs("</testsuites>\n", f);
    return fclose(f) ? -errno : 0;
}

static int usage_test(FILE *f)
{
    fprintf(f, "usage: klaxon rules test [--json] [--junit FILE] [--coverage] PATH...\n"
               "\n"
               "Runs the tests of every rule file given (or found in a directory): RULE.tests.yml\n"
               "beside RULE.yml (docs/rules.md, \"Testing rules\"). Each test's events go through\n"
               "the engine of `klaxon replay` with the whole rule set loaded, on the events' own\n"
               "time; its alerts are compared with what the test expects (alerts: exactly these\n"
               "of the rule file's rules, in order; must_not: none like these). Prints PASS or\n"
               "FAIL per test, why a test failed, and a summary. Lists read from Redis hold\n"
               "only their file's values, and what a test gives them (lists:); Redis is not read.\n"
               "\n"
               "  --json        one JSON object: passed, failed, results, untested\n"
               "  --junit FILE  also write the results as JUnit XML (for CI systems)\n"
               "  --coverage    also list the rules that have no tests\n"
               "  -h, --help    this help\n"
               "\n"
               "Exit 0 when every test passes, 1 when one fails, 2 when the rules or a tests file\n"
               "do not load, or on bad usage.\n");
    return f == stdout ? 0 : 2;
}

int kx__rules_test(int argc, char **argv)
{
    kx_log_set_level(KX_LOG_WARN); /* the engine's INFO lines are not the command's output */
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"junit", required_argument, NULL, 'u'},
                                         {"coverage", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool json = false, coverage = false;
    const char *junit = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == 'j')
            json = true;
        else if (ch == 'u')
            junit = optarg;
        else if (ch == 'v')
            coverage = true;
        else
            return usage_test(ch == 'h' ? stdout : stderr);
    }
    if (optind >= argc)
        return usage_test(stderr);
    run R = {0};
    kx_err err = {0};
    if (kx_ruleset_load((const char *const *)argv + optind, (size_t)(argc - optind), &R.rules,
                        &err)) {
        kx__cli_print_err(&err);
        kx_tz_cache_clear();
        return 2;
    }
    snprintf(R.tmp, sizeof(R.tmp), "%s/klaxon-rules-test-XXXXXX",
             getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 24 ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(R.tmp)) {
        fprintf(stderr, "klaxon: cannot make a temporary directory in %s\n", R.tmp);
        kx_ruleset_destroy(R.rules);
        kx_tz_cache_clear();
        return 1;
    }
    size_t n = kx_ruleset_size(R.rules);
    json_t *untested = json_array();
    char tp[4096];
    for (size_t i = 0; i < n; i++) {
        const kx_rule *r = kx_ruleset_at(R.rules, i);
        bool first_of_file = i == 0 || strcmp(kx_ruleset_at(R.rules, i - 1)->file, r->file) != 0;
        bool has = tests_path(r->file, tp, sizeof(tp));
        if (!has)
            json_array_append_new(untested, json_pack("{s:s, s:s, s:s}", "id", r->id, "title",
                                                      r->title, "file", r->file));
        if (has && first_of_file) {
            char **v = realloc(R.files, (R.nfiles + 1) * sizeof(*v));
            char *keep = v ? strdup(tp) : NULL;
            if (v)
                R.files = v;
            if (keep) {
                R.files[R.nfiles++] = keep;
                run_file(&R, r->file, keep);
            }
        }
    }
    rmdir(R.tmp);
    if (json) {
        json_t *res = json_array();
        for (size_t i = 0; i < R.nres; i++)
            json_array_append_new(
                res, json_pack("{s:s, s:s, s:s, s:b, s:s}", "tests_file", R.res[i].tests_file,
                               "rule_file", R.res[i].rule_file, "test", R.res[i].name, "ok",
                               R.res[i].ok, "why", R.res[i].why.data ? R.res[i].why.data : ""));
        json_t *out = json_pack("{s:I, s:I, s:I, s:o, s:o}", "passed", (json_int_t)R.passed,
                                "failed", (json_int_t)R.failed, "bad_files",
                                (json_int_t)R.bad_files, "results", res, "untested", untested);
        json_dumpf(out, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(out);
    } else {
        for (size_t i = 0; i < R.nres; i++) {
            printf("%s  %s  %s\n", R.res[i].ok ? "PASS" : "FAIL", R.res[i].rule_file,
                   R.res[i].name);
            for (const char *p = R.res[i].why.data; p && *p;) {
                const char *nl = strchr(p, '\n');
                printf("      %.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
                p = nl ? nl + 1 : p + strlen(p);
            }
        }
        if (coverage) {
            printf("rules without tests: %zu\n", json_array_size(untested));
            for (size_t i = 0; i < json_array_size(untested); i++) {
                json_t *u = json_array_get(untested, i);
                printf("  %s  %s  %s\n", json_string_value(json_object_get(u, "id")),
                       json_string_value(json_object_get(u, "file")),
                       json_string_value(json_object_get(u, "title")));
            }
        }
        printf("%zu passed, %zu failed", R.passed, R.failed);
        if (R.bad_files)
            printf(", %zu tests file%s not loaded", R.bad_files, R.bad_files == 1 ? "" : "s");
        printf("; %zu rules, %zu without tests\n", n, json_array_size(untested));
        json_decref(untested);
    }
    int code = R.bad_files ? 2 : R.failed ? 1 : 0;
    if (junit && write_junit(&R, junit)) {
        fprintf(stderr, "klaxon: cannot write %s\n", junit);
        code = code ? code : 1;
    }
    for (size_t i = 0; i < R.nfiles; i++)
        free(R.files[i]);
    free(R.files);
    for (size_t i = 0; i < R.nres; i++) {
        free(R.res[i].name);
        kx_buf_fini(&R.res[i].why);
    }
    free(R.res);
    kx_ruleset_destroy(R.rules);
    kx_tz_cache_clear();
    return code;
}
