/*
 * klaxon rules lint|list|test: the analyst's commands over rule files (docs/rules.md).
 *
 *   lint  every problem of every file, each FILE:LINE:COL: message (kx_ruleset_lint)
 *   list  the rules as a table, Markdown (the rule catalogue in docs/) or JSON
 *   test  each rule's tests (RULE.tests.yml beside RULE.yml): rules_test.c
 *
 * Output goes to stdout (the command's product: scripts and editors read it); usage and
 * fatal errors to stderr. Exit codes: 0 clean; 1 a test failed; 2 bad usage, or the rules
 * (or their tests) do not load.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/event.h"
#include "klaxon/log.h"
#include "klaxon/tz.h"
#include "cli_int.h"

/* ---- lint ---- */

typedef struct lint_out {
    json_t *problems; /* --json: collected here; else printed as they come */
} lint_out;

static void lint_report(void *ud, kx_lint_level level, const kx_err *err)
{
    lint_out *o = ud;
    if (o->problems) {
        json_array_append_new(o->problems, json_pack("{s:s, s:s, s:i, s:i, s:s}", "level",
                                                     level == KX_LINT_WARNING ? "warning" : "error",
                                                     "file", err->file, "line", err->line, "col",
                                                     err->col, "message", err->msg));
        return;
    }
    /* FILE:LINE:COL: message, as compilers print theirs (editors jump to it) */
    char buf[1024];
    kx_err e = *err;
    e.msg[0] = '\0';
    kx_err_format(&e, buf, sizeof(buf));
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == ' ' || buf[n - 1] == ':'))
        buf[--n] = '\0';
    printf("%s%s%s%s\n", buf, n ? ": " : "", level == KX_LINT_WARNING ? "warning: " : "", err->msg);
}

static int usage_lint(FILE *f)
{
    fprintf(f,
            "usage: klaxon rules lint [--json] PATH...\n"
            "\n"
            "Checks rule files or directories as `klaxon run` loads them and reports every\n"
            "problem of every file (not only the first), each as FILE:LINE:COL: message on\n"
            "stdout, then a summary. A document with an error is left out and the next one\n"
            "checked; so is a correlation whose references do not resolve.\n"
            "\n"
            "  --json      one JSON object: {\"ok\", \"rules\", \"errors\", \"warnings\",\n"
            "              \"problems\": [{\"level\", \"file\", \"line\", \"col\", \"message\"}]}\n"
            "  -h, --help  this help\n"
            "\n"
            "Exit 0 when the rules load (warnings allowed), 2 on any error or bad usage.\n");
    return f == stdout ? 0 : 2;
}

static int cmd_lint(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    bool json = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == 'j')
            json = true;
        else
            return usage_lint(ch == 'h' ? stdout : stderr);
    }
    if (optind >= argc)
        return usage_lint(stderr);
    const char *const *paths = (const char *const *)argv + optind;
    size_t npaths = (size_t)(argc - optind);
    lint_out o = {.problems = json ? json_array() : NULL};
    kx_lint_totals t;
    size_t errors = kx_ruleset_lint(paths, npaths, lint_report, &o, &t);
    kx_tz_cache_clear();
    size_t det = t.detection, corr = t.correlation;
    if (json) {
        json_t *out = json_pack("{s:b, s:o, s:I, s:I, s:o}", "ok", errors == 0, "rules",
                                errors ? json_null() : json_integer((json_int_t)(det + corr)),
                                "errors", (json_int_t)errors, "warnings", (json_int_t)t.warnings,
                                "problems", o.problems);
        json_dumpf(out, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(out);
    } else if (errors) {
        printf("%zu error%s, %zu warning%s\n", errors, errors == 1 ? "" : "s", t.warnings,
               t.warnings == 1 ? "" : "s");
    } else {
        printf("ok: %zu rules (%zu detection, %zu correlation)", det + corr, det, corr);
        if (t.warnings)
            printf(", %zu warning%s", t.warnings, t.warnings == 1 ? "" : "s");
        printf("\n");
    }
    return errors ? 2 : 0;
}

/* ---- list ---- */

