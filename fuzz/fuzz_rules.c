/*
 * fuzz_rules: the rule loader. The input is one rule file (YAML, possibly several documents:
 * detections and the correlations that reference them). When it loads, every detection is
 * matched against a few fixed events, so the compiled values, modifiers and conditions run,
 * not only their parser; correlation conditions are evaluated too.
 *
 * Matching is differential: the prefilter and the scan memo promise the same matches as
 * plain evaluation (klaxon/detect.h), so each event is matched with both on (twice, the
 * second time from a warm memo), with the memo off, and with the prefilter off, and any
 * difference in which rules matched, or in what order, aborts.
 *
 * kx_ruleset_load reads paths, so the input goes through an in-memory file (harness.h).
 * Time zones a timeofday rule loads are dropped after each input (the cache is bounded).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "klaxon/detect.h"
#include "klaxon/tz.h"

typedef struct field_def {
    const char *name, *value;
    kx_val_type type;
} field_def;

/* An sshd failure, a CloudTrail IAM call and a Windows process creation: the logsources the
 * shipped rules and most Sigma rules name, with strings, numbers, booleans, null, repeated
 * fields, IPs, paths with backslashes and base64 for the modifiers to work on. */
static const field_def sshd_fields[] = {
    {"program", "sshd", KX_VAL_STR},
    {"host", "web-1", KX_VAL_STR},
    {"message", "Failed password for invalid user admin from 203.0.113.7 port 52113 ssh2",
     KX_VAL_STR},
    {"outcome", "Failed", KX_VAL_STR},
    {"user", "admin", KX_VAL_STR},
    {"src_ip", "203.0.113.7", KX_VAL_STR},
    {"src_port", "52113", KX_VAL_NUM},
    {NULL, NULL, KX_VAL_STR},
};
static const field_def aws_fields[] = {
    {"eventSource", "iam.amazonaws.com", KX_VAL_STR},
    {"eventName", "AttachUserPolicy", KX_VAL_STR},
    {"requestParameters.policyArn", "arn:aws:iam::aws:policy/AdministratorAccess", KX_VAL_STR},
    {"userIdentity.arn", "arn:aws:iam::123456789012:user/alice", KX_VAL_STR},
    {"sourceIPAddress", "2001:db8::1", KX_VAL_STR},
    {"resources.ARN", "arn:aws:iam::123456789012:user/bob", KX_VAL_STR},
    {"resources.ARN", "arn:aws:iam::aws:policy/AdministratorAccess", KX_VAL_STR},
    {"readOnly", "false", KX_VAL_BOOL},
    {"errorCode", "", KX_VAL_NULL},
    {"requestParameters.durationSeconds", "3600.5", KX_VAL_NUM},
    {NULL, NULL, KX_VAL_STR},
};
static const field_def win_fields[] = {
    {"EventID", "4688", KX_VAL_NUM},
    {"Image", "C:\\Windows\\System32\\cmd.exe", KX_VAL_STR},
    {"ParentImage", "C:\\Program Files\\Microsoft Office\\WINWORD.EXE", KX_VAL_STR},
    {"CommandLine", "cmd.exe /c whoami & powershell -enc SQBFAFgAIAAoAE4AZQB3AA==", KX_VAL_STR},
    {"User", "CORP\\alice", KX_VAL_STR},
    {"IntegrityLevel", "High", KX_VAL_STR},
    {"Hashes", "SHA256=9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
     KX_VAL_STR},
    {"Data", "\xc3\xa9t\xc3\xa9 caf\xc3\xa9", KX_VAL_STR},
    /* A non-ASCII value and an empty one in fields that also hold ASCII: the scan counts
     * every regex atom of such a field as hit (byte mode cannot answer them). */
    {"CommandLine",
     "\xe2\x80\x93"
     "enc caf\xc3\xa9 whoami",
     KX_VAL_STR},
    {"User", "", KX_VAL_STR},
    {NULL, NULL, KX_VAL_STR},
};

