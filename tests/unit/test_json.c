/*
 * JSON decoding: flattening (dots, arrays repeated per element), scalar text forms, and
 * every way a message can be malformed. Field lists are compared whole, in order, rendered
 * one "name=value" per line with the type after the name when it is not a string.
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
#include "klaxon/detect.h"
#include "klaxon/metrics.h"
#include "klaxon/yaml.h"
#include "kx_test.h"

static char dumpbuf[65536];

static const char *dump(const kx_event *ev)
{
    static const char *const types[] = {"", "(num)", "(bool)", "(null)"};
    size_t off = 0;
    dumpbuf[0] = '\0';
    for (size_t i = 0; i < ev->nfields && off < sizeof(dumpbuf); i++) {
        const kx_field *f = &ev->fields[i];
        assert_int_equal(strlen(f->name), f->name_len);
        assert_int_equal(strlen(f->value), f->value_len);
        off += (size_t)snprintf(dumpbuf + off, sizeof(dumpbuf) - off, "%s%s=%s\n", f->name,
                                types[f->type], f->value);
    }
    return dumpbuf;
}

typedef struct fx {
    kx_decoder *d;
    kx_event ev;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    kx_err err;
    assert_non_null(f);
    assert_int_equal(kx_decoder_create(NULL, NULL, -1, "t.yaml", &f->d, &err), 0);
    assert_int_equal(kx_decoder_format(f->d), KX_FMT_JSON);
    kx_event_init(&f->ev);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kx_event_fini(&f->ev);
    kx_decoder_destroy(f->d);
    free(f);
    return 0;
}

static int decode(fx *f, const char *raw, size_t len, const char **why)
{
    kx_event_reset(&f->ev);
    return kx_decode(f->d, raw, len, 1000, &f->ev, why);
}

static int decode_s(fx *f, const char *raw, const char **why)
{
    return decode(f, raw, strlen(raw), why);
}

/* A CloudTrail record for iam:AttachUserPolicy, in the shape CloudTrail writes it (AWS's
 * documentation example accounts and addresses). */
static const char cloudtrail[] =
    "{\"eventVersion\":\"1.08\","
    "\"userIdentity\":{\"type\":\"IAMUser\",\"principalId\":\"AIDACKCEVSQ6C2EXAMPLE\","
    "\"arn\":\"arn:aws:iam::111122223333:user/Alice\",\"accountId\":\"111122223333\","
    "\"accessKeyId\":\"AKIAIOSFODNN7EXAMPLE\",\"userName\":\"Alice\","
    "\"sessionContext\":{\"sessionIssuer\":{},\"webIdFederationData\":{},"
    "\"attributes\":{\"creationDate\":\"2023-07-19T21:11:57Z\",\"mfaAuthenticated\":\"false\"}}},"
    "\"eventTime\":\"2023-07-19T21:25:09Z\",\"eventSource\":\"iam.amazonaws.com\","
    "\"eventName\":\"AttachUserPolicy\",\"awsRegion\":\"us-east-1\","
    "\"sourceIPAddress\":\"192.0.2.0\",\"userAgent\":\"aws-cli/2.13.5 Python/3.11.4\","
    "\"requestParameters\":{\"userName\":\"Bob\","
    "\"policyArn\":\"arn:aws:iam::aws:policy/AdministratorAccess\"},"
    "\"responseElements\":null,\"requestID\":\"a5dcd5b1-e4b5-4bf1-b0e3-EXAMPLE\","
    "\"eventID\":\"b9bd1ef6-3e1f-4c57-9b59-EXAMPLE\",\"readOnly\":false,"
    "\"eventType\":\"AwsApiCall\",\"managementEvent\":true,"
    "\"recipientAccountId\":\"111122223333\",\"eventCategory\":\"Management\","
    "\"tlsDetails\":{\"tlsVersion\":\"TLSv1.2\","
    "\"cipherSuite\":\"ECDHE-RSA-AES128-GCM-SHA256\","
    "\"clientProvidedHostHeader\":\"iam.amazonaws.com\"},"
    "\"sessionCredentialFromConsole\":\"true\"}\n";

