#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "klaxon/yaml.h"

static kx_yaml_doc *load(const char *text)
{
    kx_yaml_doc *d = NULL;
    kx_err e;
    assert_int_equal(kx_yaml_load_mem("t.yml", text, strlen(text), &d, &e), 0);
    return d;
}

static void test_tree_positions(void **state)
{
    (void)state;
    kx_yaml_doc *d = load("title: SSH\n"
                          "detection:\n"
                          "  sel:\n"
                          "    - a\n"
                          "    - 'null'\n"
                          "  n: null\n");
    const kx_yaml_node *root = d->root;
    assert_int_equal(root->type, KX_YAML_MAP);
    assert_true(kx_yaml_is(kx_yaml_get(root, "title"), "SSH"));
    const kx_yaml_node *det = kx_yaml_get(root, "detection");
    assert_int_equal(det->line, 3);
    assert_int_equal(det->col, 3);
    const kx_yaml_node *sel = kx_yaml_get(det, "sel");
    assert_int_equal(sel->type, KX_YAML_SEQ);
    assert_int_equal(sel->n, 2);
    assert_int_equal(sel->vals[1]->line, 5);
    assert_int_equal(sel->vals[1]->col, 7);
    assert_false(kx_yaml_is_null(sel->vals[1])); /* quoted "null" is a string */
    assert_true(kx_yaml_is_null(kx_yaml_get(det, "n")));
    assert_null(kx_yaml_get(det, "missing"));
    kx_yaml_free(d);
}

static void test_multi_doc_and_alias(void **state)
{
    (void)state;
    kx_yaml_doc *d = load("a: &x [1, 2]\nb: *x\n---\nc: 3\n");
    assert_non_null(d->next);
    assert_ptr_equal(kx_yaml_get(d->root, "a"), kx_yaml_get(d->root, "b"));
    assert_true(kx_yaml_is(kx_yaml_get(d->next->root, "c"), "3"));
    assert_null(d->next->next);
    kx_yaml_free(d);
}

static void test_parse_error_position(void **state)
{
    (void)state;
    kx_yaml_doc *d = NULL;
    kx_err e;
    const char *bad = "a: 1\nb: [1, 2\nc: 3\n";
    assert_int_equal(kx_yaml_load_mem("bad.yml", bad, strlen(bad), &d, &e), -EINVAL);
    assert_null(d);
    char out[600];
    kx_err_format(&e, out, sizeof(out));
    assert_string_equal(out, "bad.yml:3:2: YAML: did not find expected ',' or ']' while parsing "
                             "a flow sequence");
}

static void test_scalars(void **state)
{
    (void)state;
    kx_yaml_doc *d = load("n: 42\nbad: 4x\nd: 5m\nms: 250ms\nb: true\nx: 1y\n");
    kx_err e;
    long long v;
    bool b;
    assert_int_equal(kx_yaml_int(kx_yaml_get(d->root, "n"), "t.yml", 0, 100, &v, &e), 0);
    assert_int_equal(v, 42);
    assert_int_equal(kx_yaml_int(kx_yaml_get(d->root, "n"), "t.yml", 0, 10, &v, &e), -EINVAL);
    char out[600];
    kx_err_format(&e, out, sizeof(out));
    assert_string_equal(out, "t.yml:1:4: 42 is out of range [0, 10]");
    assert_int_equal(kx_yaml_int(kx_yaml_get(d->root, "bad"), "t.yml", 0, 10, &v, &e), -EINVAL);
    kx_err_format(&e, out, sizeof(out));
    assert_string_equal(out, "t.yml:2:6: expected an integer, got \"4x\"");
    assert_int_equal(kx_yaml_duration_ms(kx_yaml_get(d->root, "d"), "t.yml", &v, &e), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(kx_yaml_duration_ms(kx_yaml_get(d->root, "ms"), "t.yml", &v, &e), 0);
    assert_int_equal(v, 250);
    assert_int_equal(kx_yaml_duration_ms(kx_yaml_get(d->root, "x"), "t.yml", &v, &e), -EINVAL);
    kx_err_format(&e, out, sizeof(out));
    assert_string_equal(out,
                        "t.yml:6:4: expected a duration like 30s, 5m, 2h, 1d or 500ms, got \"1y\"");
    assert_int_equal(kx_yaml_bool(kx_yaml_get(d->root, "b"), "t.yml", &b, &e), 0);
    assert_true(b);
    kx_yaml_free(d);
}

static void test_empty(void **state)
{
    (void)state;
    kx_yaml_doc *d = load("");
    assert_null(d->root);
    kx_yaml_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_positions),
        cmocka_unit_test(test_multi_doc_and_alias),
        cmocka_unit_test(test_parse_error_position),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
