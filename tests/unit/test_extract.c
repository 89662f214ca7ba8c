/*
 * Extractors: PCRE2 named groups turned into fields, scoped by syslog program, chained on
 * earlier extractors' fields, bounded by match limits; and config errors at line:col.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "klaxon/decode.h"
#include "klaxon/tz.h"
#include "klaxon/yaml.h"

static char dumpbuf[16384];

static const char *dump(const kx_event *ev)
{
    size_t off = 0;
    dumpbuf[0] = '\0';
    for (size_t i = 0; i < ev->nfields && off < sizeof(dumpbuf); i++) {
        const kx_field *f = &ev->fields[i];
        assert_int_equal(strlen(f->value), f->value_len);
        off += (size_t)snprintf(dumpbuf + off, sizeof(dumpbuf) - off, "%s=%s\n", f->name, f->value);
    }
    return dumpbuf;
}

/* Loads "input:" and "decode:" from one YAML text; returns kx_decoder_create's result. */
static int mk(const char *yaml, kx_decoder **d, char *errtext, size_t errlen)
{
    kx_yaml_doc *doc = NULL;
    kx_err err;
    memset(&err, 0, sizeof(err));
    assert_int_equal(kx_yaml_load_mem("cfg.yaml", yaml, strlen(yaml), &doc, &err), 0);
    int rc = kx_decoder_create(kx_yaml_get(doc->root, "input"), kx_yaml_get(doc->root, "decode"),
                               -1, "cfg.yaml", d, &err);
    if (errtext)
        kx_err_format(&err, errtext, errlen);
    kx_yaml_free(doc);
    return rc;
}

static const char config[] =
    "input:\n"
    "  format: syslog\n"
    "decode:\n"
    "  extractors:\n"
    "    - program: sshd\n"
    "      pattern: '^(?:Failed|Accepted) (?<auth_method>\\S+) for (?:invalid user )?"
    "(?<user>\\S+) from (?<src_ip>\\S+) port (?<src_port>\\d+)'\n"
    "    - program: sudo\n"
    "      pattern: '^\\s*(?<sudo_user>\\S+) : TTY=(?<tty>\\S+) ; PWD=(?<pwd>\\S+) ; "
    "USER=(?<target_user>\\S+) ; COMMAND=(?<command>.*)$'\n"
    "    - pattern: 'rhost=(?<rhost>\\S+)(?:\\s+user=(?<pam_user>\\S+))?'\n"
    "    - program: sshd\n"
    "      field: user\n"
    "      pattern: '^(?<user_initial>.)'\n"
    "    - program: sshd\n"
    "      pattern: '(?<never>ZZZ)'\n";

static void test_syslog_extractors(void **state)
{
    (void)state;
    kx_decoder *d;
    kx_event ev;
    const char *why;
    char errtext[600];
    assert_int_equal(mk(config, &d, errtext, sizeof(errtext)), 0);
    kx_event_init(&ev);

    static const char sshd[] = "Mar 29 01:30:00 web1 sshd[4242]: Failed password for invalid "
                               "user admin from 203.0.113.7 port 52144 ssh2";
    assert_int_equal(kx_decode(d, sshd, strlen(sshd), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=sshd\npid=4242\n"
                                   "message=Failed password for invalid user admin from "
                                   "203.0.113.7 port 52144 ssh2\n"
                                   "auth_method=password\n"
                                   "user=admin\n"
                                   "src_ip=203.0.113.7\n"
                                   "src_port=52144\n"
                                   "user_initial=a\n");

    /* The program-less extractor applies to every program; the optional group did not take
     * part in the first line, so it adds no field. */
    static const char pam1[] = "Mar 29 01:30:02 web1 sshd[4243]: pam_unix(sshd:auth): "
                               "authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
                               "rhost=203.0.113.7";
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, pam1, strlen(pam1), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=sshd\npid=4243\n"
                                   "message=pam_unix(sshd:auth): authentication failure; "
                                   "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7\n"
                                   "rhost=203.0.113.7\n");
    static const char pam2[] = "Mar 29 01:30:02 web1 sshd[4243]: pam_unix(sshd:auth): "
                               "authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
                               "rhost=203.0.113.7  user=root";
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, pam2, strlen(pam2), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=sshd\npid=4243\n"
                                   "message=pam_unix(sshd:auth): authentication failure; "
                                   "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  "
                                   "user=root\n"
                                   "rhost=203.0.113.7\n"
                                   "pam_user=root\n");

    /* sudo's extractor only; sshd's are scoped away even though the text would not match. */
    static const char sudo[] = "Mar 29 01:31:00 web1 sudo:   alice : TTY=pts/0 ; "
                               "PWD=/home/alice ; USER=root ; COMMAND=/bin/bash -i";
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, sudo, strlen(sudo), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=sudo\n"
                                   "message=  alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
                                   "COMMAND=/bin/bash -i\n"
                                   "sudo_user=alice\n"
                                   "tty=pts/0\n"
                                   "pwd=/home/alice\n"
                                   "target_user=root\n"
                                   "command=/bin/bash -i\n");

    /* A "Failed password" text from another program is not sshd's business. */
    static const char other[] = "Mar 29 01:31:00 web1 myapp: Failed password for bob from "
                                "198.51.100.1 port 1 ssh2";
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, other, strlen(other), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=myapp\n"
                                   "message=Failed password for bob from 198.51.100.1 port 1 "
                                   "ssh2\n");
    /* Not valid UTF-8 (Latin-1 from an old daemon): still matches, byte for byte. */
    static const char latin1[] = "Mar 29 01:31:00 web1 login: caf\xe9 rhost=h\xe9te";
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, latin1, strlen(latin1), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=login\n"
                                   "message=caf\xe9 rhost=h\xe9te\n"
                                   "rhost=h\xe9te\n");
    /* Bytes an attacker chose as the user name must not hide the source address. */
    static const char evil[] = "Mar 29 01:31:00 web1 sshd[9]: Failed password for invalid user "
                               "\xff\xfe from 203.0.113.9 port 4 ssh2";
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, evil, strlen(evil), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=web1\nprogram=sshd\npid=9\n"
                                   "message=Failed password for invalid user \xff\xfe from "
                                   "203.0.113.9 port 4 ssh2\n"
                                   "auth_method=password\n"
                                   "user=\xff\xfe\n"
                                   "src_ip=203.0.113.9\n"
                                   "src_port=4\n"
                                   "user_initial=\xff\n");

    kx_event_fini(&ev);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

