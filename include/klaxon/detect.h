/*
 * detect: Sigma rules (detection and correlation) loaded from YAML and matched against
 * events. A ruleset is immutable once loaded; reload builds a new one and swaps it in, so
 * a bad file never leaves a half-loaded set (the old one stays in force).
 *
 * Supported now (docs/rules.md is the reference): selections (map = AND, list = OR),
 * keywords, modifiers contains/startswith/endswith/re/all/cased/exists/windash/base64/
 * base64offset/utf16 (wide)/cidr/lt/lte/gt/gte/neq/fieldref/expand (lists: NAME.list,
 * NAME.list.yml, or a Redis set read live)/minute/hour/day/week/month/year (in the rule's
 * timezone), wildcards
 * * and ?, null, conditions with and/or/not/parentheses, "1 of x*", "all of them",
 * logsource filtering; Sigma filter documents (narrowing the rules they name); correlation rules of
 * every Sigma type (event_count, value_count, temporal, temporal_ordered, value_sum, value_avg,
 * value_percentile) with aliases and chaining; klaxon correlation types first_seen and baseline;
 * klaxon extensions team, category, regex_budget, the correlation keys suppress and lateness, and
 * the timeofday search identifier (klaxon/timeofday.h).
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
#include "klaxon/compare.h"
#include "klaxon/event.h"

typedef enum { KX_RULE_DETECTION = 0, KX_RULE_CORRELATION } kx_rule_kind;
typedef enum {
    KX_CORR_EVENT_COUNT = 0,
    KX_CORR_VALUE_COUNT,
    KX_CORR_TEMPORAL,
    KX_CORR_TEMPORAL_ORDERED,
    KX_CORR_VALUE_SUM,
    KX_CORR_VALUE_AVG,
    KX_CORR_VALUE_PERCENTILE,
    KX_CORR_FIRST_SEEN, /* klaxon extension: a value new for its group within timespan */
    KX_CORR_BASELINE,   /* klaxon extension: an interval's count far above its history */
    KX_CORR_ABSENCE,    /* klaxon extension: a group silent for longer than timespan */
} kx_corr_type;
/* Longest chain of correlations referencing correlations. */
#define KX_RULE_MAX_CHAIN 8

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
    /* For the people who get the alert (docs/alerts.md): Sigma's description, references,
     * falsepositives and fields (the event fields worth showing), and klaxon's runbook (a URL
     * or a short text). NULL / empty when absent. */
    const char *description;
    const char *runbook;
    const char *author; /* Sigma `author`, as written */
    int64_t realert_ms; /* klaxon `realert`: how long its paged incidents are not paged again
                         * (the alert stage's claims); 0 = not set */
    const char *const *references;
    size_t nreferences;
    const char *const *falsepositives;
    size_t nfalsepositives;
    const char *const *fields;
    size_t nfields;
    /* The zone of the rule's first time-of-day condition (its alerts show the event's local
     * time there); NULL when it has none. */
    const char *timezone;
    const char *file;
    int line;
    /* detection rules: raise alerts of their own? false for rules that correlations
     * reference, unless the correlation sets `generate: true` (Sigma semantics). */
    bool generate;
    /* correlation rules */
    kx_corr_type corr_type;
    const kx_rule *const *refs; /* referenced rules: detections, or correlations (chaining) */
    size_t nrefs;
    const char *const *group_by; /* as written: field names or alias names */
    size_t ngroup_by;
    /* The field group-by i reads in what refs[j] matched: group_fields[j * ngroup_by + i]
     * (the alias' field for that rule, else group_by[i]). For a referenced correlation, its
     * alert's group is what is read. */
    const char *const *group_fields;
    /* value_count / value_sum / value_avg / value_percentile: the condition's `field` (a
     * list for value_count: distinct tuples), resolved per ref like group_fields:
     * value_fields[j * nvalue_fields + k]. */
    const char *const *value_fields;
    size_t nvalue_fields;
    const char *const *value_names; /* the `field` names as written (first_seen's alert group) */
    /* baseline: count > mean + deviations * stddev, after `history` intervals */
    double deviations;
    int64_t history;
    int64_t keep_ms; /* absence: how long a group reported silent is remembered (`keep`) */
    /* event_count whose condition holds for an empty window ("at most N"): judged per
     * tumbling window of timespan when the window closes (docs/rules.md) */
    bool closing;
    int64_t timespan_ms;
    const kx_cmp_term *cond; /* never empty for a loaded correlation, but first_seen's */
    size_t ncond;
    int64_t suppress_ms; /* klaxon extension `suppress`; default: timespan */
    /* klaxon extension `resolve: auto` (sliding-window thresholds): an alerted group is
     * resolved once the watermark passes a whole timespan after the condition last held */
    bool resolve_auto;
    int64_t lateness_ms; /* klaxon extension `lateness`; -1: the config's state.lateness */
    int64_t max_groups;  /* klaxon extension `max_groups`; -1: the config's state.max_groups */
    /* correlations that reference this rule (a detection rule, or a chained correlation) */
    const kx_rule *const *correlations;
    size_t ncorrelations;
    /* the Sigma filters narrowing this detection rule (their titles), in load order */
    const char *const *filters;
    size_t nfilters;
    /* per-rule counter (matches of a detection rule, alerts of a correlation); a reload keeps
     * it for a rule whose document did not change (kx_ruleset_carry_counters) */
    uint64_t matches;
    uint64_t digest; /* the rule's YAML document, hashed: equal digests, the same rule text */
    void *priv;      /* compiled detection, owned by the ruleset */
};