static void test_cloudtrail(void **state)
{
    fx *f = *state;
    const char *why;
    assert_int_equal(decode_s(f, cloudtrail, &why), 0);
    assert_string_equal(dump(&f->ev),
                        "eventVersion=1.08\n"
                        "userIdentity.type=IAMUser\n"
                        "userIdentity.principalId=AIDACKCEVSQ6C2EXAMPLE\n"
                        "userIdentity.arn=arn:aws:iam::111122223333:user/Alice\n"
                        "userIdentity.accountId=111122223333\n"
                        "userIdentity.accessKeyId=AKIAIOSFODNN7EXAMPLE\n"
                        "userIdentity.userName=Alice\n"
                        "userIdentity.sessionContext.attributes.creationDate=2023-07-19T21:11:57Z\n"
                        "userIdentity.sessionContext.attributes.mfaAuthenticated=false\n"
                        "eventTime=2023-07-19T21:25:09Z\n"
                        "eventSource=iam.amazonaws.com\n"
                        "eventName=AttachUserPolicy\n"
                        "awsRegion=us-east-1\n"
                        "sourceIPAddress=192.0.2.0\n"
                        "userAgent=aws-cli/2.13.5 Python/3.11.4\n"
                        "requestParameters.userName=Bob\n"
                        "requestParameters.policyArn=arn:aws:iam::aws:policy/AdministratorAccess\n"
                        "responseElements(null)=\n"
                        "requestID=a5dcd5b1-e4b5-4bf1-b0e3-EXAMPLE\n"
                        "eventID=b9bd1ef6-3e1f-4c57-9b59-EXAMPLE\n"
                        "readOnly(bool)=false\n"
                        "eventType=AwsApiCall\n"
                        "managementEvent(bool)=true\n"
                        "recipientAccountId=111122223333\n"
                        "eventCategory=Management\n"
                        "tlsDetails.tlsVersion=TLSv1.2\n"
                        "tlsDetails.cipherSuite=ECDHE-RSA-AES128-GCM-SHA256\n"
                        "tlsDetails.clientProvidedHostHeader=iam.amazonaws.com\n"
                        "sessionCredentialFromConsole=true\n");
    assert_int_equal(f->ev.nfields, 29);
    /* eventTime is the third default time field: 2023-07-19T21:25:09Z. */
    assert_true(f->ev.time_from_log);
    assert_int_equal(f->ev.time_ms, 1689801909000LL);
    assert_string_equal(f->ev.tenant, "default");
    assert_null(f->ev.product);
    assert_ptr_equal(f->ev.raw, cloudtrail);
    assert_int_equal(f->ev.raw_len, sizeof(cloudtrail) - 1);
}

static void test_arrays(void **state)
{
    fx *f = *state;
    const char *why;
    /* KMS PutKeyPolicy's resources list (an array of objects), then the other shapes. */
    assert_int_equal(
        decode_s(f,
                 "{\"eventName\":\"PutKeyPolicy\",\"resources\":[{\"accountId\":\"111122223333\","
                 "\"type\":\"AWS::KMS::Key\",\"ARN\":\"arn:aws:kms:us-west-2:111122223333:key/"
                 "1234abcd\"},{\"accountId\":\"444455556666\",\"type\":\"AWS::KMS::Alias\"}],"
                 "\"tags\":[\"a\",\"b\"],\"m\":[[1,2],[3,[true]]],"
                 "\"o\":[{\"k\":\"x\",\"n\":{\"d\":1}},{\"k\":null}],"
                 "\"empty\":[],\"eo\":{},\"last\":\"z\"}",
                 &why),
        0);
    assert_string_equal(dump(&f->ev),
                        "eventName=PutKeyPolicy\n"
                        "resources.accountId=111122223333\n"
                        "resources.type=AWS::KMS::Key\n"
                        "resources.ARN=arn:aws:kms:us-west-2:111122223333:key/1234abcd\n"
                        "resources.accountId=444455556666\n"
                        "resources.type=AWS::KMS::Alias\n"
                        "tags=a\n"
                        "tags=b\n"
                        "m(num)=1\n"
                        "m(num)=2\n"
                        "m(num)=3\n"
                        "m(bool)=true\n"
                        "o.k=x\n"
                        "o.n.d(num)=1\n"
                        "o.k(null)=\n"
                        "last=z\n");
    /* Every element is reachable by name, in document order. */
    const kx_field *t = kx_event_get(&f->ev, "resources.type");
    assert_string_equal(t->value, "AWS::KMS::Key");
    t = kx_event_next(&f->ev, "resources.type", t);
    assert_string_equal(t->value, "AWS::KMS::Alias");
    assert_null(kx_event_next(&f->ev, "resources.type", t));
    /* No time field: the fallback time, flagged as not from the log. */
    assert_false(f->ev.time_from_log);
    assert_int_equal(f->ev.time_ms, 1000);
}

static void test_scalars(void **state)
{
    fx *f = *state;
    const char *why;
    kx_metrics_reset();
    assert_int_equal(decode_s(f,
                              "{\"i\":42,\"neg\":-7,\"max\":9223372036854775807,"
                              "\"min\":-9223372036854775808,\"zero\":0,\"negzero\":-0,"
                              "\"r\":1.5,\"tenth\":0.1,\"sum\":0.30000000000000004,"
                              "\"third\":0.3333333333333333,\"whole\":2.0,\"exp\":1e3,"
                              "\"Exp\":1E+02,\"trail\":12.50,"
                              "\"small\":1.5e-7,\"huge\":1.7976931348623157e308,"
                              "\"t\":true,\"f\":false,\"n\":null,"
                              "\"s\":\"q\\\"b\\\\s\\u00e9\\n\\ud83d\\ude00\",\"e\":\"\","
                              "\"dup\":1,\"dup\":\"last\"}",
                              &why),
                     0);
    /* Numbers keep their text exactly as written. */
    assert_string_equal(dump(&f->ev), "i(num)=42\n"
                                      "neg(num)=-7\n"
                                      "max(num)=9223372036854775807\n"
                                      "min(num)=-9223372036854775808\n"
                                      "zero(num)=0\n"
                                      "negzero(num)=-0\n"
                                      "r(num)=1.5\n"
                                      "tenth(num)=0.1\n"
                                      "sum(num)=0.30000000000000004\n"
                                      "third(num)=0.3333333333333333\n"
                                      "whole(num)=2.0\n"
                                      "exp(num)=1e3\n"
                                      "Exp(num)=1E+02\n"
                                      "trail(num)=12.50\n"
                                      "small(num)=1.5e-7\n"
                                      "huge(num)=1.7976931348623157e308\n"
                                      "t(bool)=true\n"
                                      "f(bool)=false\n"
                                      "n(null)=\n"
                                      "s=q\"b\\s\xc3\xa9\n\xf0\x9f\x98\x80\n"
                                      "e=\n"
                                      "dup(num)=1\n"
                                      "dup=last\n");
    assert_int_equal(f->ev.nfields, 23);
    assert_int_equal(f->ev.limits, 0);
    /* A repeated key: a field per occurrence, in document order (like an array). */
    assert_int_equal(decode_s(f, "{\"a\":1,\"b\":2,\"a\":{\"x\":3}}", &why), 0);
    assert_string_equal(dump(&f->ev), "a(num)=1\nb(num)=2\na.x(num)=3\n");
    assert_int_equal(kx_metric_get(KX_M_LIMIT_NUMBER), 0);
}

