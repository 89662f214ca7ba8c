/*
 * The compiled rule set against the reference interpreter: a differential test.
 *
 * A deterministic generator writes a corpus of Sigma rules mixing every value kind the
 * prefilter treats differently (equals, startswith, endswith, contains, wildcards, |all,
 * |cased, windash, base64, base64offset, utf16, re, cidr, numbers, exists, null, neq,
 * fieldref, keywords, conditions with not / 1 of / all of, logsources) and a stream of
 * events built from the same words with case flips, backslashes, non-ASCII bytes, repeated
 * (array) fields, nulls and numbers. Every event is matched twice, prefilter on (routing,
 * field index, Hyperscan atoms, exact atom hits) and off (the plain interpreter), and the
 * two lists of matching rules must be identical. The corpus is large enough that both modes
 * match often and the prefilter skips most evaluations, which the test also checks, so it
 * cannot pass by matching nothing.
 *
 * KX_DIFF_SEED and KX_DIFF_ROUNDS in the environment run other seeds / more rounds.
 *
 * With a SigmaHQ checkout at $KX_SIGMA_DIR (default /tmp/sigma; CI has none, so the second
 * test is skipped there) the same comparison runs on its rules/ directory as one ruleset,
 * with events built from the compiled set's own atoms (each placed in its field with its
 * anchoring, random case and surroundings), so thousands of real rules are triggered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "detect/detect_set.h"
#include "klaxon/detect.h"
#include "klaxon/event.h"
#include "kx_test.h"

static uint64_t rng;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

#define PICK(a) (a)[rnd((uint32_t)(sizeof(a) / sizeof((a)[0])))]

static const char *const fields[] = {"Image", "CommandLine", "User", "a.b", "Tags", "Other"};
static const char *const words[] = {
    "powershell", "cmd.exe",           "\\Windows\\", "EvIl",     "-enc", "/c",  "x",
    "AbC",        "\xc3\xbcn\xc3\xaf", "a\\b",        "System32", "tmp",  "-",   "\xe2\x80\x93",
    " ",          "Invoke-Expression", "hello",       "bash",     "root", "a.b", "%",
};
/* Words safe inside a regex and a base64 value (no wildcards, no regex syntax). */
static const char *const plain[] = {"powershell", "cmd", "EvIl", "hello", "bash", "root", "x"};

typedef struct buf {
    char s[65536];
    size_t n;
} buf;

static void put(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->n, sizeof(b->s) - b->n, fmt, ap);
    va_end(ap);
    assert_true(k >= 0 && (size_t)k < sizeof(b->s) - b->n);
    b->n += (size_t)k;
}

/* A YAML single-quoted scalar ('' escapes a quote; backslashes are literal in YAML). */
static void put_q(buf *b, const char *s)
{
    put(b, "'");
    for (; *s; s++)
        put(b, *s == '\'' ? "''" : "%c", *s);
    put(b, "'");
}

static void gen_string(char *out, size_t cap, bool wild)
{
    out[0] = '\0';
    int n = 1 + (int)rnd(3);
    for (int i = 0; i < n; i++) {
        if (wild && rnd(5) == 0)
            strncat(out, rnd(2) ? "*" : "?", cap - strlen(out) - 1);
        strncat(out, PICK(words), cap - strlen(out) - 1);
    }
}

static void gen_value_entry(buf *b, const char *field)
{
    char v[256];
    switch (rnd(16)) {
    case 0:
        gen_string(v, sizeof(v), true);
        put(b, "      %s: ", field);
        put_q(b, v);
        break;
    case 1:
    case 2: {
        static const char *const mods[] = {"contains",         "startswith",      "endswith",
                                           "contains|all",     "contains|cased",  "endswith|cased",
                                           "contains|windash", "startswith|cased"};
        put(b, "      %s|%s:\n", field, PICK(mods));
        int n = 1 + (int)rnd(4);
        for (int i = 0; i < n; i++) {
            gen_string(v, sizeof(v), rnd(4) == 0);
            put(b, "        - ");
            put_q(b, v);
            put(b, "\n");
        }
        return;
    }
    case 3: {
        static const char *const enc[] = {"base64|contains", "base64offset|contains",
                                          "wide|base64offset|contains", "utf16le|base64|contains"};
        put(b, "      %s|%s: ", field, PICK(enc));
        put_q(b, PICK(plain));
        break;
    }
    case 4:
        put(b, "      %s|re: '%s.*%s'", field, PICK(plain), PICK(plain));
        break;
    case 5:
        put(b, "      %s|re|i: '^%s'", field, PICK(plain));
        break;
    case 6:
        put(b, "      Ip|cidr: %s", rnd(2) ? "10.0.0.0/8" : "'::1/128'");
        break;
    case 7:
        put(b, "      Num|%s: %d", rnd(2) ? "gt" : "lte", (int)rnd(10));
        break;
    case 8:
        put(b, "      %s|exists: %s", field, rnd(2) ? "true" : "false");
        break;
    case 9:
        put(b, "      %s: null", field);
        break;
    case 10:
        gen_string(v, sizeof(v), false);
        put(b, "      %s|neq: ", field);
        put_q(b, v);
        break;
    case 11:
        put(b, "      %s|fieldref: %s", field, PICK(fields));
        break;
    case 12:
        put(b, "      %s: '*'", field);
        break;
    case 13:
        put(b, "      %s: ''", field);
        break;
    default:
        put(b, "      %s|contains: ", field);
        put_q(b, PICK(words));
        break;
    }
    put(b, "\n");
}