enum { FMT_TABLE, FMT_MARKDOWN, FMT_JSON };

static const char *rule_type(const kx_rule *r)
{
    return r->kind == KX_RULE_CORRELATION ? kx_corr_type_name(r->corr_type) : "detection";
}

/* "product/service/category" with the parts given, "-" for none; correlations name the
 * rules they count. */
static void logsource_text(const kx_rule *r, kx_buf *b)
{
    kx_buf_reset(b);
    if (r->kind == KX_RULE_CORRELATION) {
        kx_buf_puts(b, "rules: ");
        for (size_t i = 0; i < r->nrefs; i++) {
            if (i)
                kx_buf_puts(b, ",");
            kx_buf_puts(b, r->refs[i]->name ? r->refs[i]->name : r->refs[i]->id);
        }
    } else {
        const char *part[3];
        kx_rule_logsource(r, &part[0], &part[1], &part[2]);
        for (int i = 0; i < 3; i++)
            if (part[i]) {
                if (b->len)
                    kx_buf_puts(b, "/");
                kx_buf_puts(b, part[i]);
            }
    }
    if (!b->len)
        kx_buf_puts(b, "-");
    kx_buf_putc(b, '\0');
}

/* Markdown table cells: a '|' would end the cell, a newline the row. */
static void md_cell(const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else if (*s == '\n' || *s == '\r')
            fputc(' ', stdout);
        else
            fputc(*s, stdout);
    }
}

static int usage_list(FILE *f)
{
    fprintf(f, "usage: klaxon rules list [--format table|markdown|json] [--json] PATH...\n"
               "\n"
               "Lists the rules of rule files or directories, in load order: id, type\n"
               "(detection or the correlation type), level, team, logsource (a correlation: the\n"
               "rules it counts), tests (the cases in RULE.tests.yml, '-' for none) and title;\n"
               "Markdown and JSON add the tags and the Sigma filters narrowing the rule, JSON\n"
               "every field. The rules must load (see\n"
               "`klaxon rules lint`).\n"
               "\n"
               "  -f, --format F  table (default), markdown or json\n"
               "      --json      the same as --format json\n"
               "  -h, --help      this help\n"
               "\n"
               "Exit 0, or 2 when the rules do not load or on bad usage.\n");
    return f == stdout ? 0 : 2;
}

