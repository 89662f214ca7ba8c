/*
 * The config loader (src/app/config.c): defaults, rule paths resolved against the config's
 * directory, inputs and their topics, the stage sections kept as YAML nodes, and every error
 * as the exact "file:line:col: message" string. Error paths are exercised under ASan's leak
 * checker: a leak on any of them fails the run.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/config.h"
#include "kx_test.h"

typedef struct fx {
    char *dir;
    char path[512]; /* dir/klaxon.yaml */
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->dir = kx_test_tmpdir("config");
    assert_non_null(f->dir);
    snprintf(f->path, sizeof(f->path), "%s/klaxon.yaml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static kx_config *load_ok(fx *f, const char *text)
{
    assert_int_equal(kx_test_write_file(f->path, text), 0);
    kx_config *c = NULL;
    kx_err err = {0};
    int rc = kx_config_load(f->path, &c, &err);
    if (rc) {
        char msg[1024];
        kx_err_format(&err, msg, sizeof(msg));
        fail_msg("config load failed: %s", msg);
    }
    assert_non_null(c);
    return c;
}

/* Loads text, expects -EINVAL and exactly "<path>:<where>: <msg>" (where = "line:col"). */
static void expect_error(fx *f, const char *text, const char *where, const char *msg)
{
    assert_int_equal(kx_test_write_file(f->path, text), 0);
    kx_config *c = NULL;
    kx_err err = {0};
    char got[1024], want[1024];
    snprintf(want, sizeof(want), "%s:%s: %s", f->path, where, msg);
    int rc = kx_config_load(f->path, &c, &err);
    if (rc == 0) {
        kx_config_destroy(c); /* keep the leak checker quiet about the real failure */
        fail_msg("accepted, expected the error %s", want);
    }
    assert_int_equal(rc, -EINVAL);
    assert_null(c); /* untouched */
    kx_err_format(&err, got, sizeof(got));
    assert_string_equal(got, want);
}

static void test_defaults(void **state)
{
    fx *f = *state;
    kx_config *c = load_ok(f, "rules: rules\n");
    assert_string_equal(c->file, f->path);
    assert_string_equal(c->store_url, "memory");
    assert_int_equal(c->state_max_keys, 1000000);
    assert_false(c->state_windows_log);
    assert_int_equal(c->lateness_ms, 60000);
    assert_int_equal(c->max_event_bytes, 1048576);
    assert_int_equal(c->evidence_bytes, 16384);
    assert_int_equal(c->log_level, KX_LOG_INFO);
    assert_null(c->metrics_addr);
    assert_int_equal(c->metrics_port, 0);
    assert_null(c->kafka);
    assert_null(c->decode);
    assert_null(c->alerting);
    assert_int_equal(c->ninputs, 0);
    assert_int_equal(c->nrule_paths, 1);
    char want[600];
    snprintf(want, sizeof(want), "%s/rules", f->dir);
    assert_string_equal(c->rule_paths[0], want);
    kx_config_destroy(c);
}

static void test_all_sections(void **state)
{
    fx *f = *state;
    kx_config *c = load_ok(f, "rules:\n"
                              "  - rules/linux\n"
                              "  - /etc/klaxon/aws.yml\n"
                              "  - ../shared\n"
                              "kafka: {brokers: 127.0.0.1:9092, group: klaxon}\n"
                              "inputs:\n"
                              "  - topic: auth\n"
                              "    format: syslog\n"
                              "  - format: json\n"
                              "  - topic: cloudtrail\n"
                              "decode: {extractors: []}\n"
                              "state:\n"
                              "  store: \"redis://127.0.0.1:6379/kx:\"\n"
                              "  max_keys: 5000\n"
                              "  lateness: 2m\n"
                              "alerting: {sinks: {out: {type: stdout}}}\n"
                              "metrics:\n"
                              "  listen: 127.0.0.1:9100\n"
                              "limits:\n"
                              "  max_event_bytes: 4096\n"
                              "  evidence_bytes: 512\n"
                              "log_level: debug\n");
    char want[600];
    assert_int_equal(c->nrule_paths, 3);
    snprintf(want, sizeof(want), "%s/rules/linux", f->dir);
    assert_string_equal(c->rule_paths[0], want);
    assert_string_equal(c->rule_paths[1], "/etc/klaxon/aws.yml");
    snprintf(want, sizeof(want), "%s/../shared", f->dir);
    assert_string_equal(c->rule_paths[2], want);

    assert_non_null(c->kafka);
    assert_true(kx_yaml_is(kx_yaml_get(c->kafka, "group"), "klaxon"));
    assert_int_equal(c->ninputs, 3);
    assert_string_equal(c->input_topics[0], "auth");
    assert_true(kx_yaml_is(kx_yaml_get(c->inputs[0], "format"), "syslog"));
    assert_null(c->input_topics[1]);
    assert_true(kx_yaml_is(kx_yaml_get(c->inputs[1], "format"), "json"));
    assert_string_equal(c->input_topics[2], "cloudtrail");
    assert_int_equal(c->inputs[2]->line, 10);
    assert_int_equal(c->inputs[2]->col, 5);
    assert_non_null(c->decode);
    assert_non_null(kx_yaml_get(c->decode, "extractors"));
    assert_non_null(c->alerting);
    assert_non_null(kx_yaml_get(c->alerting, "sinks"));

    assert_string_equal(c->store_url, "redis://127.0.0.1:6379/kx:");
    assert_int_equal(c->state_max_keys, 5000);
    assert_int_equal(c->lateness_ms, 120000);
    assert_string_equal(c->metrics_addr, "127.0.0.1");
    assert_int_equal(c->metrics_port, 9100);
    assert_int_equal(c->max_event_bytes, 4096);
    assert_int_equal(c->evidence_bytes, 512);
    assert_int_equal(c->log_level, KX_LOG_DEBUG);
    kx_config_destroy(c);
}

static void test_log_levels(void **state)
{
    fx *f = *state;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    static const kx_log_level want[] = {KX_LOG_DEBUG, KX_LOG_INFO, KX_LOG_WARN, KX_LOG_ERROR};
    for (size_t i = 0; i < 4; i++) {
        char text[64];
        snprintf(text, sizeof(text), "log_level: %s\n", names[i]);
        kx_config *c = load_ok(f, text);
        assert_int_equal(c->log_level, want[i]);
        kx_config_destroy(c);
    }
}

/* A config named by a relative path: rules resolve against its directory, still relative
 * to the working directory (what the user typed), and a config in "." keeps them as is. */
static void test_relative_config_path(void **state)
{
    fx *f = *state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(f->dir), 0);
    char sub[600];
    snprintf(sub, sizeof(sub), "%s/conf", f->dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(kx_test_write_file("conf/klaxon.yaml", "rules: [r.yml, /abs/x.yml]\n"), 0);
    assert_int_equal(kx_test_write_file("klaxon.yaml", "rules: r.yml\n"), 0);
    kx_config *c = NULL, *d = NULL;
    kx_err err = {0};
    int rc1 = kx_config_load("conf/klaxon.yaml", &c, &err);
    int rc2 = kx_config_load("klaxon.yaml", &d, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, 0);
    assert_int_equal(c->nrule_paths, 2);
    assert_string_equal(c->rule_paths[0], "conf/r.yml");
    assert_string_equal(c->rule_paths[1], "/abs/x.yml");
    assert_int_equal(d->nrule_paths, 1);
    assert_string_equal(d->rule_paths[0], "r.yml");
    kx_config_destroy(c);
    kx_config_destroy(d);
}

static void test_error_unknown_top_key(void **state)
{
    expect_error(*state, "rules: r\nkafak: {}\n", "2:1", "unknown key \"kafak\"");
}

static void test_error_unknown_state_key(void **state)
{
    expect_error(*state, "state:\n  store: memory\n  stor: memory\n", "3:3",
                 "unknown key \"stor\"");
}

static void test_error_unknown_metrics_key(void **state)
{
    expect_error(*state, "metrics:\n  listen: 127.0.0.1:9100\n  port: 9100\n", "3:3",
                 "unknown key \"port\"");
}

static void test_error_unknown_limits_key(void **state)
{
    expect_error(*state, "limits:\n  max_event: 100\n", "2:3", "unknown key \"max_event\"");
}

static void test_error_bad_store_url(void **state)
{
    expect_error(*state, "state:\n  store: postgres://127.0.0.1\n", "2:10",
                 "store url: expected \"memory\" or "
                 "\"redis://[USER:PASSWORD@]HOST:PORT[/PREFIX]\"");
    /* At the line, and the password masked. */
    expect_error(*state, "state:\n  store: redis://kx:S3CRET@127.0.0.1:99999\n", "2:10",
                 "store url \"redis://kx:***@127.0.0.1:99999\": bad port");
}

static void test_error_username_without_password(void **state)
{
    expect_error(*state, "state:\n  store: redis://127.0.0.1:6379\n  username: klaxon\n", "3:13",
                 "username: a Redis ACL user needs a password (password or password_file)");
}

static void test_state_windows(void **state)
{
    fx *f = *state;
    kx_config *c = load_ok(f, "state:\n  store: \"redis://127.0.0.1:6379\"\n  windows: log\n");
    assert_true(c->state_windows_log);
    kx_config_destroy(c);
    c = load_ok(f, "state:\n  windows: script\n");
    assert_false(c->state_windows_log);
    kx_config_destroy(c);
    expect_error(*state, "state:\n  windows: lua\n", "2:12",
                 "windows: \"script\" or \"log\" (how Redis keeps sliding windows)");
}

static void test_rules_watch(void **state)
{
    fx *f = *state;
    kx_config *c = load_ok(f, "rules_watch: 10s\n");
    assert_int_equal(c->rules_watch_ms, 10000);
    kx_config_destroy(c);
    c = load_ok(f, "log_level: warn\n");
    assert_int_equal(c->rules_watch_ms, 0); /* off unless asked */
    kx_config_destroy(c);
    expect_error(*state, "rules_watch: 200ms\n", "1:14", "rules_watch is at least 1s (or 0: off)");
}

static void test_error_bad_duration(void **state)
{
    expect_error(*state, "state:\n  lateness: 5 minutes\n", "2:13",
                 "expected a duration like 30s, 5m, 2h, 1d or 500ms, got \"5 minutes\"");
}

static void test_error_duplicate_topic(void **state)
{
    expect_error(*state,
                 "inputs:\n"
                 "  - topic: auth\n"
                 "  - topic: trail\n"
                 "  - format: json\n"
                 "    topic: auth\n",
                 "5:12", "topic \"auth\" is configured twice");
}

static void test_error_metrics_listen_without_port(void **state)
{
    expect_error(*state, "metrics:\n  listen: 127.0.0.1\n", "2:11",
                 "metrics.listen: expected HOST:PORT, got \"127.0.0.1\"");
    expect_error(*state, "metrics:\n  listen: ':9100'\n", "2:11",
                 "metrics.listen: expected HOST:PORT, got \":9100\"");
    expect_error(*state, "metrics:\n  listen: 127.0.0.1:70000\n", "2:11",
                 "metrics.listen: expected HOST:PORT, got \"127.0.0.1:70000\"");
    expect_error(*state, "metrics: {}\n", "1:10", "metrics: missing required key \"listen\"");
}

/* "HOST:" names no port: strtol of "" parses nothing and must not pass as port 0. */
static void test_error_metrics_listen_empty_port(void **state)
{
    expect_error(*state, "metrics:\n  listen: '127.0.0.1:'\n", "2:11",
                 "metrics.listen: expected HOST:PORT, got \"127.0.0.1:\"");
}

static void test_error_bad_log_level(void **state)
{
    expect_error(*state, "rules: r\nlog_level: verbose\n", "2:12",
                 "log_level: expected debug, info, warn or error");
}

static void test_error_empty_file(void **state)
{
    expect_error(*state, "", "1:1", "the config file is empty");
    expect_error(*state, "# only a comment\n", "1:1", "the config file is empty");
}

static void test_error_two_documents(void **state)
{
    expect_error(*state, "rules: a\n---\nrules: b\n", "3:1",
                 "a config file holds one YAML document");
}

static void test_error_yaml_syntax(void **state)
{
    expect_error(*state, "rules: [a, b\nstate: {}\n", "2:6",
                 "YAML: did not find expected ',' or ']' while parsing a flow sequence");
}

static void test_error_not_a_map(void **state)
{
    expect_error(*state, "- rules\n", "1:1", "expected a mapping");
    expect_error(*state, "state: memory\n", "1:8", "expected a mapping");
}

static void test_error_typed_values(void **state)
{
    expect_error(*state, "rules: {a: b}\n", "1:8", "rules: expected a path or a list of paths");
    expect_error(*state, "rules: [a, [b]]\n", "1:12", "expected a string");
    expect_error(*state, "inputs: {topic: a}\n", "1:9", "inputs: expected a list of inputs");
    expect_error(*state, "inputs: [auth]\n", "1:10", "inputs: each input must be a mapping");
    expect_error(*state, "state: {max_keys: 0}\n", "1:19", "0 is out of range [1, 1000000000]");
    expect_error(*state, "limits: {max_event_bytes: 10}\n", "1:27",
                 "10 is out of range [64, 67108864]");
    expect_error(*state, "limits: {evidence_bytes: lots}\n", "1:26",
                 "expected an integer, got \"lots\"");
}

static void test_error_missing_file(void **state)
{
    fx *f = *state;
    char path[600];
    snprintf(path, sizeof(path), "%s/nope.yaml", f->dir);
    kx_config *c = NULL;
    kx_err err = {0};
    assert_int_equal(kx_config_load(path, &c, &err), -EINVAL);
    assert_null(c);
    char got[1024], want[1024];
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    assert_string_equal(got, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_config_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_unknown_top_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_unknown_state_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_unknown_metrics_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_unknown_limits_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_bad_store_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_username_without_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_bad_duration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_duplicate_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_metrics_listen_without_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_metrics_listen_empty_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_bad_log_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_two_documents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_yaml_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_not_a_map, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_typed_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_missing_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