typedef struct kx_ruleset kx_ruleset;

/* Loads rule files. Each path is a file or a directory (searched recursively for *.yml and
 * *.yaml). On the first error returns -EINVAL with err as "file:line:col: message" and
 * *out untouched. Warnings (e.g. unsupported-but-ignorable keys) are logged. */
int kx_ruleset_load(const char *const *paths, size_t npaths, kx_ruleset **out, kx_err *err);
void kx_ruleset_destroy(kx_ruleset *rs);

/* After a reload: each rule of `to` whose id is in `from` with the same digest (its document
 * did not change) takes that rule's counter, so per-rule metrics run on across reloads.
 * Returns how many did. */
size_t kx_ruleset_carry_counters(kx_ruleset *to, const kx_ruleset *from);

/* Live lists: lists backed by a Redis set (NAME.list.yml with `redis:`, docs/rules.md). The
 * ruleset matches each as a set of values it is given while it runs (app/livelists.c reads
 * the set and calls kx_ruleset_live_list_set), without a reload. Until a list is given its
 * values, a rule whose answer depends on it fails closed: a match, with the reason. */
typedef struct kx_live_list {
    const char *name; /* the list, %name% in rules */
    const char *key;  /* its Redis set, as written */
    int64_t refresh_ms;
    size_t nvalues;    /* values in force (the file's and the set's); 0 before the first */
    int64_t loaded_ms; /* when they were given (the caller's clock); 0: never */
} kx_live_list;
size_t kx_ruleset_live_lists(const kx_ruleset *rs);
/* The i-th live list (i < kx_ruleset_live_lists); borrowed strings. */
void kx_ruleset_live_list(const kx_ruleset *rs, size_t i, kx_live_list *out);
/* The values of live list i from now on: the n NUL-ended values back to back in
 * vals[0..len) (copied), with the list file's own values. The old set is freed. -ENOMEM
 * (the old set stays), -E2BIG. */
int kx_ruleset_live_list_set(kx_ruleset *rs, size_t i, const char *vals, size_t len, size_t n,
                             int64_t now_ms);
/* After a reload: each live list of `to` with the name and key of one in `from` takes its
 * values (a copy), so the new rules never wait for a read the old ones had. */
void kx_ruleset_carry_live_lists(kx_ruleset *to, const kx_ruleset *from);

/* A fingerprint of the rule files under paths (each file's path, size and modification
 * time, walked as kx_ruleset_load walks them): it changes when a rule file is added,
 * removed or written. 0 when a path cannot be read (then compare again later). */
uint64_t kx_rule_files_fingerprint(const char *const *paths, size_t npaths);

typedef enum { KX_LINT_ERROR = 0, KX_LINT_WARNING } kx_lint_level;
/* err is borrowed for the call: "file:line:col: message" as kx_ruleset_load reports it. */
typedef void (*kx_lint_cb)(void *ud, kx_lint_level level, const kx_err *err);
/* What a lint saw: its problems, and the rules that compiled. */
typedef struct kx_lint_totals {
    size_t errors, warnings;
    size_t detection, correlation;
} kx_lint_totals;
/* Checks rule files as kx_ruleset_load does, but reports every problem through cb and goes
 * on: a file that cannot be read or parsed, each document that does not compile (left out),
 * each duplicate id or name, each correlation reference that does not resolve (the
 * correlation is left unresolved); and the warnings a load would log (e.g. an alias not
 * used). Returns the number of errors (0: kx_ruleset_load would load these paths); totals
 * (may be NULL) gets the counts. */