static json_t *str_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *opt_str(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *rule_json(const kx_rule *r, int ntests)
{
    const char *p, *s, *c;
    kx_rule_logsource(r, &p, &s, &c);
    json_t *o = json_pack("{s:s, s:o, s:s, s:s, s:s, s:o, s:o}", "id", r->id, "name",
                          opt_str(r->name), "title", r->title, "type", rule_type(r), "level",
                          r->level, "team", opt_str(r->team), "category", opt_str(r->category));
    if (r->kind == KX_RULE_CORRELATION) {
        json_t *refs = json_array();
        for (size_t i = 0; i < r->nrefs; i++)
            json_array_append_new(refs, json_string(r->refs[i]->id));
        json_object_set_new(o, "rules", refs);
    } else {
        json_object_set_new(o, "logsource",
                            json_pack("{s:o, s:o, s:o}", "product", opt_str(p), "service",
                                      opt_str(s), "category", opt_str(c)));
    }
    json_object_set_new(o, "tags", str_array(r->tags, r->ntags));
    json_object_set_new(o, "filters", str_array(r->filters, r->nfilters));
    json_object_set_new(o, "description", opt_str(r->description));
    json_object_set_new(o, "tests", json_integer(ntests < 0 ? 0 : ntests));
    json_object_set_new(o, "file", json_string(r->file));
    json_object_set_new(o, "line", json_integer(r->line));
    return o;
}

static int cmd_list(int argc, char **argv)
{
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int fmt = FMT_TABLE, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
        if (ch == 'j') {
            fmt = FMT_JSON;
        } else if (ch == 'f' && !strcmp(optarg, "table")) {
            fmt = FMT_TABLE;
        } else if (ch == 'f' && !strcmp(optarg, "markdown")) {
            fmt = FMT_MARKDOWN;
        } else if (ch == 'f' && !strcmp(optarg, "json")) {
            fmt = FMT_JSON;
        } else {
            if (ch == 'f')
                fprintf(stderr, "klaxon: --format must be table, markdown or json\n");
            return usage_list(ch == 'h' ? stdout : stderr);
        }
    }
    if (optind >= argc)
        return usage_list(stderr);
    kx_ruleset *rs = NULL;
    kx_err err = {0};
    if (kx_ruleset_load((const char *const *)argv + optind, (size_t)(argc - optind), &rs, &err)) {
        kx__cli_print_err(&err);
        kx_tz_cache_clear();
        return 2;
    }
    size_t n = kx_ruleset_size(rs);
    int *ntests = calloc(n ? n : 1, sizeof(*ntests));
    for (size_t i = 0; ntests && i < n; i++)
        ntests[i] = kx__rules_tests_count(kx_ruleset_at(rs, i));
    kx_buf ls;
    kx_buf_init(&ls, 0);
    if (fmt == FMT_JSON) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, rule_json(kx_ruleset_at(rs, i), ntests ? ntests[i] : 0));
        json_dumpf(a, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(a);
    } else if (fmt == FMT_MARKDOWN) {
        printf("| id | title | type | level | team | logsource | tags | filters | tests |\n"
               "|---|---|---|---|---|---|---|---|---:|\n");
        for (size_t i = 0; i < n; i++) {
            const kx_rule *r = kx_ruleset_at(rs, i);
            logsource_text(r, &ls);
            printf("| `%s` | ", r->id);
            md_cell(r->title);
            printf(" | %s | %s | ", rule_type(r), r->level);
            md_cell(r->team ? r->team : "default");
            printf(" | ");
            md_cell(ls.data);
            printf(" | ");
            for (size_t t = 0; t < r->ntags; t++) {
                fputs(t ? ", " : "", stdout);
                md_cell(r->tags[t]);
            }
            printf(" | ");
            for (size_t k = 0; k < r->nfilters; k++) {
                fputs(k ? ", " : "", stdout);
                md_cell(r->filters[k]);
            }
            printf(" | %d |\n", ntests && ntests[i] > 0 ? ntests[i] : 0);
        }
    } else {
        printf("%-36s  %-16s  %-13s  %-14s  %-28s  %5s  %s\n", "ID", "TYPE", "LEVEL", "TEAM",
               "LOGSOURCE", "TESTS", "TITLE");
        for (size_t i = 0; i < n; i++) {
            const kx_rule *r = kx_ruleset_at(rs, i);
            logsource_text(r, &ls);
            char tests[16];
            if (ntests && ntests[i] > 0)
                snprintf(tests, sizeof(tests), "%d", ntests[i]);
            else
                snprintf(tests, sizeof(tests), "-");
            printf("%-36s  %-16s  %-13s  %-14s  %-28s  %5s  %s\n", r->id, rule_type(r), r->level,
                   r->team ? r->team : "default", ls.data, tests, r->title);
        }
    }
    kx_buf_fini(&ls);
    free(ntests);
    kx_ruleset_destroy(rs);
    kx_tz_cache_clear();
    return 0;
}

/* ---- explain ---- */

static void put_json_short(const json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(t ? t : "?", stdout);
    free(t);
}

static void explain_cond(const json_t *n, int depth)
{
    const char *op = json_string_value(json_object_get(n, "op"));
    const json_t *ids = json_object_get(n, "searches"), *kids = json_object_get(n, "kids");
    printf("%*s", depth, "");
    if (!strcmp(op, "id")) {
        printf("%s", json_string_value(json_array_get(ids, 0)));
    } else if (ids) {
        printf("%s (", op);
        for (size_t i = 0; i < json_array_size(ids); i++)
            printf("%s%s", i ? ", " : "", json_string_value(json_array_get(ids, i)));
        printf(")");
    } else {
        printf("%s", op);
    }
    printf(" => %s\n", json_is_true(json_object_get(n, "value")) ? "true" : "false");
    for (size_t i = 0; i < json_array_size(kids); i++)
        explain_cond(json_array_get(kids, i), depth + 2);
}