static struct {
    const field_def *fields;
    const char *product, *service, *category;
    int64_t time_ms;
} const event_defs[] = {
    {sshd_fields, "linux", "sshd", NULL, 1774747800000LL},    /* Sun 2026-03-29 01:30Z */
    {aws_fields, "aws", "cloudtrail", NULL, 1774951200000LL}, /* Tue 2026-03-31 10:00Z */
    {win_fields, "windows", NULL, "process_creation", 1775001599999LL},
};

static kx_event events[KX_ARRAY_LEN(event_defs)];
static kx_fuzz_file file;

static void cleanup(void)
{
    for (size_t i = 0; i < KX_ARRAY_LEN(events); i++)
        kx_event_fini(&events[i]);
    kx_fuzz_file_fini(&file);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kx_log_set_level(KX_LOG_ERROR);
    kx_fuzz_file_init(&file);
    for (size_t i = 0; i < KX_ARRAY_LEN(events); i++) {
        kx_event *ev = &events[i];
        kx_event_init(ev);
        for (const field_def *f = event_defs[i].fields; f->name; f++)
            if (kx_event_add(ev, f->name, strlen(f->name), f->value, strlen(f->value), f->type))
                abort();
        ev->tenant = "default";
        ev->product = event_defs[i].product;
        ev->service = event_defs[i].service;
        ev->category = event_defs[i].category;
        ev->time_ms = event_defs[i].time_ms;
        ev->time_from_log = true;
    }
    atexit(cleanup);
    return 0;
}

/* Which rules matched, in order: a count and a hash of the sequence of rule indexes. */
typedef struct hits {
    size_t n;
    uint64_t hash;
} hits;

static void on_match(kx_rule *r, void *ud)
{
    hits *h = ud;
    h->n++;
    h->hash = kx_hash64(&r->index, sizeof(r->index), h->hash);
}

static hits match(kx_ruleset *rs, const kx_event *ev, bool prefilter, bool memo)
{
    hits h = {0, 0};
    kx_ruleset_set_prefilter(rs, prefilter);
    kx_ruleset_set_memo(rs, memo);
    size_t n = kx_ruleset_match(rs, ev, on_match, &h);
    if (n != h.n)
        abort(); /* the count returned must be the number of callbacks */
    return h;
}

static void match_all_ways(kx_ruleset *rs, size_t e)
{
    static const struct {
        bool prefilter, memo;
        const char *what;
    } ways[] = {
        {true, true, "prefilter and a warm memo"},
        {true, false, "prefilter without the memo"},
        {false, false, "no prefilter"},
    };
    hits first = match(rs, &events[e], true, true);
    for (size_t w = 0; w < KX_ARRAY_LEN(ways); w++) {
        hits h = match(rs, &events[e], ways[w].prefilter, ways[w].memo);
        if (h.n != first.n || h.hash != first.hash) {
            fprintf(stderr,
                    "fuzz: event %zu: %zu matches with prefilter and a cold memo, %zu with %s\n", e,
                    first.n, h.n, ways[w].what);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *paths[] = {file.path};
    kx_ruleset *rs = NULL;
    kx_err err = {0};
    char msg[1024];

    kx_fuzz_file_set(&file, data, size);
    if (kx_ruleset_load(paths, 1, &rs, &err) != 0) {
        kx_err_format(&err, msg, sizeof(msg));
        if (!msg[0])
            abort(); /* a refused file must say why */
        kx_tz_cache_clear();
        return 0;
    }
    for (size_t i = 0; i < KX_ARRAY_LEN(events); i++)
        match_all_ways(rs, i);
    for (size_t i = 0; i < kx_ruleset_size(rs); i++) {
        const kx_rule *r = kx_ruleset_at(rs, i);
        if (r->kind != KX_RULE_CORRELATION)
            continue;
        kx_cmp_holds(r->cond, r->ncond, 0);
        kx_cmp_holds(r->cond, r->ncond, 5.5);
        for (size_t j = 0; j < r->nrefs; j++)
            if (kx_corr_ref_index(r, r->refs[j]) < 0)
                abort(); /* a correlation must find each of its own references */
    }
    kx_ruleset_destroy(rs);
    kx_tz_cache_clear();
    return 0;
}
