/*
 * Private to the command line (src/app/cli*.c): helpers the commands share, and the
 * commands that live in files of their own. kx_cli_main (cli.c) dispatches to them.
 */
#ifndef KX_CLI_INT_H
#define KX_CLI_INT_H

#include <ev.h>
#include <jansson.h>

#include "klaxon/common.h"
#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/store.h"
#include "klaxon/yaml.h"

/* "klaxon: FILE:LINE:COL: message" on stderr. */
void kx__cli_print_err(const kx_err *e);
/* klaxon alerts list|dead|retry (cli_alerts.c); argv[0] is "alerts". Exit code. */
int kx__cli_alerts(int argc, char **argv);
/* klaxon config check FILE (cli_config.c); argv[0] is "config". */
int kx__cli_config(int argc, char **argv);
/* klaxon route -c CONFIG [FILE] (cli_config.c); argv[0] is "route". */
int kx__cli_route(int argc, char **argv);

/* klaxon rules lint|list|test (cli_rules.c); argv[0] is "rules". */
int kx__cli_rules(int argc, char **argv);
/* klaxon rules test (rules_test.c); argv[0] is "test". */
int kx__rules_test(int argc, char **argv);
/* How many tests r's file has (RULE.tests.yml beside it), -1 for none (rules_test.c). */
int kx__rules_tests_count(const kx_rule *r);

/* The rules in force and their reloads (reload.c): what /metrics and /healthz say of them.
 * Times are Unix seconds (ev_time). */
typedef struct kx__reload {
    double loaded_at; /* the set in force */
    double tried_at;  /* the last reload tried; 0: none yet */
    bool last_ok;     /* true until a reload is refused */
    uint64_t ok, refused;
    char error[600]; /* the last refusal's "file:line:col: message" */
} kx__reload;
void kx__reload_init(kx__reload *st, double now);
void kx__reload_refused(kx__reload *st, double now, const kx_err *err);
/* The new set rs is swapped in for old: carries the counters of unchanged rules; returns
 * how many rules kept theirs. */
size_t kx__reload_taken(kx__reload *st, double now, kx_ruleset *rs, const kx_ruleset *old);
int kx__reload_render_metrics(const kx__reload *st, size_t nrules, kx_buf *out);
/* One line for /healthz: the rules in force, and the last reload (refused: why). */
void kx__reload_health_detail(const kx__reload *st, size_t nrules, kx_buf *out);

/* Live lists (livelists.c): reads the Redis-backed lists of the rules in force, every
 * refresh, through the store, and swaps their values in. use: the rules now in force (after
 * a reload, which carried the old values: kx_ruleset_carry_live_lists); every list is read
 * again at once. waiting: a list has never been read (and can be: the store has sets);
 * start-up and a reload hold the events back for it, up to KX_LISTS_WAIT_S. */
typedef struct kx__livelists kx__livelists;
int kx__livelists_create(struct ev_loop *loop, kx_store *store, kx_ruleset *rs,
                         kx__livelists **out);
void kx__livelists_use(kx__livelists *ll, kx_ruleset *rs);
void kx__livelists_destroy(kx__livelists *ll);
bool kx__livelists_waiting(const kx__livelists *ll);
/* cb once, when no list waits for its first read any more (a read ended). */
void kx__livelists_on_ready(kx__livelists *ll, void (*cb)(void *ud), void *ud);
int kx__livelists_render_metrics(const kx__livelists *ll, kx_buf *out);
/* Gives each live list not given values yet only its file's values, with a warning saying
 * why (no Redis: replay on a memory store, explain). */
int kx__livelists_file_values(kx_ruleset *rs, const char *why);
/* Lines for /healthz: lists never read, or whose last read failed. */
void kx__livelists_health_detail(const kx__livelists *ll, kx_buf *out);

/* `rules explain` of a correlation (explain_corr.c): events through the compiled rules and the
 * correlate stage (in-memory store, the events' own time). _event adds to e "windows" (what
 * the store answered for the rule's windows: group, count, first, last, condition_met,
 * fired) and "alerts" (what the rule raised); _finish judges what waits for time to pass and
 * returns {"alerts": [...]} (new). */
typedef struct kx__corr_explain kx__corr_explain;
int kx__corr_explain_create(kx_ruleset *rs, const kx_rule *rule, int64_t lateness_ms,
                            kx__corr_explain **out);
void kx__corr_explain_event(kx__corr_explain *x, const kx_event *ev, json_t *e);
json_t *kx__corr_explain_finish(kx__corr_explain *x);
void kx__corr_explain_destroy(kx__corr_explain *x);

/* The decoder content (cli_decoders.c): `paths` (--decoders), else the config's `decoders`,
 * else the shipped decoders/ directory when it exists; none with `none` (--no-decoders).
 * *out NULL when there is none. -EINVAL with the error printed. */
int kx__decoders_load(const kx_config *cfg, const char *const *paths, size_t npaths, bool none,
                      kx_decoder_set **out);
/* The shipped decoders' directory, or NULL when this klaxon has none. */
const char *kx__default_decoders(void);
/* klaxon decoders ... */
int kx__cli_decoders(int argc, char **argv);

/* One run of `klaxon replay`'s engine (cli.c): files (stdin when none) through decode, the
 * rules, the state store and the alert router, on the events' own time, to the end of the
 * input (absence judged at its last event time) and until every alert is delivered. cfg
 * (may be NULL) and rules are lent for the run. Exit code: 0, 1 (runtime), 2 (stages refused
 * the config). */
typedef struct kx__replay_spec {
    kx_config *cfg;
    kx_ruleset *rules;
    const char *store_url; /* NULL: the config's, else memory */
    int format;            /* KX_FMT_*, or -1: the input's */
    const char *topic;     /* decode as the config's input for this topic */
    /* or decode as this input (an `inputs` entry's keys) with this `decode` section */
    const kx_yaml_node *input, *decode;
    const kx_yaml_node *alerting;   /* the router's `alerting`; NULL: every alert to stdout */
    const kx_decoder_set *decoders; /* the decoder content (borrowed), or NULL */
    const char *const *files;
    size_t nfiles;
} kx__replay_spec;
int kx__replay_run(const kx__replay_spec *spec);

#endif