/* Numbers beyond int64 (integers) or double (reals) keep their text; the event says so. */
static void test_big_numbers(void **state)
{
    fx *f = *state;
    const char *why;
    kx_metrics_reset();
    assert_int_equal(decode_s(f,
                              "{\"u64\":18446744073709551616,\"neg\":-9223372036854775809,"
                              "\"long\":123456789012345678901234567890,\"user\":\"root\"}",
                              &why),
                     0);
    assert_string_equal(dump(&f->ev), "u64(num)=18446744073709551616\n"
                                      "neg(num)=-9223372036854775809\n"
                                      "long(num)=123456789012345678901234567890\n"
                                      "user=root\n");
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_NUMBER);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_NUMBER), 1);
    /* Reals: only an overflowing one is flagged (underflow to 0 is not). */
    assert_int_equal(decode_s(f, "{\"a\":1e308,\"b\":1e-400,\"c\":0.0001e310,\"d\":0e999}", &why),
                     0);
    assert_string_equal(dump(&f->ev), "a(num)=1e308\nb(num)=1e-400\nc(num)=0.0001e310\n"
                                      "d(num)=0e999\n");
    assert_int_equal(f->ev.limits, 0);
    assert_int_equal(decode_s(f, "{\"a\":-1e309}", &why), 0);
    assert_string_equal(dump(&f->ev), "a(num)=-1e309\n");
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_NUMBER);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_NUMBER), 2);
    kx_metrics_reset();
}

/* Every escape RFC 8259 has, in values and keys; plain and escaped stretches mixed. */
static void test_escapes(void **state)
{
    fx *f = *state;
    const char *why;
    assert_int_equal(
        decode_s(f,
                 "{\"bs\":\"a\\\\b\",\"sl\":\"a\\/b\",\"A\":\"\\u0041\",\"q\":\"\\\"\","
                 "\"ctl\":\"\\b\\f\\n\\r\\t\",\"u\":\"\\u00e9\\u00E9\\u20ac\","
                 "\"pair\":\"x\\ud83d\\ude00y\\uD834\\uDD1E\",\"ascii\":\"\\u007f\","
                 "\"k\\u0041y\":1,\"k\\/\\\"\":2,\"mixed\":\"caf\xc3\xa9 \\u2192 ok\"}",
                 &why),
        0);
    assert_string_equal(dump(&f->ev), "bs=a\\b\n"
                                      "sl=a/b\n"
                                      "A=A\n"
                                      "q=\"\n"
                                      "ctl=\b\f\n\r\t\n"
                                      "u=\xc3\xa9\xc3\xa9\xe2\x82\xac\n"
                                      "pair=x\xf0\x9f\x98\x80y\xf0\x9d\x84\x9e\n"
                                      "ascii=\x7f\n"
                                      "kAy(num)=1\n"
                                      "k/\"(num)=2\n"
                                      "mixed=caf\xc3\xa9 \xe2\x86\x92 ok\n");
    assert_int_equal(f->ev.limits, 0);
}

static void expect_malformed(fx *f, const char *raw, size_t len, const char *reason)
{
    const char *why = NULL;
    assert_int_equal(decode(f, raw, len, &why), -EINVAL);
    assert_non_null(why);
    assert_string_equal(why, reason);
    /* Even a rejected event is safe to route: the tenant is set. */
    assert_string_equal(f->ev.tenant, "default");
}

#define MALFORMED(f, lit, reason) expect_malformed(f, lit, sizeof(lit) - 1, reason)

/* Decodes exactly len bytes from a heap copy of that size, so that ASan sees any read past
 * the end of the input. */
static int decode_exact(fx *f, const char *raw, size_t len, const char **why)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, raw, len);
    int rc = decode(f, copy, len, why);
    if (rc == 0)
        dump(&f->ev); /* fields point into the arena, never into copy */
    free(copy);
    return rc;
}

/* The scanner tests eight string bytes at a time: every kind of byte, at every position in
 * and across those words, and strings ending near the end of the input. */