static void test_json_extractor(void **state)
{
    (void)state;
    kx_decoder *d;
    kx_event ev;
    const char *why;
    /* On JSON, a program-less extractor runs over the named field, once per array element. */
    assert_int_equal(mk("decode:\n"
                        "  extractors:\n"
                        "    - field: msg\n"
                        "      pattern: 'id=(?<id>\\d+)'\n",
                        &d, NULL, 0),
                     0);
    kx_event_init(&ev);
    static const char doc[] = "{\"msg\":[\"id=7\",\"none\",\"id=8\"],\"other\":\"id=9\"}";
    assert_int_equal(kx_decode(d, doc, strlen(doc), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "msg=id=7\nmsg=none\nmsg=id=8\nother=id=9\nid=7\nid=8\n");
    kx_event_fini(&ev);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

static void test_match_limit(void **state)
{
    (void)state;
    kx_decoder *d;
    kx_event ev;
    const char *why;
    char line[128];
    /* Catastrophic backtracking: the match limit stops it, the event still decodes, and the
     * other extractor still runs. */
    assert_int_equal(mk("input: {format: syslog}\n"
                        "decode:\n"
                        "  extractors:\n"
                        "    - pattern: '^(?<x>(\\w+\\s?)*)$'\n"
                        "    - pattern: '^(?<first>\\w)'\n",
                        &d, NULL, 0),
                     0);
    kx_event_init(&ev);
    snprintf(line, sizeof(line), "Mar 29 01:31:00 h p: %s!",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(kx_decode(d, line, strlen(line), 0, &ev, &why), 0);
    assert_string_equal(dump(&ev), "host=h\nprogram=p\n"
                                   "message=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\n"
                                   "first=a\n");
    kx_event_fini(&ev);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

static void expect_err(const char *yaml, const char *want)
{
    kx_decoder *d = (kx_decoder *)1;
    char errtext[600];
    assert_int_equal(mk(yaml, &d, errtext, sizeof(errtext)), -EINVAL);
    assert_null(d);
    assert_string_equal(errtext, want);
}

static void test_errors(void **state)
{
    (void)state;
    expect_err("decode:\n"
               "  extractors:\n"
               "    - program: sshd\n"
               "      pattern: '^Failed (?<user\\S+)'\n",
               "cfg.yaml:4:16: bad pattern: syntax error in subpattern name (missing "
               "terminator?) at offset 15");
    expect_err("decode:\n"
               "  extractors:\n"
               "    - pattern: '(?<ok>a)'\n"
               "    - pattern: \"a(b\"\n",
               "cfg.yaml:4:16: bad pattern: missing closing parenthesis at offset 3");
    expect_err("decode:\n"
               "  extractors:\n"
               "    - pattern: 'no (groups)'\n",
               "cfg.yaml:3:16: pattern has no named groups (?<name>...)");
    expect_err("decode:\n"
               "  extractors:\n"
               "    - program: sshd\n"
               "      feild: message\n"
               "      pattern: '(?<a>.)'\n",
               "cfg.yaml:4:7: unknown key \"feild\"");
    expect_err("decode:\n"
               "  extractors:\n"
               "    - program: sshd\n",
               "cfg.yaml:3:7: extractor needs a pattern");
    expect_err("decode:\n"
               "  extractors:\n"
               "    - pattern: [a]\n",
               "cfg.yaml:3:16: expected a string");
    expect_err("decode:\n"
               "  extractors: {pattern: x}\n",
               "cfg.yaml:2:15: extractors must be a list");
    expect_err("decode:\n"
               "  extractor:\n"
               "    - pattern: '(?<a>.)'\n",
               "cfg.yaml:2:3: unknown key \"extractor\"");
    kx_tz_cache_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syslog_extractors),
        cmocka_unit_test(test_json_extractor),
        cmocka_unit_test(test_match_limit),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
