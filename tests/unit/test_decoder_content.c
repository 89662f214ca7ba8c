/*
 * Decoders as content (src/decode/content.c): a decoders/ tree loaded, checked with every
 * error at file:line:col, and merged into a decoder -- its programs' logsources and
 * extractors, except for a program the config's own decode section names. And the shipped
 * decoders/ tree loads.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "klaxon/decode.h"
#include "klaxon/tz.h"
#include "klaxon/yaml.h"
#include "kx_test.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = kx_test_tmpdir("decoders");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kx_test_rmrf(dir);
    free(dir);
    kx_tz_cache_clear();
    return 0;
}

static void put(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    assert_int_equal(kx_test_write_file(p, text), 0);
}

static void drop(const char *name)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    remove(p);
}

static const char sshd[] =
    "title: sshd\nprogram: [sshd, sshd-session]\nlogsource: {product: linux, service: sshd}\n"
    "extractors:\n  - pattern: '^Failed password for (?<user>\\S+) from (?<src_ip>\\S+)'\n"
    "fields: [user, src_ip]\n";

/* A decoder made with the set (and a config decode section, as YAML text). */
static kx_decoder *mk(const kx_decoder_set *set, const char *decode)
{
    kx_yaml_doc *in = NULL, *dec = NULL;
    kx_err err = {0};
    assert_int_equal(kx_yaml_load_mem("in", "format: syslog\n", 15, &in, &err), 0);
    if (decode)
        assert_int_equal(kx_yaml_load_mem("cfg.yaml", decode, strlen(decode), &dec, &err), 0);
    kx_decoder *d = NULL;
    int rc =
        kx_decoder_create_with(in->root, dec ? dec->root : NULL, set, -1, "cfg.yaml", &d, &err);
    char buf[600];
    kx_err_format(&err, buf, sizeof(buf));
    if (rc)
        fail_msg("%s", buf);
    kx_yaml_free(in);
    kx_yaml_free(dec);
    return d;
}

static void decode(kx_decoder *d, kx_event *ev, const char *line)
{
    const char *why = NULL;
    kx_event_reset(ev);
    assert_int_equal(kx_decode(d, line, strlen(line), 1773136800000LL, ev, &why), 0);
}

static const char *field(const kx_event *ev, const char *name)
{
    const kx_field *f = kx_event_next(ev, name, NULL);
    return f ? f->value : NULL;
}