static void test_string_positions(void **state)
{
    fx *f = *state;
    static const struct {
        const char *in, *out; /* out NULL: bad JSON */
    } kinds[] = {
        {"!", "!"},
        {" ", " "},
        {"~", "~"},
        {"\x7f", "\x7f"},
        {"\xc3\xa9", "\xc3\xa9"},
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
        {"\x80", "\xef\xbf\xbd"},
        {"\xff", "\xef\xbf\xbd"},
        {"\\n", "\n"},
        {"\\\\", "\\"},
        {"\\\"", "\""},
        {"\\u0041", "A"},
        {"\x1f", NULL},
        {"\x01", NULL},
        {"\"", NULL}, /* the string ends there: "yz" after it is not JSON */
    };
    char raw[128], want[128];
    const char *why;
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        for (int pre = 0; pre <= 17; pre++) {
            /* as a value */
            int n = snprintf(raw, sizeof(raw), "{\"a\":\"%.*s%syz\"}", pre, "abcdefghijklmnopq",
                             kinds[k].in);
            int rc = decode_exact(f, raw, (size_t)n, &why);
            if (!kinds[k].out) {
                if (rc != -EINVAL || strcmp(why, "bad JSON"))
                    fail_msg("value, kind %zu, %d before: rc %d", k, pre, rc);
                continue;
            }
            snprintf(want, sizeof(want), "a=%.*s%syz\n", pre, "abcdefghijklmnopq", kinds[k].out);
            if (rc != 0 || strcmp(dumpbuf, want))
                fail_msg("value, kind %zu, %d before: rc %d, got %s", k, pre, rc, dumpbuf);
            /* as a key */
            n = snprintf(raw, sizeof(raw), "{\"%.*s%syz\":1}", pre, "abcdefghijklmnopq",
                         kinds[k].in);
            rc = decode_exact(f, raw, (size_t)n, &why);
            snprintf(want, sizeof(want), "%.*s%syz(num)=1\n", pre, "abcdefghijklmnopq",
                     kinds[k].out);
            if (rc != 0 || strcmp(dumpbuf, want))
                fail_msg("key, kind %zu, %d before: rc %d, got %s", k, pre, rc, dumpbuf);
        }
    }
    /* A string cut off by the end of the input, at every length: never read past it. */
    for (int len = 6; len <= 30; len++) {
        memcpy(raw, "{\"a\":\"abcdefghijklmnopqrstuvwxyz", 32);
        assert_int_equal(decode_exact(f, raw, (size_t)len, &why), -EINVAL);
        assert_string_equal(why, "bad JSON");
        /* and cut right after a backslash or inside a \u escape */
        memcpy(raw + len - 1, "\\u00", 4);
        for (int cut = 1; cut <= 4; cut++)
            assert_int_equal(decode_exact(f, raw, (size_t)(len - 1 + cut), &why), -EINVAL);
    }
}

static void test_malformed(void **state)
{
    fx *f = *state;
    MALFORMED(f, "", "empty");
    MALFORMED(f, "   \n", "bad JSON");
    MALFORMED(f, "{\"a\":", "bad JSON");
    MALFORMED(f, "{\"a\":1} x", "bad JSON");
    MALFORMED(f, "{\"a\":1}}", "bad JSON");
    MALFORMED(f, "{\"a\":1}{}", "bad JSON");
    MALFORMED(f, "{'a':1}", "bad JSON");
    MALFORMED(f, "{a:1}", "bad JSON");
    MALFORMED(f, "{\"a\" 1}", "bad JSON");
    MALFORMED(f, "{\"a\":1,}", "bad JSON");
    MALFORMED(f, "{,}", "bad JSON");
    MALFORMED(f, "{\"a\":[1,]}", "bad JSON");
    MALFORMED(f, "{\"a\":[1 2]}", "bad JSON");
    MALFORMED(f, "{\"a\":[}", "bad JSON");
    MALFORMED(f, "{\"a\":{]}", "bad JSON");
    MALFORMED(f, "[1,2", "bad JSON");
    MALFORMED(f, "[1,2]", "not a JSON object");
    MALFORMED(f, "\"str\"", "not a JSON object");
    MALFORMED(f, "42", "not a JSON object");
    MALFORMED(f, "null", "not a JSON object");
    /* tokens */
    MALFORMED(f, "{\"a\":tru}", "bad JSON");
    MALFORMED(f, "{\"a\":True}", "bad JSON");
    MALFORMED(f, "{\"a\":nul}", "bad JSON");
    MALFORMED(f, "{\"a\":truex}", "bad JSON");
    MALFORMED(f, "{\"a\":NaN}", "bad JSON");
    MALFORMED(f, "{\"a\":Infinity}", "bad JSON");
    /* numbers */
    MALFORMED(f, "{\"a\":01}", "bad JSON");
    MALFORMED(f, "{\"a\":-01}", "bad JSON");
    MALFORMED(f, "{\"a\":1.}", "bad JSON");
    MALFORMED(f, "{\"a\":.5}", "bad JSON");
    MALFORMED(f, "{\"a\":-}", "bad JSON");
    MALFORMED(f, "{\"a\":+1}", "bad JSON");
    MALFORMED(f, "{\"a\":1e}", "bad JSON");
    MALFORMED(f, "{\"a\":1e+}", "bad JSON");
    MALFORMED(f, "{\"a\":0x1F}", "bad JSON");
    MALFORMED(f, "{\"a\":1x}", "bad JSON");
    MALFORMED(f, "{\"a\":1", "bad JSON");
    /* strings */
    MALFORMED(f, "{\"a\":\"x\0y\"}", "bad JSON"); /* a raw NUL byte: a control character */
    MALFORMED(f, "{\"a\":\"x\ty\"}", "bad JSON"); /* a raw tab */
    MALFORMED(f, "{\"a\x1f\":1}", "bad JSON");    /* in a key too */
    MALFORMED(f, "{\"a\":\"\\x\"}", "bad JSON");
    MALFORMED(f, "{\"a\":\"\\u12\"}", "bad JSON");
    MALFORMED(f, "{\"a\":\"\\u12g4\"}", "bad JSON");
    MALFORMED(f, "{\"a\":\"\\ud800\\uZZZZ\"}", "bad JSON");
    MALFORMED(f, "{\"a\":\"abc", "bad JSON");
    MALFORMED(f, "{\"a\":\"abc\\", "bad JSON");
    MALFORMED(f, "{\"a\":\"abc\\\"}", "bad JSON");
    /* bytes outside strings: only the four whitespace characters, never invalid UTF-8 */
    MALFORMED(f, "{\"a\":1}\xff", "bad JSON");
    MALFORMED(f, "\xef\xbb\xbf{\"a\":1}", "bad JSON");
    MALFORMED(f, "{\"a\":\v1}", "bad JSON");
    /* still valid: every whitespace character, around everything */
    const char *why;
    assert_int_equal(decode_s(f, " \t\r\n{ \"a\" \n:\t[ 1 , { \"b\" : null } ] }\r\n ", &why), 0);
    assert_string_equal(dump(&f->ev), "a(num)=1\na.b(null)=\n");
}