static void explain_detection(const json_t *e, int depth)
{
    const json_t *ls = json_object_get(e, "logsource");
    const char *p = json_string_value(json_object_get(ls, "product")),
               *sv = json_string_value(json_object_get(ls, "service")),
               *ct = json_string_value(json_object_get(ls, "category"));
    printf("%*srule \"%s\" (%s): %s\n", depth, "", json_string_value(json_object_get(e, "title")),
           json_string_value(json_object_get(e, "id")),
           json_is_true(json_object_get(e, "match")) ? "MATCH" : "no match");
    printf("%*slogsource %s/%s/%s: %s\n", depth + 2, "", p ? p : "-", sv ? sv : "-", ct ? ct : "-",
           json_is_true(json_object_get(e, "logsource_fits")) ? "fits"
                                                              : "does not fit the event's");
    const json_t *searches = json_object_get(e, "searches");
    for (size_t i = 0; i < json_array_size(searches); i++) {
        const json_t *s = json_array_get(searches, i);
        printf("%*s%s: %s%s\n", depth + 2, "", json_string_value(json_object_get(s, "name")),
               json_is_true(json_object_get(s, "value")) ? "true" : "false",
               json_object_get(s, "timeofday") ? " (time of day)" : "");
        const json_t *groups = json_object_get(s, "groups");
        for (size_t g = 0; g < json_array_size(groups); g++) {
            const json_t *grp = json_array_get(groups, g),
                         *conds = json_object_get(grp, "conditions");
            int in = depth + 4;
            if (json_array_size(groups) > 1) {
                printf("%*salternative %zu: %s\n", depth + 4, "", g + 1,
                       json_is_true(json_object_get(grp, "value")) ? "true" : "false");
                in += 2;
            }
            for (size_t c = 0; c < json_array_size(conds); c++) {
                const json_t *fc = json_array_get(conds, c);
                const json_t *m = json_object_get(fc, "matched"),
                             *ev = json_object_get(fc, "event");
                printf("%*s%s: %s", in, "", json_string_value(json_object_get(fc, "key")),
                       json_is_true(json_object_get(fc, "value")) ? "true" : "false");
                if (json_is_string(m)) {
                    printf("  matched ");
                    put_json_short(m);
                } else {
                    printf("  values ");
                    put_json_short(json_object_get(fc, "values"));
                }
                if (json_is_array(ev)) {
                    printf("  event ");
                    put_json_short(ev);
                }
                printf("\n");
            }
        }
    }
    printf("%*scondition:\n", depth + 2, "");
    explain_cond(json_object_get(e, "condition"), depth + 4);
    if (json_integer_value(json_object_get(e, "filters")))
        printf("%*s(narrowed by %lld Sigma filter(s): their search identifiers are above)\n",
               depth + 2, "", (long long)json_integer_value(json_object_get(e, "filters")));
    if (json_is_string(json_object_get(e, "degraded")))
        printf("%*sdegraded: %s\n", depth + 2, "",
               json_string_value(json_object_get(e, "degraded")));
}

/* A correlation's condition as text: "event_count >= 5", terms joined by "and". */
static void put_corr_condition(const kx_rule *c)
{
    static const char *const ops[] = {">", ">=", "<", "<=", "==", "!="};
    printf("%s", kx_corr_type_name(c->corr_type));
    for (size_t i = 0; i < c->ncond; i++)
        printf("%s %s %g", i ? " and" : "", ops[c->cond[i].op], c->cond[i].value);
}