static void gen_rule(buf *b, int id)
{
    static const char *const ls[] = {"    product: windows\n    category: process_creation\n",
                                     "    product: linux\n", "    product: windows\n",
                                     "    service: Sysmon\n", ""};
    put(b, "title: generated %d\nid: gen-%d\nlogsource:\n%s", id, id, PICK(ls));
    if (b->s[b->n - 1] == ':')
        put(b, " {}\n");
    put(b, "detection:\n");
    int nsel = 1 + (int)rnd(3);
    for (int s = 0; s < nsel; s++) {
        if (rnd(8) == 0) {
            put(b, "  sel%d:\n", s);
            int n = 1 + (int)rnd(3);
            for (int i = 0; i < n; i++) {
                char v[256];
                gen_string(v, sizeof(v), rnd(3) == 0);
                put(b, "    - ");
                put_q(b, v);
                put(b, "\n");
            }
            continue;
        }
        put(b, "  sel%d:\n", s);
        int ng = rnd(5) == 0 ? 2 : 1;
        for (int g = 0; g < ng; g++) {
            bool list = ng > 1;
            int nf = 1 + (int)rnd(3);
            for (int f = 0; f < nf; f++) {
                buf one;
                one.n = 0;
                gen_value_entry(&one, fields[(f * 2 + (int)rnd(4)) % 6]);
                /* One map per group: field keys must differ within a map. */
                char *line = one.s + 6;
                if (list)
                    put(b, "    %s %s", f == 0 ? "-" : " ", line);
                else
                    put(b, "    %s", line);
            }
            if (!list)
                break;
        }
    }
    static const char *const conds[] = {"sel0",
                                        "1 of sel*",
                                        "all of sel*",
                                        "sel0 and not sel1",
                                        "sel0 or (sel1 and not sel2)",
                                        "not sel0",
                                        "sel0 and sel1"};
    const char *c = PICK(conds);
    if ((strstr(c, "sel2") && nsel < 3) || (strstr(c, "sel1") && nsel < 2))
        c = "1 of sel*";
    put(b, "  condition: %s\nlevel: low\n---\n", c);
}