/* Invalid UTF-8 and "\u0000" must not hide an event from the rules: the event is decoded
 * with U+FFFD in their place and counted as sanitized. */
static void test_sanitized(void **state)
{
    fx *f = *state;
    const char *why = NULL;
    kx_metrics_reset();
    static const char in[] = "{\"ua\":\"curl\\u0000evil\",\"user\":\"\xff\xfe root\","
                             "\"\xe9t\xe9\":1,\"esc\":\"a\\\\u0000b\",\"s\":\"\xed\xa0\x80\"}";
    assert_int_equal(decode(f, in, sizeof(in) - 1, &why), 0);
    assert_string_equal(dump(&f->ev), "ua=curl\xef\xbf\xbd"
                                      "evil\n"
                                      "user=\xef\xbf\xbd\xef\xbf\xbd root\n"
                                      "\xef\xbf\xbdt\xef\xbf\xbd(num)=1\n"
                                      "esc=a\\u0000b\n"
                                      "s=\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\n");
    assert_int_equal(kx_metric_get(KX_M_EVENTS_SANITIZED), 1);
    /* NUL in a key, lone surrogate escapes (Python's surrogateescape); a valid pair stays */
    static const char keys[] = "{\"a\\u0000b\":1,\"s\":\"x\\ud800y\\udc80\","
                               "\"pair\":\"\\ud83d\\ude00\"}";
    assert_int_equal(decode(f, keys, sizeof(keys) - 1, &why), 0);
    assert_string_equal(dump(&f->ev), "a\xef\xbf\xbd"
                                      "b(num)=1\n"
                                      "s=x\xef\xbf\xbdy\xef\xbf\xbd\n"
                                      "pair=\xf0\x9f\x98\x80\n");
    assert_int_equal(kx_metric_get(KX_M_EVENTS_SANITIZED), 2);
    /* a raw NUL byte is still a control character inside a string: bad JSON */
    static const char raw_nul[] = "{\"a\":\"x\0y\"}";
    assert_int_equal(decode(f, raw_nul, sizeof(raw_nul) - 1, &why), -EINVAL);
    assert_string_equal(why, "bad JSON");
    kx_metrics_reset();
}

static void test_garbage_10mb(void **state)
{
    fx *f = *state;
    const char *why;
    const size_t n = 10u << 20;
    char *buf = malloc(n);
    uint32_t x = 12345;
    assert_non_null(buf);
    /* Deterministic binary noise (an LCG), opened like an object so the scanner must lex it. */
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (char)(x >> 24);
    }
    memcpy(buf, "{\"a\":", 5);
    expect_malformed(f, buf, n, "bad JSON");
    /* A 10 MB string that never closes. */
    memset(buf, 'A', n);
    memcpy(buf, "{\"a\":", 5);
    buf[5] = '"';
    expect_malformed(f, buf, n, "bad JSON");
    /* 10 MB of '[' never closes: malformed, and the explicit stack keeps the C stack out. */
    memset(buf, '[', n);
    expect_malformed(f, buf, n, "bad JSON");
    /* 5 M levels that do close are valid JSON: one field holds the raw text past level 64. */
    const size_t levels = (n - 8) / 2;
    memcpy(buf, "{\"a\":", 5);
    memset(buf + 5, '[', levels);
    memset(buf + 5 + levels, ']', levels);
    buf[5 + 2 * levels] = '}';
    assert_int_equal(decode(f, buf, 6 + 2 * levels, &why), 0);
    assert_int_equal(f->ev.nfields, 1);
    assert_string_equal(f->ev.fields[0].name, "a");
    /* The object is level 1, 63 arrays flatten, the 64th array on is kept as text. */
    assert_int_equal(f->ev.fields[0].value_len, 2 * (levels - 63));
    assert_memory_equal(f->ev.fields[0].value, buf + 5 + 63, 2 * (levels - 63));
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_DEPTH);
    free(buf);
}