/* What the store answered for the correlation's windows after an event, and its alerts. */
static void explain_windows(const kx_rule *c, const json_t *e)
{
    const json_t *ws = json_object_get(e, "windows"), *as = json_object_get(e, "alerts");
    for (size_t i = 0; i < json_array_size(ws); i++) {
        const json_t *w = json_array_get(ws, i);
        printf("    window of group ");
        put_json_short(json_object_get(w, "group"));
        if (json_is_true(json_object_get(w, "late"))) {
            printf(": the event is later than the allowed lateness: not counted\n");
            continue;
        }
        printf(": %lld event(s) from %s to %s; condition ",
               (long long)json_integer_value(json_object_get(w, "count")),
               json_string_value(json_object_get(w, "first")),
               json_string_value(json_object_get(w, "last")));
        put_corr_condition(c);
        printf(": %s%s\n", json_is_true(json_object_get(w, "condition_met")) ? "met" : "not met",
               json_is_true(json_object_get(w, "fired")) ? " -- fires" : "");
    }
    for (size_t i = 0; i < json_array_size(as); i++) {
        const json_t *a = json_array_get(as, i);
        printf("    ALERT group ");
        put_json_short(json_object_get(a, "group"));
        printf(" count %lld", (long long)json_integer_value(json_object_get(a, "count")));
        if (json_object_get(a, "value"))
            printf(" value %g", json_real_value(json_object_get(a, "value")));
        const char *st = json_string_value(json_object_get(a, "status"));
        if (st && strcmp(st, "firing") != 0)
            printf(" (%s)", st);
        printf(", %s to %s\n", json_string_value(json_object_get(a, "first_seen")),
               json_string_value(json_object_get(a, "last_seen")));
    }
}

static void explain_text(size_t n, const char *line, size_t len, const kx_event *ev,
                         const json_t *e, const kx_rule *rule)
{
    char t[40];
    kx_time_format(ev->time_ms, t, sizeof(t));
    printf("event %zu: %.*s%s\n", n, len > 200 ? 200 : (int)len, line, len > 200 ? "..." : "");
    printf("  time %s  logsource %s/%s/%s\n  fields:", t, ev->product ? ev->product : "-",
           ev->service ? ev->service : "-", ev->category ? ev->category : "-");
    for (size_t i = 0; i < ev->nfields; i++) {
        printf(" %s=", ev->fields[i].name);
        json_t *v = ev->fields[i].type == KX_VAL_NULL
                        ? json_null()
                        : json_stringn(ev->fields[i].value, ev->fields[i].value_len);
        put_json_short(v);
        json_decref(v);
    }
    printf("\n");
    if (!json_object_get(e, "correlation")) {
        explain_detection(e, 2);
        return;
    }
    printf("  rule \"%s\" (%s, %s): %s\n", json_string_value(json_object_get(e, "title")),
           json_string_value(json_object_get(e, "id")),
           json_string_value(json_object_get(e, "correlation")),
           json_is_true(json_object_get(e, "counted")) ? "the event counts"
                                                       : "the event counts for none of its rules");
    const json_t *refs = json_object_get(e, "rules");
    for (size_t i = 0; i < json_array_size(refs); i++) {
        const json_t *r = json_array_get(refs, i), *g = json_object_get(r, "group");
        if (g) {
            printf("    in group ");
            put_json_short(g);
            printf("\n");
        }
        if (json_object_get(r, "correlation"))
            printf("    counts the correlation \"%s\"\n",
                   json_string_value(json_object_get(r, "title")));
        else
            explain_detection(r, 4);
    }
    explain_windows(rule, e);
}

static int usage_explain(FILE *f)
{
    fprintf(f,
            "usage: klaxon rules explain [--rules PATH]... [--config FILE] [--topic NAME]\n"
            "                            [--format json|syslog] [--json] RULE [EVENT...|-]\n"
            "\n"
            "Shows why RULE (its id, name or title) does or does not match each event: the\n"
            "decoded event (time, logsource, fields), whether its logsource fits the rule's,\n"
            "each search identifier's value with each field condition (the value that matched,\n"
            "or the values written and the event's), and each node of the condition. A\n"
            "correlation shows each rule it counts, the group the event falls in, and then\n"
            "its window (the events it holds, from when to when, whether its condition is met)\n"
            "and the alerts it raised: the events go through the engine of `klaxon run` with\n"
            "an in-memory store, on their own time, in the order given; absence and \"at most\"\n"
            "windows are judged at the end of the events. Events are the arguments, else one\n"
            "per line of stdin ('-').\n"
            "\n"
            "  -r, --rules PATH   rule file or directory (repeatable; adds to the config's)\n"
            "  -c, --config FILE  decode as the config's inputs (and load its rules)\n"
            "  -t, --topic NAME   decode as the config's input for this topic\n"
            "  -f, --format F     json (default) or syslog, without a config input\n"
            "      --json         one JSON object per event instead of text\n"
            "  -h, --help         this help\n"
            "\n"
            "Exit 0 when the rule matches every event (a correlation: counts it), 1 when not,\n"
            "2 on bad usage, rules or config.\n");
    return f == stdout ? 0 : 2;
}