static void gen_field_value(char *out, size_t cap)
{
    gen_string(out, cap, false);
    /* Case flips and noise, so case-insensitive and anchored atoms are exercised. */
    for (char *p = out; *p; p++)
        if (rnd(6) == 0 && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            *p ^= 0x20;
    if (rnd(4) == 0) {
        const char *pre = rnd(2) ? "C:\\Windows\\" : "zz ";
        size_t pl = strlen(pre), n = strlen(out);
        if (pl + n < cap) {
            memmove(out + pl, out, n + 1);
            memcpy(out, pre, pl);
        }
    }
    if (rnd(4) == 0)
        strncat(out, rnd(2) ? ".exe" : " -enc", cap - strlen(out) - 1);
}

static void gen_event(kx_event *ev, char *raw, size_t rawcap)
{
    static const char *const prods[] = {"windows", "linux", "WINDOWS", NULL};
    static const char *const cats[] = {"process_creation", NULL, "file_event"};
    static const char *const svcs[] = {"sysmon", NULL};
    kx_event_reset(ev);
    ev->product = PICK(prods);
    ev->category = PICK(cats);
    ev->service = PICK(svcs);
    size_t rn = 0;
    raw[0] = '\0';
    int nf = (int)rnd(8);
    for (int i = 0; i < nf; i++) {
        const char *name = PICK(fields);
        char v[512];
        kx_val_type t = KX_VAL_STR;
        if (rnd(10) == 0) {
            v[0] = '\0';
            t = KX_VAL_NULL;
        } else {
            gen_field_value(v, sizeof(v));
        }
        assert_int_equal(kx_event_add(ev, name, strlen(name), v, strlen(v), t), 0);
        rn += (size_t)snprintf(raw + rn, rawcap - rn, "%s=%s ", name, v);
    }
    if (rnd(3) == 0) {
        static const char *const ips[] = {"10.1.2.3", "::1", "8.8.8.8", "10.0.0", "::2"};
        const char *ip = PICK(ips);
        assert_int_equal(kx_event_add(ev, "Ip", 2, ip, strlen(ip), KX_VAL_STR), 0);
    }
    if (rnd(3) == 0) {
        static const char *const nums[] = {"7", "3", "1e3", "-2", "5.5", "x"};
        const char *n = PICK(nums);
        assert_int_equal(kx_event_add(ev, "Num", 3, n, strlen(n), KX_VAL_NUM), 0);
    }
    /* Base64 of a word, so the encoded atoms hit sometimes. */
    if (rnd(5) == 0) {
        static const char *const b64[] = {"cG93ZXJzaGVsbA==", "aGVsbG8=", "cABvAHcAZQByAHMA",
                                          "YmFzaA=="};
        const char *s = PICK(b64);
        assert_int_equal(kx_event_add(ev, "CommandLine", 11, s, strlen(s), KX_VAL_STR), 0);
    }
    ev->raw = raw;
    ev->raw_len = strlen(raw);
}

typedef struct hits {
    size_t idx[4096];
    size_t n;
} hits;

static void on_match(kx_rule *r, void *ud)
{
    hits *h = ud;
    assert_true(h->n < 4096);
    h->idx[h->n++] = r->index;
}

static void test_differential(void **state)
{
    (void)state;
    const char *seed_env = getenv("KX_DIFF_SEED");
    const char *rounds_env = getenv("KX_DIFF_ROUNDS");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 20261202;
    int rounds = rounds_env ? atoi(rounds_env) : 3;
    char dir[] = "/tmp/kx_prefilter_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/gen.yml", dir);
    uint64_t total_matches = 0, evaluated = 0, applicable = 0;
    for (int round = 0; round < rounds; round++) {
        rng = seed * 2654435761u + (uint64_t)round + 1;
        static buf b;
        b.n = 0;
        for (int i = 0; i < 150; i++)
            gen_rule(&b, round * 1000 + i);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fwrite(b.s, 1, b.n, f);
        fclose(f);
        kx_ruleset *rs = NULL;
        kx_err err;
        const char *p = path;
        if (kx_ruleset_load(&p, 1, &rs, &err) != 0) {
            char msg[1024];
            kx_err_format(&err, msg, sizeof(msg));
            fail_msg("generated corpus refused: %s", msg);
        }
        kx_event ev;
        kx_event_init(&ev);
        static char raw[8192];
        for (int e = 0; e < 4000; e++) {
            gen_event(&ev, raw, sizeof(raw));
            static hits on, off, nomemo;
            on.n = off.n = nomemo.n = 0;
            kx_ruleset_stats s0, s1, s2;
            kx_ruleset_set_prefilter(rs, true);
            kx_ruleset_set_memo(rs, false);
            kx_ruleset_match(rs, &ev, on_match, &nomemo);
            kx_ruleset_set_memo(rs, true);
            kx_ruleset_stats_get(rs, &s0);
            kx_ruleset_match(rs, &ev, on_match, &on);
            kx_ruleset_stats_get(rs, &s1);
            kx_ruleset_set_prefilter(rs, false);
            kx_ruleset_match(rs, &ev, on_match, &off);
            kx_ruleset_stats_get(rs, &s2);
            evaluated += s1.evaluated - s0.evaluated;
            applicable += s2.evaluated - s1.evaluated;
            if (on.n != nomemo.n || memcmp(on.idx, nomemo.idx, on.n * sizeof(on.idx[0])) != 0)
                fail_msg("memo on and off disagree: seed %llu round %d event %d",
                         (unsigned long long)seed, round, e);
            if (on.n != off.n || memcmp(on.idx, off.idx, on.n * sizeof(on.idx[0])) != 0) {
                fprintf(stderr, "seed %llu round %d event %d: raw: %s\n", (unsigned long long)seed,
                        round, e, raw);
                for (size_t i = 0; i < on.n; i++)
                    fprintf(stderr, "  prefilter on : %s\n", kx_ruleset_at(rs, on.idx[i])->id);
                for (size_t i = 0; i < off.n; i++)
                    fprintf(stderr, "  prefilter off: %s\n", kx_ruleset_at(rs, off.idx[i])->id);
                fail_msg("prefilter on and off disagree (rules in %s)", path);
            }
            total_matches += on.n;
        }
        kx_event_fini(&ev);
        kx_ruleset_destroy(rs);
    }
    printf("differential: %d rounds, %llu matches, rules evaluated: %llu compiled, %llu "
           "reference\n",
           rounds, (unsigned long long)total_matches, (unsigned long long)evaluated,
           (unsigned long long)applicable);
    /* Not vacuous: both modes match often, and the prefilter rules out many evaluations (the
     * generated rules use not, neq, exists and regexes far more than real ones do). */
    assert_true(total_matches > (uint64_t)rounds * 1000);
    assert_true(evaluated * 4 < applicable * 3);
    unlink(path);
    rmdir(dir);
}