/* {"a":{"a":...{"a":1}...}} with `levels` objects in all. */
static char *nested(int levels, const char *open, const char *close)
{
    size_t n = (size_t)levels * (strlen(open) + strlen(close)) + 8;
    char *s = malloc(n);
    size_t off = 0;
    assert_non_null(s);
    for (int i = 0; i < levels; i++)
        off += (size_t)snprintf(s + off, n - off, "%s", open);
    off += (size_t)snprintf(s + off, n - off, "1");
    for (int i = 0; i < levels; i++)
        off += (size_t)snprintf(s + off, n - off, "%s", close);
    return s;
}

/* "a.a.....a" with `parts` parts. */
static const char *a_name(int parts)
{
    static char name[4096];
    name[0] = '\0';
    for (int i = 0; i < parts; i++)
        strcat(name, i ? ".a" : "a");
    return name;
}

static void test_depth(void **state)
{
    fx *f = *state;
    const char *why;
    kx_metrics_reset();
    /* 40 and 64 nested objects are flattened: one field named a.a.....a. */
    static const int ok_levels[] = {40, 64};
    for (size_t k = 0; k < 2; k++) {
        char *s = nested(ok_levels[k], "{\"a\":", "}");
        assert_int_equal(decode_s(f, s, &why), 0);
        assert_int_equal(f->ev.nfields, 1);
        assert_string_equal(f->ev.fields[0].name, a_name(ok_levels[k]));
        assert_string_equal(f->ev.fields[0].value, "1");
        assert_int_equal(f->ev.limits, 0);
        free(s);
    }
    assert_int_equal(kx_metric_get(KX_M_LIMIT_DEPTH), 0);
    /* 65: the 65th object is one field, its raw text, under the name reached at level 64. */
    char *s = nested(65, "{\"a\":", "}");
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.nfields, 1);
    assert_string_equal(f->ev.fields[0].name, a_name(64));
    assert_string_equal(f->ev.fields[0].value, "{\"a\":1}");
    assert_int_equal(f->ev.fields[0].type, KX_VAL_STR);
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_DEPTH);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_DEPTH), 1);
    free(s);
    /* 10,000 levels: the same, the raw text holding the 9,936 levels past the limit; the
     * fields around the deep one are all there. */
    s = nested(10000, "{\"a\":", "}");
    char *doc = malloc(strlen(s) + 64);
    sprintf(doc, "{\"before\":1,\"deep\":%s,\"after\":\"x\"}", s);
    assert_int_equal(decode_s(f, doc, &why), 0);
    assert_int_equal(f->ev.nfields, 3);
    assert_string_equal(f->ev.fields[0].name, "before");
    char want[1024];
    snprintf(want, sizeof(want), "deep.%s", a_name(63));
    assert_string_equal(f->ev.fields[1].name, want);
    /* Level 1 is the outer object, s's first object level 2: its 64th is level 65 and the
     * raw text runs to that object's close, before the 63 closes of the levels above. */
    assert_int_equal(f->ev.fields[1].value_len, strlen(s) - 63 * 5 - 63);
    assert_memory_equal(f->ev.fields[1].value, s + 63 * 5, strlen(s) - 63 * 5 - 63);
    assert_string_equal(f->ev.fields[2].name, "after");
    assert_string_equal(f->ev.fields[2].value, "x");
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_DEPTH);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_DEPTH), 2);
    free(doc);
    free(s);
    /* Arrays count as levels too: the outer object plus 63 arrays is 64. */
    s = nested(63, "[", "]");
    doc = malloc(strlen(s) + 16);
    sprintf(doc, "{\"a\":%s}", s);
    assert_int_equal(decode_s(f, doc, &why), 0);
    assert_string_equal(dump(&f->ev), "a(num)=1\n");
    free(doc);
    free(s);
    s = nested(64, "[", "]");
    doc = malloc(strlen(s) + 16);
    sprintf(doc, "{\"a\":%s}", s);
    assert_int_equal(decode_s(f, doc, &why), 0);
    assert_string_equal(dump(&f->ev), "a=[1]\n");
    free(doc);
    free(s);
    /* Past the limit: each subtree is one field, empty ones too, with the text as written
     * (escapes kept: it is JSON) but invalid UTF-8 as U+FFFD; scalars at the limit are
     * ordinary fields. 63 objects, then an array at level 64 whose elements are level 65. */
    s = nested(63, "{\"a\":", "}");
    *strchr(s, '1') = '\0';
    doc = malloc(strlen(s) + 256);
    sprintf(doc, "%s[{\"x\":[1, \"\\u0041\"]}, {}, 2, [], [\"\xff\"]]", s);
    for (int i = 0; i < 63; i++)
        strcat(doc, "}");
    assert_int_equal(decode_s(f, doc, &why), 0);
    char expect[4096];
    const char *n63 = a_name(63);
    snprintf(expect, sizeof(expect),
             "%s={\"x\":[1, \"\\u0041\"]}\n%s={}\n%s(num)=2\n%s=[]\n%s=[\"\xef\xbf\xbd\"]\n", n63,
             n63, n63, n63, n63);
    assert_string_equal(dump(&f->ev), expect);
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_DEPTH);
    free(doc);
    free(s);
    kx_metrics_reset();
}