static kx_rule *find_rule(kx_ruleset *rs, const char *x)
{
    for (size_t i = 0; i < kx_ruleset_size(rs); i++) {
        kx_rule *r = kx_ruleset_at(rs, i);
        if (!strcmp(r->id, x) || (r->name && !strcmp(r->name, x)) || !strcmp(r->title, x))
            return r;
    }
    return NULL;
}

static int cmd_explain(int argc, char **argv)
{
    static const struct option opts[] = {{"rules", required_argument, NULL, 'r'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char **paths = calloc((size_t)argc + 64, sizeof(*paths));
    size_t npaths = 0;
    const char *cfg_path = NULL, *topic = NULL;
    int format = -1, ch, code = 2;
    bool json = false;
    kx_config *cfg = NULL;
    kx_ruleset *rs = NULL;
    kx_decoder *d = NULL;
    kx__corr_explain *cx = NULL;
    kx_decoder_set *dset = NULL;
    kx_err err = {0};
    optind = 1;
    while (paths && (ch = getopt_long(argc, argv, "r:c:t:f:h", opts, NULL)) != -1) {
        if (ch == 'r') {
            paths[npaths++] = optarg;
        } else if (ch == 'c') {
            cfg_path = optarg;
        } else if (ch == 't') {
            topic = optarg;
        } else if (ch == 'f' && (!strcmp(optarg, "json") || !strcmp(optarg, "syslog"))) {
            format = !strcmp(optarg, "json") ? KX_FMT_JSON : KX_FMT_SYSLOG;
        } else if (ch == 'j') {
            json = true;
        } else {
            code = usage_explain(ch == 'h' ? stdout : stderr);
            goto out;
        }
    }
    if (!paths || optind >= argc) {
        code = usage_explain(stderr);
        goto out;
    }
    if (cfg_path && kx_config_load(cfg_path, &cfg, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    for (size_t i = 0; cfg && i < cfg->nrule_paths && npaths < (size_t)argc + 64; i++)
        paths[npaths++] = cfg->rule_paths[i];
    if (!npaths) {
        fprintf(stderr, "klaxon: no rules given (--rules or --config)\n");
        goto out;
    }
    if (kx_ruleset_load(paths, npaths, &rs, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    if (kx__livelists_file_values(rs, "explain does not read Redis")) {
        fprintf(stderr, "klaxon: out of memory\n");
        goto out;
    }
    const kx_rule *rule = find_rule(rs, argv[optind]);
    if (!rule) {
        fprintf(stderr, "klaxon: no rule has the id, name or title \"%s\"\n", argv[optind]);
        goto out;
    }
    /* The input to decode as: the config's for the topic (or the first of the format). */
    const kx_yaml_node *input = NULL;
    for (size_t i = 0; cfg && i < cfg->ninputs && !input; i++) {
        const kx_yaml_node *f = kx_yaml_get(cfg->inputs[i], "format");
        if (topic ? cfg->input_topics[i] && !strcmp(cfg->input_topics[i], topic)
                  : format < 0 || (format == KX_FMT_SYSLOG) == kx_yaml_is(f, "syslog"))
            input = cfg->inputs[i];
    }
    if (topic && !input) {
        fprintf(stderr, "klaxon: %s\n",
                cfg ? "the config has no input for that topic" : "--topic needs --config");
        goto out;
    }
    if (kx__decoders_load(cfg, NULL, 0, false, &dset))
        goto out;
    if (kx_decoder_create_with(input, cfg ? cfg->decode : NULL, dset, format,
                               cfg ? cfg->file : NULL, &d, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    if (rule->kind == KX_RULE_CORRELATION &&
        kx__corr_explain_create(rs, rule, cfg ? cfg->lateness_ms : 60000, &cx)) {
        fprintf(stderr, "klaxon: out of memory\n");
        goto out;
    }
    code = 0;
    bool from_stdin = optind + 1 >= argc || !strcmp(argv[optind + 1], "-");
    char *line = NULL;
    size_t cap = 0, n = 0;
    kx_event ev;
    kx_event_init(&ev);
    for (int a = optind + 1;; a++) {
        const char *raw;
        size_t len;
        if (from_stdin) {
            ssize_t got = getline(&line, &cap, stdin);
            if (got < 0)
                break;
            len = (size_t)got;
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
            if (!len)
                continue;
            raw = line;
        } else {
            if (a >= argc)
                break;
            raw = argv[a];
            len = strlen(raw);
        }
        n++;
        kx_event_reset(&ev);
        const char *why = NULL;
        if (kx_decode(d, raw, len, kx_now_ms(), &ev, &why)) {
            printf(json ? "{\"event\":%zu,\"malformed\":\"%s\"}\n" : "event %zu: malformed: %s\n",
                   n, why ? why : "?");
            code = 1;
            continue;
        }
        json_t *e = kx_rule_explain(rs, rule, &ev);
        if (!e) {
            fprintf(stderr, "klaxon: out of memory\n");
            code = 1;
            break;
        }
        if (cx)
            kx__corr_explain_event(cx, &ev, e);
        bool hit = json_is_true(
            json_object_get(e, rule->kind == KX_RULE_CORRELATION ? "counted" : "match"));
        code = hit ? code : 1;
        if (json) {
            json_object_set_new(e, "event", json_integer((json_int_t)n));
            json_dumpf(e, stdout, JSON_COMPACT);
            printf("\n");
        } else {
            explain_text(n, raw, len, &ev, e, rule);
        }
        json_decref(e);
    }
    kx_event_fini(&ev);
    free(line);
    if (cx) { /* absence and "at most" rules are judged once time has passed: at the end */
        json_t *end = kx__corr_explain_finish(cx);
        if (json_array_size(json_object_get(end, "alerts"))) {
            if (json) {
                json_object_set_new(end, "end", json_true());
                json_dumpf(end, stdout, JSON_COMPACT);
                printf("\n");
            } else {
                printf("at the end of the events:\n");
                explain_windows(rule, end);
            }
        }
        json_decref(end);
    }
out:
    kx__corr_explain_destroy(cx);
    kx_decoder_destroy(d);
    kx_decoder_set_destroy(dset);
    kx_ruleset_destroy(rs);
    kx_config_destroy(cfg);
    kx_tz_cache_clear();
    free(paths);
    return code;
}

/* ---- dispatch ---- */

static int usage_rules(FILE *f)
{
    fprintf(f, "usage: klaxon rules lint|list|test|explain [OPTIONS] ...\n"
               "\n"
               "  lint  report every problem of every rule file (FILE:LINE:COL: message)\n"
               "  list  the rules as a table, Markdown or JSON\n"
               "  test  run each rule's tests (RULE.tests.yml beside RULE.yml)\n"
               "  explain  why a rule does or does not match an event\n"
               "\n"
               "`klaxon rules COMMAND --help` describes each.\n");
    return f == stdout ? 0 : 2;
}

int kx__cli_rules(int argc, char **argv)
{
    kx_log_set_level(KX_LOG_WARN);
    if (argc < 2)
        return usage_rules(stderr);
    const char *sub = argv[1];
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help"))
        return usage_rules(stdout);
    if (!strcmp(sub, "lint"))
        return cmd_lint(argc - 1, argv + 1);
    if (!strcmp(sub, "list"))
        return cmd_list(argc - 1, argv + 1);
    if (!strcmp(sub, "test"))
        return kx__rules_test(argc - 1, argv + 1);
    if (!strcmp(sub, "explain"))
        return cmd_explain(argc - 1, argv + 1);
    fprintf(stderr, "klaxon: unknown rules command \"%s\"\n", sub);
    return usage_rules(stderr);
}