static void atom_value(const kx__atom *a, char *out, size_t cap)
{
    static const char *const pre[] = {"C:\\Windows\\", "x ", "", "-"};
    static const char *const post[] = {".exe", " /c", "", " x"};
    const char *p = a->kind == KX__PAT_ENDS || a->kind == KX__PAT_CONTAINS ? PICK(pre) : "";
    const char *q = a->kind == KX__PAT_STARTS || a->kind == KX__PAT_CONTAINS ? PICK(post) : "";
    int n = snprintf(out, cap, "%s%.*s%s", p, (int)a->len, a->s, q);
    for (int i = 0; i < n && (size_t)i < cap; i++)
        if (rnd(3) == 0 && ((out[i] >= 'a' && out[i] <= 'z') || (out[i] >= 'A' && out[i] <= 'Z')))
            out[i] ^= 0x20 * !a->cased;
}

static void test_sigma_corpus(void **state)
{
    (void)state;
    const char *direnv = getenv("KX_SIGMA_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/rules", direnv ? direnv : "/tmp/sigma");
    if (access(path, R_OK) != 0)
        skip();
    kx_ruleset *rs = NULL;
    kx_err err;
    const char *p = path;
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), 0);
    const kx__cset *cs = kx__ruleset_cset(rs);
    assert_true(cs->pf.natoms > 1000);
    static const char *const ls[][3] = {{"windows", NULL, "process_creation"},
                                        {"windows", "security", NULL},
                                        {"windows", NULL, "ps_script"},
                                        {"linux", NULL, "process_creation"},
                                        {"aws", "cloudtrail", NULL},
                                        {"windows", NULL, "registry_set"},
                                        {NULL, NULL, NULL}};
    rng = 7;
    kx_event ev;
    kx_event_init(&ev);
    static char raw[8192];
    uint64_t matches = 0;
    for (int e = 0; e < 3000; e++) {
        kx_event_reset(&ev);
        const char *const *l = ls[rnd(7)];
        ev.product = l[0], ev.service = l[1], ev.category = l[2];
        size_t rn = 0;
        raw[0] = '\0';
        int nf = 1 + (int)rnd(6);
        for (int i = 0; i < nf; i++) {
            const kx__atom *a = &cs->pf.atoms[rnd(cs->pf.natoms)];
            char v[1024];
            atom_value(a, v, sizeof(v));
            const char *name = a->fid == KX__FID_KEYWORD ? "Message" : cs->fx.names[a->fid];
            assert_int_equal(kx_event_add(&ev, name, strlen(name), v, strlen(v), KX_VAL_STR), 0);
            int k = snprintf(raw + rn, sizeof(raw) - rn, "%s ", v);
            if (k > 0 && (size_t)k < sizeof(raw) - rn)
                rn += (size_t)k;
        }
        ev.raw = raw;
        ev.raw_len = rn;
        static hits on, off;
        on.n = off.n = 0;
        kx_ruleset_set_prefilter(rs, true);
        kx_ruleset_match(rs, &ev, on_match, &on);
        kx_ruleset_set_prefilter(rs, false);
        kx_ruleset_match(rs, &ev, on_match, &off);
        if (on.n != off.n || memcmp(on.idx, off.idx, on.n * sizeof(on.idx[0])) != 0) {
            fprintf(stderr, "event %d: %s\n", e, raw);
            for (size_t i = 0; i < on.n; i++)
                fprintf(stderr, "  prefilter on : %s\n", kx_ruleset_at(rs, on.idx[i])->id);
            for (size_t i = 0; i < off.n; i++)
                fprintf(stderr, "  prefilter off: %s\n", kx_ruleset_at(rs, off.idx[i])->id);
            fail_msg("prefilter on and off disagree on SigmaHQ");
        }
        matches += on.n;
    }
    printf("SigmaHQ: %zu rules, %u atoms, 3000 events, %llu matches, identical\n",
           kx_ruleset_size(rs), cs->pf.natoms, (unsigned long long)matches);
    assert_true(matches > 100);
    kx_event_fini(&ev);
    kx_ruleset_destroy(rs);
}

