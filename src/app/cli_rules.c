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

#include "klaxon/detect.h"
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

/* ---- dispatch ---- */

static int usage_rules(FILE *f)
{
    fprintf(f, "usage: klaxon rules lint|list|test [OPTIONS] PATH...\n"
               "\n"
               "  lint  report every problem of every rule file (FILE:LINE:COL: message)\n"
               "  list  the rules as a table, Markdown or JSON\n"
               "  test  run each rule's tests (RULE.tests.yml beside RULE.yml)\n"
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
    fprintf(stderr, "klaxon: unknown rules command \"%s\"\n", sub);
    return usage_rules(stderr);
}