size_t kx_ruleset_lint(const char *const *paths, size_t npaths, kx_lint_cb cb, void *ud,
                       kx_lint_totals *totals);
size_t kx_ruleset_size(const kx_ruleset *rs);
kx_rule *kx_ruleset_at(kx_ruleset *rs, size_t i);
/* A correlation type's name as a rule writes it ("event_count", ...). */
const char *kx_corr_type_name(kx_corr_type t);
/* A detection rule's logsource filter, each NULL when not given (all NULL for a correlation).
 * Borrowed from the ruleset. */
void kx_rule_logsource(const kx_rule *r, const char **product, const char **service,
                       const char **category);

typedef void (*kx_match_cb)(kx_rule *rule, void *ud);

/* Calls cb, in rule order, for each detection rule whose logsource fits ev and whose
 * condition holds, and increments rule->matches. Returns the number of matches. Only the
 * rules the prefilter cannot rule out are evaluated (docs/internals/detect.md). No
 * allocation in steady state. */
size_t kx_ruleset_match(kx_ruleset *rs, const kx_event *ev, kx_match_cb cb, void *ud);
/* During a kx_match_cb call: why the match being reported is "degraded" -- a regular
 * expression of the rule was given up at its limit or for the event's regex budget, e.g.
 * "regex budget exceeded in CommandLine|re" (docs/rules.md) -- or NULL when every regex was
 * answered. Borrowed, owned by the ruleset; read it before the callback returns. */
const char *kx_ruleset_match_reason(const kx_ruleset *rs);

/* Why rule r does or does not match ev, as a JSON object (the caller json_decref's it;
 * NULL: no memory): the rule's logsource and whether ev fits it, each search identifier's
 * truth value with each map and field condition (the values written, the one that matched,
 * the event's values of the field), the condition tree with each node's value, and "match".
 * A correlation gives each rule it counts explained, with the group the event falls in.
 * Uses the ruleset's regex scratch: not during a kx_ruleset_match (docs/rules.md,
 * "klaxon rules explain"). */
struct json_t;
struct json_t *kx_rule_explain(kx_ruleset *rs, const kx_rule *r, const kx_event *ev);

/* What the compiled set looks like and what matching has done (docs/internals/detect.md). */
typedef struct kx_ruleset_stats {
    uint32_t atoms;      /* distinct literals the prefilter scans for */
    uint32_t fields;     /* interned field names */
    uint32_t always;     /* detection rules without trigger atoms (evaluated whenever routed) */
    uint32_t routes;     /* logsources seen */
    uint64_t events;     /* events matched */
    uint64_t applicable; /* sum over events of the rules their logsource routes to */
    uint64_t evaluated;  /* rules evaluated exactly (the rest the prefilter ruled out) */
    uint64_t memo_hits;  /* field values whose hits were recalled instead of scanned */
    uint64_t memos_off;  /* per-route field memos turned off: too few of their values recur */
    uint64_t route_overflows; /* events past the route table: matched by the interpreter */
    uint64_t fallbacks;       /* events matched by the plain interpreter: no memory */
} kx_ruleset_stats;

void kx_ruleset_stats_get(const kx_ruleset *rs, kx_ruleset_stats *out);

/* The prefilter is on by default. Off, every rule that applies is evaluated by comparing
 * bytes: the same matches, slower. For the differential test and the benchmark. */
void kx_ruleset_set_prefilter(kx_ruleset *rs, bool on);
/* The scan memo (recent values' hits recalled, docs/internals/detect.md) is on by default;
 * off, every value is scanned. The same matches either way. */
void kx_ruleset_set_memo(kx_ruleset *rs, bool on);

/* Builds rs's route for one logsource (the rules that apply, their Hyperscan databases) now
 * rather than on the first event that carries it: the app calls it for every input at start.
 * 0; -ENOSPC when the route table is full, -ENOMEM (the event is then matched as on first
 * sight: a route is tried again, else the plain interpreter). */
int kx_ruleset_prepare(kx_ruleset *rs, const char *product, const char *service,
                       const char *category);
/* Compiles in rs the per-logsource routes old has built so far (docs/internals/detect.md),
 * so that swapping rs in for old (a reload) costs no pause on the next event of each
 * input. old may be NULL. */
void kx_ruleset_prepare_like(kx_ruleset *rs, const kx_ruleset *old);

/* Position of ref in c->refs, or -1. */
int kx_corr_ref_index(const kx_rule *c, const kx_rule *ref);

#endif