static kx_ruleset *load_text(const char *dir, const char *yaml)
{
    return kx_test_load_rules(dir, yaml);
}

static const char routed_rule[] = "title: t\nid: r1\nlogsource:\n  product: windows\n"
                                  "detection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n"
                                  "  condition: sel\n";

/* A reloaded set builds the routes the old one had, before it sees an event. */
static void test_prepare_like(void **state)
{
    (void)state;
    char dir[] = "/tmp/kx_route_XXXXXX";
    assert_non_null(mkdtemp(dir));
    kx_ruleset *old = load_text(dir, routed_rule);
    kx_event ev;
    kx_event_init(&ev);
    ev.product = "windows";
    assert_int_equal(kx_event_add(&ev, "Image", 5, "C:\\x\\CMD.EXE", 12, KX_VAL_STR), 0);
    assert_int_equal(kx_ruleset_match(old, &ev, NULL, NULL), 1);
    ev.product = "linux";
    assert_int_equal(kx_ruleset_match(old, &ev, NULL, NULL), 0);
    kx_ruleset *rs = load_text(dir, routed_rule);
    kx_ruleset_stats st;
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.routes, 0);
    kx_ruleset_prepare_like(rs, old);
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.routes, 2);
    /* A configured input's logsource, prepared by name; an existing one is not built twice. */
    assert_int_equal(kx_ruleset_prepare(rs, "windows", "sysmon", NULL), 0);
    assert_int_equal(kx_ruleset_prepare(rs, "Linux", NULL, NULL), 0);
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.routes, 3);
    ev.product = "WINDOWS"; /* logsources compare case-insensitively: the same route */
    assert_int_equal(kx_ruleset_match(rs, &ev, NULL, NULL), 1);
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.routes, 3);
    kx_event_fini(&ev);
    kx_ruleset_destroy(old);
    kx_ruleset_destroy(rs);
    rmdir(dir);
}

/* More logsources than the route cache holds: still exact, counted. */
static void test_route_overflow(void **state)
{
    (void)state;
    char dir[] = "/tmp/kx_route_XXXXXX";
    assert_non_null(mkdtemp(dir));
    kx_ruleset *rs = load_text(dir, routed_rule);
    kx_event ev;
    kx_event_init(&ev);
    assert_int_equal(kx_event_add(&ev, "Image", 5, "C:\\x\\cmd.exe", 12, KX_VAL_STR), 0);
    char cat[32];
    ev.product = "windows";
    ev.category = cat;
    size_t matched = 0;
    for (int i = 0; i < 70; i++) {
        snprintf(cat, sizeof(cat), "cat%d", i);
        matched += kx_ruleset_match(rs, &ev, NULL, NULL);
    }
    assert_int_equal(matched, 70);
    kx_ruleset_stats st;
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.routes, 64);
    assert_int_equal(st.route_overflows, 6);
    kx_event_fini(&ev);
    kx_ruleset_destroy(rs);
    rmdir(dir);
}

/* A memo whose values never recur is turned off after one window of lookups (freed, the
 * field scanned directly); one whose values recur stays; the matches are the same either
 * way. */