static void test_programs_and_extractors(void **state)
{
    (void)state;
    put("sshd.yml", sshd);
    const char *paths[] = {dir};
    kx_decoder_set *set = NULL;
    kx_err err = {0};
    assert_int_equal(kx_decoder_set_load(paths, 1, &set, &err), 0);
    assert_int_equal(kx_decoder_set_size(set), 1);
    kx_event ev;
    kx_event_init(&ev);
    kx_decoder *d = mk(set, NULL);
    decode(d, &ev, "Mar 10 09:20:05 web-01 sshd[7]: Failed password for root from 203.0.113.7");
    assert_string_equal(ev.product, "linux");
    assert_string_equal(ev.service, "sshd");
    assert_string_equal(field(&ev, "user"), "root");
    assert_string_equal(field(&ev, "src_ip"), "203.0.113.7");
    /* both programs; another program: neither logsource nor fields */
    decode(d, &ev, "Mar 10 09:20:05 web-01 sshd-session[7]: Failed password for bob from x");
    assert_string_equal(ev.service, "sshd");
    assert_string_equal(field(&ev, "user"), "bob");
    decode(d, &ev, "Mar 10 09:20:05 web-01 login[7]: Failed password for bob from x");
    assert_null(ev.service);
    assert_null(field(&ev, "user"));
    kx_decoder_destroy(d);
    /* the config names sshd: its own logsource and extractors, none of the content's;
     * sshd-session keeps the content's */
    d = mk(set, "programs: {sshd: {product: linux, service: openssh}}\n"
                "extractors:\n  - {program: sshd, pattern: '^Failed password for (?<who>\\S+)'}\n");
    decode(d, &ev, "Mar 10 09:20:05 web-01 sshd[7]: Failed password for root from 1.2.3.4");
    assert_string_equal(ev.service, "openssh");
    assert_string_equal(field(&ev, "who"), "root");
    assert_null(field(&ev, "user"));
    decode(d, &ev, "Mar 10 09:20:05 web-01 sshd-session[7]: Failed password for bob from x");
    assert_string_equal(ev.service, "sshd");
    assert_string_equal(field(&ev, "user"), "bob");
    kx_decoder_destroy(d);
    kx_decoder_set_destroy(set);
    /* a decoder without a logsource adds extractors to a program decoded elsewhere */
    put("pam.yml", "program: [sshd, su]\nextractors:\n"
                   "  - pattern: 'authentication failure;.* rhost=(?<rhost>\\S*)'\n");
    assert_int_equal(kx_decoder_set_load(paths, 1, &set, &err), 0);
    d = mk(set, NULL);
    decode(d, &ev,
           "Mar 10 09:20:05 web-01 sshd[7]: pam_unix(sshd:auth): authentication failure; "
           "logname= uid=0 rhost=203.0.113.7  user=root");
    assert_string_equal(ev.service, "sshd");
    assert_string_equal(field(&ev, "rhost"), "203.0.113.7");
    decode(d, &ev,
           "Mar 10 09:20:05 web-01 su[7]: pam_unix(su:auth): authentication failure; "
           "rhost=  user=root");
    assert_null(ev.service); /* su has no decoder of its own here */
    assert_string_equal(field(&ev, "rhost"), "");
    kx_decoder_destroy(d);
    kx_event_fini(&ev);
    kx_decoder_set_destroy(set);
    drop("pam.yml");
    drop("sshd.yml");
}

static void expect_error(const char *file, const char *text, const char *msg)
{
    put(file, text);
    const char *paths[] = {dir};
    kx_decoder_set *set = NULL;
    kx_err err = {0};
    assert_int_equal(kx_decoder_set_load(paths, 1, &set, &err), -EINVAL);
    assert_null(set);
    char got[600], want[600];
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want), "%s/%s", dir, msg);
    assert_string_equal(got, want);
    drop(file);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("a.yml", "title: a\nlogsource: {product: linux}\n",
                 "a.yml:1:1: a decoder needs a program (its syslog program name)");
    expect_error("a.yml", "program: p\nlogsource: {product: linux}\ncolour: red\n",
                 "a.yml:3:1: unknown key \"colour\"");
    expect_error("a.yml", "program: p\n",
                 "a.yml:1:1: a decoder needs a logsource (product, service, category), or "
                 "extractors for programs another decoder gives one");
    expect_error("a.yml",
                 "program: p\nlogsource: {product: x}\nextractors:\n  - pattern: '(?<a>x'\n",
                 "a.yml:4:14: bad pattern: missing closing parenthesis at offset 6");
    expect_error("a.yml",
                 "program: p\nlogsource: {product: x}\nextractors:\n  - {program: q, pattern: x}\n",
                 "a.yml:4:15: an extractor of a decoder is for its program: no program here");
    put("a.yml", sshd);
    char msg[600];
    snprintf(msg, sizeof(msg), "b.yml:1:14: program \"sshd\" has a decoder already (%s/a.yml)",
             dir);
    expect_error("b.yml", "program: [x, sshd]\nlogsource: {product: x}\n", msg);
    drop("a.yml");
}

/* The shipped tree loads. */
static void test_shipped(void **state)
{
    (void)state;
    const char *paths[] = {KX_SOURCE_DIR "/decoders"};
    kx_decoder_set *set = NULL;
    kx_err err = {0};
    assert_int_equal(kx_decoder_set_load(paths, 1, &set, &err), 0);
    assert_true(kx_decoder_set_size(set) >= 2);
    kx_decoder_set_destroy(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_programs_and_extractors),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_shipped),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
