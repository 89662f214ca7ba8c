/*
 * Conditions: precedence and quantifiers checked against truth tables (every combination of
 * the search identifiers a, b, c being true), and parse errors compared as whole
 * "file:line:col: message" strings, the column pointing at the offending token.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/detect.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kx_cond_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/c.yml", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return rmdir(dir);
}

static int load_yaml(const char *yaml, kx_ruleset **rs, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    kx_err err;
    const char *p = path;
    int rc = kx_ruleset_load(&p, 1, rs, &err);
    if (rc)
        kx_err_format(&err, errbuf, errlen);
    return rc;
}

/* Search identifiers a, b, c, sel_1, sel_2, _hidden: each true when its field equals "1". */
static const char *const searches = "detection:\n"
                                    "    a: {fa: '1'}\n"
                                    "    b: {fb: '1'}\n"
                                    "    c: {fc: '1'}\n"
                                    "    sel_1: {f1: '1'}\n"
                                    "    sel_2: {f2: '1'}\n"
                                    "    _hidden: {fh: '1'}\n";

static kx_ruleset *load_cond(const char *cond)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml), "title: t\n%s    condition: %s\n", searches, cond);
    kx_ruleset *rs = NULL;
    char err[1024];
    if (load_yaml(yaml, &rs, err, sizeof(err)))
        fail_msg("condition \"%s\": %s", cond, err);
    return rs;
}

static const char *const fields[] = {"fa", "fb", "fc", "f1", "f2", "fh"};

/* Evaluates the loaded rule with the identifiers whose bit is set in mask being true. */
static bool eval(kx_ruleset *rs, unsigned mask)
{
    kx_event ev;
    kx_event_init(&ev);
    for (unsigned i = 0; i < 6; i++)
        assert_int_equal(
            kx_event_add(&ev, fields[i], 2, (mask >> i) & 1 ? "1" : "0", 1, KX_VAL_STR), 0);
    size_t n = kx_ruleset_match(rs, &ev, NULL, NULL);
    kx_event_fini(&ev);
    return n == 1;
}

#define A(m) (((m) >> 0) & 1)
#define B(m) (((m) >> 1) & 1)
#define C(m) (((m) >> 2) & 1)
#define S1(m) (((m) >> 3) & 1)
#define S2(m) (((m) >> 4) & 1)
#define H(m) (((m) >> 5) & 1)

static void check(const char *cond, bool (*expect)(unsigned))
{
    kx_ruleset *rs = load_cond(cond);
    for (unsigned m = 0; m < 64; m++)
        if (eval(rs, m) != expect(m))
            fail_msg("condition \"%s\" with a=%u b=%u c=%u sel_1=%u sel_2=%u _hidden=%u: "
                     "expected %d",
                     cond, A(m), B(m), C(m), S1(m), S2(m), H(m), expect(m));
    kx_ruleset_destroy(rs);
}

static bool e_a(unsigned m)
{
    return A(m);
}
static bool e_a_or_b_and_c(unsigned m)
{
    return A(m) || (B(m) && C(m));
}
static bool e_paren(unsigned m)
{
    return (A(m) || B(m)) && C(m);
}
static bool e_not_a_and_b(unsigned m)
{
    return !A(m) && B(m);
}
static bool e_not_paren(unsigned m)
{
    return !(A(m) || B(m));
}
static bool e_not_not(unsigned m)
{
    return !!A(m);
}
static bool e_and_chain(unsigned m)
{
    return A(m) && B(m) && C(m);
}
static bool e_or_chain(unsigned m)
{
    return A(m) || B(m) || C(m);
}
static bool e_one_of_sel(unsigned m)
{
    return S1(m) || S2(m);
}
static bool e_all_of_sel(unsigned m)
{
    return S1(m) && S2(m);
}
static bool e_one_of_them(unsigned m)
{
    return A(m) || B(m) || C(m) || S1(m) || S2(m);
}
static bool e_all_of_them(unsigned m)
{
    return A(m) && B(m) && C(m) && S1(m) && S2(m);
}
static bool e_mixed(unsigned m)
{
    return A(m) && (S1(m) || S2(m)) && !(B(m) || C(m));
}
static bool e_not_one_of(unsigned m)
{
    return !(S1(m) || S2(m)) && A(m);
}
static bool e_hidden(unsigned m)
{
    return H(m) && !A(m);
}
static bool e_list(unsigned m)
{
    return (A(m) && B(m)) || C(m);
}

static void test_precedence(void **state)
{
    (void)state;
    check("a", e_a);
    check("a or b and c", e_a_or_b_and_c);
    check("b and c or a", e_a_or_b_and_c);
    check("(a or b) and c", e_paren);
    check("not a and b", e_not_a_and_b);
    check("not (a or b)", e_not_paren);
    check("not not a", e_not_not);
    check("a and b and c", e_and_chain);
    check("a or b or c", e_or_chain);
    check("((a))", e_a);
    check("(a)and(b)and(c)", e_and_chain);
}

