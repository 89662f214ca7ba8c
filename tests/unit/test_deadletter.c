/*
 * Dead letters on disk: the exact line written, parsing it back (the alert byte for byte,
 * even when the error text or the alert hold look-alikes of the line's own keys), lines that
 * are not dead letters, requeue moving exactly the chosen lines, and an append after the
 * file was replaced going to the new file.
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

#include "klaxon/deadletter.h"
#include "kx_test.h"

#define KEY "0123456789abcdef0123456789abcdef"
/* An alert whose strings contain the line's own key names. */
#define ALERT                                                                                      \
    "{\"id\":\"x\",\"dedup_key\":\"" KEY "\",\"rule\":{\"id\":\"r-1\"},"                           \
    "\"group\":{\"note\":\",\\\"key\\\":\\\"" KEY "\\\",\\\"alert\\\":{}\"}}"

typedef struct seen {
    size_t n;
    char sinks[8][32];
    char alerts[8][512];
} seen;

static void on_dl(void *ud, const kx_dead_letter *d)
{
    seen *s = ud;
    assert_true(s->n < 8);
    snprintf(s->sinks[s->n], sizeof(s->sinks[0]), "%s", d->sink);
    snprintf(s->alerts[s->n], sizeof(s->alerts[0]), "%s", d->alert);
    s->n++;
}

static void test_append_and_parse(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("dl");
    char path[4200];
    snprintf(path, sizeof(path), "%s/dead.jsonl", dir);
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_dead_letter_append(path, "pager", "retry_for spent", 9, 503,
                                           "HTTP 503 \"busy\", \"key\":\"" KEY "\"", KEY, ALERT,
                                           strlen(ALERT), true, &b),
                     0);
    size_t len = 0;
    char *data = kx_test_read_file(path, &len);
    assert_non_null(data);
    /* The line as written, but for its time. */
    const char *rest = strstr(data, "\",\"sink\":");
    assert_non_null(rest);
    assert_int_equal(strncmp(data, "{\"time\":\"20", 11), 0);
    assert_string_equal(rest,
                        "\",\"sink\":\"pager\",\"reason\":\"retry_for spent\",\"attempts\":9,"
                        "\"status\":503,\"error\":\"HTTP 503 \\\"busy\\\", \\\"key\\\":\\\"" KEY
                        "\\\"\",\"key\":\"" KEY "\",\"alert\":" ALERT "}\n");
    kx_dead_letter d;
    assert_int_equal(kx_dead_letter_parse(data, len - 1, &d), 0);
    assert_string_equal(d.sink, "pager");
    assert_string_equal(d.reason, "retry_for spent");
    assert_int_equal(d.attempts, 9);
    assert_int_equal(d.status, 503);
    assert_string_equal(d.error, "HTTP 503 \"busy\", \"key\":\"" KEY "\"");
    assert_string_equal(d.key, KEY);
    assert_string_equal(d.rule_id, "r-1");
    assert_string_equal(d.alert, ALERT);
    assert_int_equal(d.alert_len, strlen(ALERT));
    kx_dead_letter_free(&d);

    /* Not dead letters. */
    const char *bad[] = {"",         "{}",
                         "not json", "{\"key\":\"" KEY "\",\"alert\":{}",
                         ALERT,      "{\"time\":\"t\",\"key\":\"" KEY "\",\"alert\":[1]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kx_dead_letter_parse(bad[i], strlen(bad[i]), &d), -EINVAL);
    free(data);
    kx_buf_fini(&b);
    kx_test_rmrf(dir);
    free(dir);
}

static bool only_chat(void *ud, const kx_dead_letter *d)
{
    (void)ud;
    return !strcmp(d->sink, "chat");
}

static void test_requeue_moves_chosen(void **state)
{
    (void)state;
    char *dir = kx_test_tmpdir("dl");
    char path[4200], rq[4200];
    snprintf(path, sizeof(path), "%s/dead.jsonl", dir);
    snprintf(rq, sizeof(rq), "%s/requeue", dir);
    kx_buf b;
    kx_buf_init(&b, 0);
    const char *sinks[] = {"pager", "chat", "pager", "chat"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(kx_dead_letter_append(path, sinks[i], "refused, not retried", 1, 400,
                                               "HTTP 400", KEY, ALERT, strlen(ALERT), false, &b),
                         0);
    /* A line that is not a dead letter stays where it is. */
    FILE *f = fopen(path, "a");
    fputs("garbage\n", f);
    fclose(f);
    size_t moved = 9;
    kx_err err = {0};
    assert_int_equal(kx_dead_letters_requeue(path, rq, only_chat, NULL, &moved, &err), 0);
    assert_int_equal(moved, 2);
    seen left = {0}, taken = {0};
    size_t bad = 0;
    assert_int_equal(kx_dead_letters_read(path, on_dl, &left, &bad, &err), 0);
    assert_int_equal(left.n, 2);
    assert_int_equal(bad, 1);
    assert_string_equal(left.sinks[0], "pager");
    assert_string_equal(left.sinks[1], "pager");
    /* One new file in requeue/ with the two chat lines. */
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "ls %s", rq);
    FILE *p = popen(cmd, "r");
    char name[256] = "";
    assert_non_null(fgets(name, sizeof(name), p));
    char more[256];
    assert_null(fgets(more, sizeof(more), p));
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    char rqf[4600];
    snprintf(rqf, sizeof(rqf), "%s/%s", rq, name);
    assert_int_equal(kx_dead_letters_read(rqf, on_dl, &taken, &bad, &err), 0);
    assert_int_equal(taken.n, 2);
    assert_string_equal(taken.sinks[0], "chat");
    assert_string_equal(taken.alerts[1], ALERT);
    assert_int_equal(bad, 0);

    /* The file was replaced by the requeue: a later append goes to the new one. */
    assert_int_equal(kx_dead_letter_append(path, "late", "retry_for spent", 1, 0, "", KEY, ALERT,
                                           strlen(ALERT), false, &b),
                     0);
    memset(&left, 0, sizeof(left));
    assert_int_equal(kx_dead_letters_read(path, on_dl, &left, &bad, &err), 0);
    assert_int_equal(left.n, 3);
    assert_string_equal(left.sinks[2], "late");

    /* Nothing chosen: nothing written. */
    assert_int_equal(kx_dead_letters_requeue(path, rq, only_chat, NULL, &moved, &err), 0);
    assert_int_equal(moved, 0);
    kx_buf_fini(&b);
    kx_test_rmrf(dir);
    free(dir);
}

static void test_missing_file(void **state)
{
    (void)state;
    seen s = {0};
    size_t bad = 7, moved = 7;
    kx_err err = {0};
    assert_int_equal(kx_dead_letters_read("/nonexistent/dead.jsonl", on_dl, &s, &bad, &err), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(bad, 0);
    assert_int_equal(kx_dead_letters_requeue("/nonexistent/dead.jsonl", "/nonexistent/rq",
                                             only_chat, NULL, &moved, &err),
                     0);
    assert_int_equal(moved, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_parse),
        cmocka_unit_test(test_requeue_moves_chosen),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
