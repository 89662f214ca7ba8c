/* Loading a rule set from YAML text in a test (kx_test.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/detect.h"
#include "kx_test.h"

size_t kx_test_match(kx_ruleset *rs, const char *product, const char *service,
                     const char *const *kv)
{
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = "x";
    ev.raw_len = 1;
    ev.product = product;
    ev.service = service;
    for (size_t i = 0; kv[i]; i += 2)
        assert_int_equal(
            kx_event_add(&ev, kv[i], strlen(kv[i]), kv[i + 1], strlen(kv[i + 1]), KX_VAL_STR), 0);
    size_t n = kx_ruleset_match(rs, &ev, NULL, NULL);
    kx_event_fini(&ev);
    return n;
}

kx_ruleset *kx_test_load_dir(const char *dir, char *why, size_t cap)
{
    kx_ruleset *rs = NULL;
    kx_err err;
    if (kx_ruleset_load(&dir, 1, &rs, &err) != 0) {
        kx_err_format(&err, why, cap);
        return NULL;
    }
    return rs;
}

kx_ruleset *kx_test_load_rules(const char *dir, const char *yaml)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/r.yml", dir);
    assert_int_equal(kx_test_write_file(path, yaml), 0);
    kx_ruleset *rs = NULL;
    kx_err err;
    const char *p = path;
    int rc = kx_ruleset_load(&p, 1, &rs, &err);
    unlink(path);
    if (rc != 0) {
        char buf[1024];
        kx_err_format(&err, buf, sizeof(buf));
        fail_msg("load failed: %s\n%s", buf, yaml);
    }
    return rs;
}