static bool e_s1(unsigned m)
{
    return S1(m);
}
static bool e_all_star(unsigned m)
{
    return A(m) && B(m) && C(m) && S1(m) && S2(m) && H(m);
}

static void test_quantifiers(void **state)
{
    (void)state;
    check("1 of sel_*", e_one_of_sel);
    check("any of sel_*", e_one_of_sel);
    check("all of sel_*", e_all_of_sel);
    check("1 of sel_1", e_s1);
    check("all of sel_1", e_s1);
    check("all of *", e_all_star); /* a pattern, unlike "them", includes _hidden */
}

static void test_them_and_mixed(void **state)
{
    (void)state;
    check("1 of them", e_one_of_them);
    check("all of them", e_all_of_them); /* _hidden is left out of "them" */
    check("a and 1 of sel* and not (b or c)", e_mixed);
    check("not 1 of sel_* and a", e_not_one_of);
    check("_hidden and not a", e_hidden);
}

static void test_condition_list(void **state)
{
    (void)state;
    check("\n        - a and b\n        - c", e_list);
}

/* ---- errors ---- */

static void expect_err(const char *cond, const char *want_suffix)
{
    char yaml[2048], err[1024], want[1024];
    snprintf(yaml, sizeof(yaml), "title: t\n%s    condition: %s\n", searches, cond);
    kx_ruleset *rs = (kx_ruleset *)&rs; /* must stay untouched */
    kx_ruleset *before = rs;
    assert_int_equal(load_yaml(yaml, &rs, err, sizeof(err)), -EINVAL);
    assert_ptr_equal(rs, before);
    snprintf(want, sizeof(want), "%s:%s", path, want_suffix);
    assert_string_equal(err, want);
}

static void test_errors(void **state)
{
    (void)state;
    /* "    condition: " puts the scalar at line 9, column 16. */
    expect_err("a and selction", "9:22: condition references unknown identifier \"selction\"");
    expect_err("selction", "9:16: condition references unknown identifier \"selction\"");
    expect_err("a and", "9:21: condition ends where an identifier was expected");
    expect_err("a b", "9:18: unexpected \"b\" in condition");
    expect_err("a or or b", "9:21: unexpected \"or\" in condition");
    expect_err("(a or b", "9:16: unclosed \"(\" in condition");
    expect_err("a)", "9:17: unexpected \")\" in condition");
    expect_err("a | count() by src > 5",
               "9:18: aggregation expressions (\"| count() ...\") are deprecated in Sigma: write "
               "a correlation rule instead");
    expect_err("a near b",
               "9:18: \"near\" is deprecated in Sigma: write a temporal correlation rule instead");
    expect_err("2 of sel_*", "9:16: only \"1 of\", \"any of\" and \"all of\" are supported, not "
                             "\"2 of\"");
    expect_err("1 of filter_*", "9:21: pattern \"filter_*\" matches no search identifier");
    expect_err("all sel_*", "9:20: expected \"of\" after \"all\"");
    expect_err("1 of", "9:20: expected an identifier pattern or \"them\" after \"of\"");
    expect_err("1 of and", "9:21: expected an identifier pattern or \"them\" after \"of\"");
    expect_err("''", "9:16: condition is empty");
    /* Quoted scalars: the column stays at the scalar, offsets are not exact there. */
    expect_err("'a and nope'", "9:16: condition references unknown identifier \"nope\"");
    expect_err("{x: y}", "9:16: condition must be a string or a list of strings");

    char deep[600] = "";
    for (int i = 0; i < 70; i++)
        strcat(deep, "(");
    strcat(deep, "a");
    for (int i = 0; i < 70; i++)
        strcat(deep, ")");
    expect_err(deep, "9:80: condition nested too deeply (more than 64 levels)");
    char nots[600] = "";
    for (int i = 0; i < 70; i++)
        strcat(nots, "not ");
    strcat(nots, "a");
    expect_err(nots, "9:272: condition nested too deeply (more than 64 levels)");
}

static void test_missing_condition(void **state)
{
    (void)state;
    char err[1024], want[1024];
    kx_ruleset *rs = NULL;
    assert_int_equal(load_yaml("title: t\ndetection:\n    a: {f: x}\n", &rs, err, sizeof(err)),
                     -EINVAL);
    snprintf(want, sizeof(want), "%s:3:5: missing required key \"condition\"", path);
    assert_string_equal(err, want);
    assert_null(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),     cmocka_unit_test(test_quantifiers),
        cmocka_unit_test(test_them_and_mixed), cmocka_unit_test(test_condition_list),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_missing_condition),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
