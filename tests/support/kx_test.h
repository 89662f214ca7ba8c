/*
 * Small helpers shared by the unit tests: temp dirs, whole-file read/write, waiting for a
 * condition against a deadline while the loop runs (never sleep to synchronise), and a rule
 * set loaded from YAML text.
 */
#ifndef KX_TEST_H
#define KX_TEST_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct kx_ruleset;

/* mkdtemp under $TMPDIR or /tmp; returns a malloc'd path the caller frees (and removes with
 * kx_test_rmrf). */
char *kx_test_tmpdir(const char *tag);
void kx_test_rmrf(const char *path);
/* Reads a whole file into a malloc'd NUL-terminated buffer (NULL if missing). */
char *kx_test_read_file(const char *path, size_t *len);
int kx_test_write_file(const char *path, const char *data);
/* Runs the loop (EVRUN_NOWAIT + short poll) until cond(ud) is true or timeout_ms passes.
 * Returns cond's last value. */
bool kx_test_run_until(struct ev_loop *loop, bool (*cond)(void *ud), void *ud, int timeout_ms);
/* Writes yaml to DIR/r.yml, loads it as a rule set (failing the test with the loader's
 * file:line:col message when it is refused) and removes the file (rules.c). */
struct kx_ruleset *kx_test_load_rules(const char *dir, const char *yaml);
/* Loads every rule file (and list, filter, mapping) of dir; on a refusal returns NULL with
 * the loader's "file:line:col: message" in why (cap bytes). */
struct kx_ruleset *kx_test_load_dir(const char *dir, char *why, size_t cap);
/* How many rules match an event of that logsource (NULL: unknown) whose string fields are
 * kv (name, value, ..., NULL); raw text "x". */
size_t kx_test_match(struct kx_ruleset *rs, const char *product, const char *service,
                     const char *const *kv);

#endif