static char *many_fields(int n)
{
    char *s = malloc((size_t)n * 16 + 64);
    size_t off = 0;
    assert_non_null(s);
    s[off++] = '{';
    for (int i = 0; i < n; i++)
        off += (size_t)sprintf(s + off, "%s\"f%d\":%d", i ? "," : "", i, i);
    s[off++] = '}';
    s[off] = '\0';
    return s;
}

static void test_field_cap(void **state)
{
    fx *f = *state;
    const char *why;
    kx_metrics_reset();
    char *s = many_fields(4096);
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.nfields, 4096);
    assert_string_equal(f->ev.fields[4095].name, "f4095");
    assert_string_equal(f->ev.fields[4095].value, "4095");
    assert_int_equal(f->ev.limits, 0);
    free(s);
    /* One more: the first 4096 are kept, the event still decodes. */
    s = many_fields(4097);
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.nfields, 4096);
    assert_string_equal(f->ev.fields[4095].name, "f4095");
    assert_null(kx_event_get(&f->ev, "f4096"));
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_FIELDS);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_FIELDS), 1);
    /* The dropped part is still validated. */
    strcpy(s + strlen(s) - 1, ",\"x\":}");
    expect_malformed(f, s, strlen(s), "bad JSON");
    free(s);
    /* An array's elements count one each. */
    s = malloc(4097 * 2 + 16);
    strcpy(s, "{\"a\":[");
    for (int i = 0; i < 4097; i++)
        strcat(s, i ? ",1" : "1");
    strcat(s, "]}");
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.nfields, 4096);
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_FIELDS);
    free(s);
    kx_metrics_reset();
}

static void test_long_name(void **state)
{
    fx *f = *state;
    const char *why;
    char *s = malloc(8192);
    kx_metrics_reset();
    /* 1023 bytes is the longest name (the buffer keeps one byte spare). */
    strcpy(s, "{\"");
    memset(s + 2, 'k', 1023);
    strcpy(s + 2 + 1023, "\":1}");
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.fields[0].name_len, 1023);
    assert_int_equal(f->ev.limits, 0);
    /* 1,024 and 5,000 bytes: that member (and all under it) is dropped, every other field
     * is kept. Cutting the name instead could forge another field's name. */
    static const size_t lens[] = {1024, 5000};
    for (size_t k = 0; k < 2; k++) {
        strcpy(s, "{\"before\":1,\"");
        size_t off = strlen(s);
        memset(s + off, 'k', lens[k]);
        strcpy(s + off + lens[k], "\":{\"x\":1,\"y\":[2,{\"z\":3}]},\"after\":\"b\"}");
        assert_int_equal(decode_s(f, s, &why), 0);
        assert_string_equal(dump(&f->ev), "before(num)=1\nafter=b\n");
        assert_int_equal(f->ev.limits, KX_EV_LIMIT_KEY);
        assert_int_equal(kx_metric_get(KX_M_LIMIT_KEY), k + 1);
    }
    /* The flattened name counts: "a." + 1021 bytes is 1023, "a." + 1022 is too long. */
    strcpy(s, "{\"a\":{\"");
    memset(s + 7, 'k', 1021);
    strcpy(s + 7 + 1021, "\":1,\"b\":2}}");
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.nfields, 2);
    assert_int_equal(f->ev.fields[0].name_len, 1023);
    assert_string_equal(f->ev.fields[1].name, "a.b");
    assert_int_equal(f->ev.limits, 0);
    memset(s + 7, 'k', 1022);
    strcpy(s + 7 + 1022, "\":1,\"b\":2}}");
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_string_equal(dump(&f->ev), "a.b(num)=2\n");
    assert_int_equal(f->ev.limits, KX_EV_LIMIT_KEY);
    /* An escaped key counts its decoded length: 1023 "\u0041" escapes are 1023 bytes. */
    strcpy(s, "{\"");
    for (int i = 0; i < 1023; i++)
        strcat(s, "\\u0041");
    strcat(s, "\":1}");
    assert_int_equal(decode_s(f, s, &why), 0);
    assert_int_equal(f->ev.fields[0].name_len, 1023);
    assert_int_equal(f->ev.limits, 0);
    free(s);
    kx_metrics_reset();
}

/* The decoder and the event are reused across events: nothing leaks from one to the next. */
static void test_reuse(void **state)
{
    fx *f = *state;
    const char *why;
    for (int i = 0; i < 1000; i++) {
        char doc[64];
        snprintf(doc, sizeof(doc), "{\"n\":%d,\"s\":\"v%d\"}", i, i);
        assert_int_equal(decode_s(f, doc, &why), 0);
        assert_int_equal(f->ev.nfields, 2);
        char want[64];
        snprintf(want, sizeof(want), "n(num)=%d\ns=v%d\n", i, i);
        assert_string_equal(dump(&f->ev), want);
        if (i % 7 == 0)
            MALFORMED(f, "{", "bad JSON");
    }
}