static void test_memo_turned_off(void **state)
{
    (void)state;
    char dir[] = "/tmp/kx_memo_XXXXXX";
    assert_non_null(mkdtemp(dir));
    kx_ruleset *rs =
        kx_test_load_rules(dir, "title: t\ndetection:\n  a:\n    CommandLine|contains: "
                                "evil\n  b:\n    Image|endswith: \\cmd.exe\n"
                                "  condition: a and b\n");
    kx_event ev;
    kx_event_init(&ev);
    size_t matched = 0, expect = 0, n = 2 * KX__MEMO_WINDOW + 10;
    for (size_t i = 0; i < n; i++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "run %s %zu", i % 3 ? "evil" : "good", i); /* unique */
        kx_event_reset(&ev);
        assert_int_equal(kx_event_add(&ev, "CommandLine", 11, cmd, strlen(cmd), KX_VAL_STR), 0);
        const char *img = i % 2 ? "C:\\w\\cmd.exe" : "C:\\w\\net.exe"; /* two values */
        assert_int_equal(kx_event_add(&ev, "Image", 5, img, strlen(img), KX_VAL_STR), 0);
        size_t m = kx_ruleset_match(rs, &ev, NULL, NULL);
        if (m != (i % 3 && i % 2))
            fail_msg("event %zu: %zu matches", i, m);
        matched += m;
        expect += i % 3 && i % 2;
    }
    assert_int_equal(matched, expect);
    assert_true(expect > n / 4);
    kx_ruleset_stats st;
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.memos_off, 1); /* CommandLine's; Image's recalls nearly every value */
    assert_true(st.memo_hits >= n - 2);
    kx_event_fini(&ev);
    kx_ruleset_destroy(rs);
    rmdir(dir);
}

/* A regex Hyperscan answers in byte mode is a trigger atom: a rule made only of regexes is
 * evaluated when one of them hit an ASCII value, not on every event; a non-ASCII value, and
 * the empty one, count as hits (byte mode cannot answer them), so nothing is missed. */
static void test_regex_triggers(void **state)
{
    (void)state;
    char dir[] = "/tmp/kx_retrig_XXXXXX";
    assert_non_null(mkdtemp(dir));
    kx_ruleset *rs = kx_test_load_rules(dir, "title: enc\ndetection:\n  s:\n    CommandLine|re: "
                                             "'-e(nc)?\\s+[A-Za-z0-9+/=]{8,}'\n  condition: s\n"
                                             "---\ntitle: two chars\ndetection:\n  s:\n"
                                             "    User|re: '^a.b$'\n  condition: s\n---\n"
                                             "title: empty\ndetection:\n  s:\n    Note|re: '^$'\n"
                                             "  condition: s\n");
    kx_ruleset_stats st;
    kx_ruleset_stats_get(rs, &st);
    assert_int_equal(st.always, 0);
    static const struct {
        const char *field, *value;
        size_t matches, evaluated;
    } cases[] = {
        {"CommandLine", "powershell -enc SQBFAFgAIAAo", 1, 1},
        {"CommandLine", "powershell -File x.ps1", 0, 0}, /* no hit: not evaluated */
        {"User", "axb", 1, 1},                           /* ASCII: byte mode answers */
        {"User", "ab", 0, 0},                            /* no hit */
        {"User",
         "a\xc3\xa9"
         "b",
         1, 1}, /* é is one character */
        {"User",
         "a\xc3\xa9\xc3\xa9"
         "b",
         0, 1},             /* non-ASCII: evaluated, no match */
        {"Note", "", 1, 1}, /* the empty value is evaluated */
        {"Note", "x", 0, 0},
    };
    for (size_t i = 0; i < KX_ARRAY_LEN(cases); i++) {
        kx_event ev;
        kx_event_init(&ev);
        assert_int_equal(kx_event_add(&ev, cases[i].field, strlen(cases[i].field), cases[i].value,
                                      strlen(cases[i].value), KX_VAL_STR),
                         0);
        kx_ruleset_stats before;
        kx_ruleset_stats_get(rs, &before);
        size_t m = kx_ruleset_match(rs, &ev, NULL, NULL);
        kx_ruleset_stats_get(rs, &st);
        if (m != cases[i].matches || st.evaluated - before.evaluated != cases[i].evaluated)
            fail_msg("case %zu (%s=%s): %zu matches, %llu evaluated", i, cases[i].field,
                     cases[i].value, m, (unsigned long long)(st.evaluated - before.evaluated));
        kx_event_fini(&ev);
    }
    kx_ruleset_destroy(rs);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential),    cmocka_unit_test(test_sigma_corpus),
        cmocka_unit_test(test_prepare_like),    cmocka_unit_test(test_route_overflow),
        cmocka_unit_test(test_memo_turned_off), cmocka_unit_test(test_regex_triggers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
