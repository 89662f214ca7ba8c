/*
 * detect: Sigma rules (detection and correlation) loaded from YAML and matched against
 * events. A ruleset is immutable once loaded; reload builds a new one and swaps it in, so
 * a bad file never leaves a half-loaded set (the old one stays in force).
 *
 * Supported now (docs/rules.md is the reference): selections (map = AND, list = OR),
 * keywords, modifiers contains/startswith/endswith/re/all/cased/exists/windash/base64/
 * base64offset/utf16 (wide)/cidr/lt/lte/gt/gte/neq/fieldref (expand is refused), wildcards
 * * and ?, null, conditions with and/or/not/parentheses, "1 of x*", "all of them",
 * logsource filtering; correlation rules of type event_count; klaxon extensions team,
 * category, and the timeofday search identifier (klaxon/timeofday.h).
 *
 * Ownership: kx_ruleset_load returns a new ruleset (caller destroys). kx_rule pointers and
 * every string inside are owned by the ruleset and valid until it is destroyed.
 */
#ifndef KLAXON_DETECT_H
#define KLAXON_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/event.h"

typedef enum { KX_RULE_DETECTION = 0, KX_RULE_CORRELATION } kx_rule_kind;
typedef enum { KX_CORR_EVENT_COUNT = 0 } kx_corr_type;
typedef enum { KX_CMP_GT, KX_CMP_GTE, KX_CMP_LT, KX_CMP_LTE, KX_CMP_EQ } kx_cmp;

/* Most group-by fields a correlation may list (the state key and alert hold this many). */
#define KX_RULE_MAX_GROUP_BY 16

typedef struct kx_rule kx_rule;
struct kx_rule {
    kx_rule_kind kind;
    size_t index;         /* dense, 0..kx_ruleset_size-1, stable within one ruleset */
    const char *id;       /* Sigma id (UUID), or name/title-derived when absent; never NULL */
    const char *name;     /* Sigma `name` (what correlations reference); may be NULL */
    const char *title;    /* never NULL */
    const char *level;    /* informational|low|medium|high|critical; "medium" when absent */
    const char *team;     /* klaxon extension; NULL = the default route */
    const char *category; /* klaxon extension; NULL = derived by the alert stage */
    const char *const *tags;
    size_t ntags;
    const char *file;
    int line;
    /* detection rules: raise alerts of their own? false for rules that correlations
     * reference, unless the correlation sets `generate: true` (Sigma semantics). */
    bool generate;
    /* correlation rules */
    kx_corr_type corr_type;
    const kx_rule *const *refs; /* referenced detection rules */
    size_t nrefs;
    const char *const *group_by;
    size_t ngroup_by;
    int64_t timespan_ms;
    kx_cmp cmp;
    int64_t threshold;
    /* detection rules: correlations that reference this rule */
    const kx_rule *const *correlations;
    size_t ncorrelations;
    /* per-rule counter (matches of a detection rule, alerts of a correlation) */
    uint64_t matches;
    void *priv; /* compiled detection, owned by the ruleset */
};

typedef struct kx_ruleset kx_ruleset;

/* Loads rule files. Each path is a file or a directory (searched recursively for *.yml and
 * *.yaml). On the first error returns -EINVAL with err as "file:line:col: message" and
 * *out untouched. Warnings (e.g. unsupported-but-ignorable keys) are logged. */
int kx_ruleset_load(const char *const *paths, size_t npaths, kx_ruleset **out, kx_err *err);
void kx_ruleset_destroy(kx_ruleset *rs);
size_t kx_ruleset_size(const kx_ruleset *rs);
kx_rule *kx_ruleset_at(kx_ruleset *rs, size_t i);

typedef void (*kx_match_cb)(kx_rule *rule, void *ud);

/* Evaluates every detection rule whose logsource fits ev; calls cb for each match in rule
 * order and increments rule->matches. Returns the number of matches. No allocation. */
size_t kx_ruleset_match(kx_ruleset *rs, const kx_event *ev, kx_match_cb cb, void *ud);

/* True when cmp/threshold is satisfied by count. */
bool kx_cmp_eval(kx_cmp cmp, int64_t threshold, int64_t count);

#endif