/* Rules for test_rules_still_match: a big integer matched as text and as a number. */
static const char big_rules[] =
    "title: Transfer of exactly 2^64 bytes\n"
    "id: 5b0c0e3a-0000-4000-8000-000000000001\n"
    "logsource: {product: aws, service: cloudtrail}\n"
    "detection:\n"
    "  sel:\n"
    "    additionalEventData.bytesTransferredOut: '18446744073709551616'\n"
    "  condition: sel\n"
    "level: low\n"
    "---\n"
    "title: Transfer beyond 1e19 bytes\n"
    "id: 5b0c0e3a-0000-4000-8000-000000000002\n"
    "logsource: {product: aws, service: cloudtrail}\n"
    "detection:\n"
    "  sel:\n"
    "    additionalEventData.bytesTransferredOut|gt: 1e19\n"
    "  condition: sel\n"
    "level: low\n";

static void on_rule(kx_rule *rule, void *ud)
{
    char *ids = ud;
    strcat(ids, rule->id);
    strcat(ids, "\n");
}

/* An attacker who controls one field of a CloudTrail record (here requestParameters and
 * additionalEventData, where they put a huge number, a deeply nested value and an absurdly
 * long key) must not keep the record's other fields from raising the alert: decode, then
 * the rules, as the pipeline does. */
static void test_rules_still_match(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("json_rules");
    char big_path[512];
    snprintf(big_path, sizeof(big_path), "%s/big.yml", dir);
    assert_int_equal(kx_test_write_file(big_path, big_rules), 0);
    const char *paths[] = {KX_SOURCE_DIR "/tests/fixtures/rules/aws_iam_admin_policy.yml",
                           big_path};
    kx_ruleset *rs = NULL;
    kx_err err;
    assert_int_equal(kx_ruleset_load(paths, 2, &rs, &err), 0);

    static const char input[] = "input: {logsource: {product: aws, service: cloudtrail}}\n";
    kx_yaml_doc *doc = NULL;
    assert_int_equal(kx_yaml_load_mem("in.yaml", input, strlen(input), &doc, &err), 0);
    kx_decoder *d = NULL;
    assert_int_equal(
        kx_decoder_create(kx_yaml_get(doc->root, "input"), NULL, -1, "in.yaml", &d, &err), 0);
    kx_yaml_free(doc);

    /* The record: hostile values first, the fields the rule reads after them. */
    size_t cap = 64 * 1024, off = 0;
    char *ev_text = malloc(cap);
    assert_non_null(ev_text);
    off += (size_t)snprintf(ev_text, cap,
                            "{\"eventVersion\":\"1.08\",\"additionalEventData\":"
                            "{\"bytesTransferredOut\":18446744073709551616},"
                            "\"requestParameters\":{\"userName\":\"Bob\",\"");
    memset(ev_text + off, 'k', 5000);
    off += 5000;
    off += (size_t)snprintf(ev_text + off, cap - off, "\":\"x\",\"tags\":");
    for (int i = 0; i < 100; i++)
        ev_text[off++] = '[';
    off += (size_t)snprintf(ev_text + off, cap - off, "\"deep\"");
    for (int i = 0; i < 100; i++)
        ev_text[off++] = ']';
    off += (size_t)snprintf(ev_text + off, cap - off,
                            ",\"policyArn\":\"arn:aws:iam::aws:policy/AdministratorAccess\"},"
                            "\"eventSource\":\"iam.amazonaws.com\","
                            "\"eventName\":\"AttachUserPolicy\"}");
    assert_true(off < cap);

    kx_event ev;
    const char *why;
    kx_event_init(&ev);
    assert_int_equal(kx_decode(d, ev_text, off, 1000, &ev, &why), 0);
    assert_int_equal(ev.limits, KX_EV_LIMIT_DEPTH | KX_EV_LIMIT_KEY | KX_EV_LIMIT_NUMBER);
    /* requestParameters.tags: the outer object, requestParameters, then 62 arrays flatten;
     * the other 38 are one field of raw text. */
    const kx_field *t = kx_event_get(&ev, "requestParameters.tags");
    assert_non_null(t);
    assert_int_equal(t->value_len, 38 * 2 + 6);
    assert_memory_equal(t->value, "[[[", 3);
    char ids[512] = "";
    assert_int_equal(kx_ruleset_match(rs, &ev, on_rule, ids), 3);
    assert_string_equal(ids, "7c3a1d9e-4b2f-4a6c-8e5d-1f2a3b4c5d03\n"
                             "5b0c0e3a-0000-4000-8000-000000000001\n"
                             "5b0c0e3a-0000-4000-8000-000000000002\n");

    kx_event_fini(&ev);
    free(ev_text);
    kx_decoder_destroy(d);
    kx_ruleset_destroy(rs);
    kx_test_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cloudtrail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arrays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_string_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sanitized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_10mb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_field_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test(test_rules_still_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
