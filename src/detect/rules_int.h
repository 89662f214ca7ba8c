/*
 * Private to the rule loader's passes (detect stage): the ruleset record and what one pass
 * hands the next.
 *
 *   files.c             file discovery: paths -> the sorted list of rule files
 *   load.c              rule documents: YAML -> kx_rule with compiled detections
 *   correlation_load.c  correlation documents: type, group-by, timespan, condition, aliases
 *   resolve.c           after every file: unique ids and names, correlation references
 *   ruleset.c           the ruleset's life (load = the passes in order, destroy) and the
 *                       build helpers value.c and condition.c share
 *   match.c (detect_set.h) the compiled set built from the loaded rules, and its match
 */
#ifndef KLAXON_RULES_INT_H
#define KLAXON_RULES_INT_H

#include "detect_set.h"

/* A Sigma filter document, kept until every rule is loaded (filter.c). */
typedef struct kx__filter {
    const char *file;
    const kx_yaml_node *root; /* in one of kx_ruleset.kept_docs */
    struct kx__filter *next;
} kx__filter;

struct kx_ruleset {
    kx_arena arena;
    /* The kx_rule records and their ids, apart from everything else: the metrics page reads
     * every rule's id and counter on each scrape, and 3,000 rules spread through the main
     * arena cost a TLB and cache miss each (about 2 ms a scrape); side by side, a few pages. */
    kx_arena rule_arena;
    kx__res *res;
    kx_rule **rules;
    size_t n;
    size_t cap;
    kx__filter *filters, **filters_tail;   /* in load order, until applied */
    kx__filter *mappings, **mappings_tail; /* field mappings (mapping.c), likewise */
    kx_yaml_doc **kept_docs;               /* the files holding filters, until applied */
    size_t nkept;
    kx__lists lists; /* the named lists, loaded before any rule (in the arena) */
    kx__rx rx;       /* regex runtime: Hyperscan scratch, PCRE2 limits, the event's budget */
    kx__cset *cs;    /* the compiled set (match.c), built once every rule is resolved */
};

/* One Sigma field alias: alias name -> (rule name or id -> field). */
typedef struct alias_def {
    const char *name;
    size_t n;
    const char **rules;
    const char **fields;
    int line, col;
} alias_def;

/* What a rule keeps beyond the public record. */
typedef struct rule_priv {
    kx__detection *det; /* detection rules */
    /* correlation rules, until references are resolved */
    const char **ref_names;
    int *ref_line;
    int *ref_col;
    size_t nrefs;
    bool corr_generate;
    const char **value_fields; /* as written (may name aliases) */
    struct alias_def *aliases; /* copied: the YAML tree is gone by resolve() */
    size_t naliases;
    /* where id and name were written, for duplicate errors */
    int id_line, id_col;
    int name_line, name_col;
    bool id_written; /* false: the id is the name's (or the title's) */
} rule_priv;

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

int kx__strvec_push(strvec *sv, char *s);
void kx__strvec_free(strvec *sv);

/* files.c: appends path (a file, or a directory searched recursively for *.yml and *.yaml,
 * sorted) to out, and the *.list files there to lists (when not NULL). */
int kx__rule_files(const char *path, strvec *out, strvec *lists, kx_err *err);

/* Where a lint (kx_ruleset_lint) sends each problem and goes on; a load has none (NULL) and
 * stops at the first error. */
typedef struct kx__diag {
    kx_lint_cb cb;
    void *ud;
    size_t errors, warnings;
} kx__diag;

/* Reports err through dg (counted) and returns 0 to go on; without dg returns rc: stop. */
int kx__diag_error(kx__diag *dg, int rc, const kx_err *err);

/* lists.c: the named lists of the rules tree (NAME.list: a value a line), which `expand`
 * placeholders (%NAME%) stand for. */
int kx__lists_load(kx_ruleset *rs, const strvec *files, kx__diag *dg, kx_err *err);
/* never.c: a detection rule no event can match (after filters and mappings): true with the
 * reason in why. _warn: a warning per such rule (to the lint, else the log). */
bool kx__detection_never(const kx__detection *d, char *why, size_t cap);
void kx__never_warn(kx_ruleset *rs, kx__diag *dg);
/* Frees the live lists' values (the lists themselves are in the arena). */
void kx__lists_free(kx__lists *ls);

/* load.c: loads every document of one file into rs. With dg, a document with an error is
 * reported and left out, and the next one is loaded. */
int kx__load_file(kx_ruleset *rs, const char *path, kx__diag *dg, kx_err *err);
/* A scalar or a list of scalars under key `what`, copied into the arena. */
int kx__str_list(kx__ctx *c, const kx_yaml_node *n, const char *what, const char ***out,
                 size_t *nout);

/* correlation_load.c: the `correlation` section of a document into r and pv. */
int kx__correlation_compile(kx__ctx *c, const kx_yaml_node *root, const kx_yaml_node *corr,
                            kx_rule *r, rule_priv *pv);

/* load.c: a `detection` map (or a filter's `filter` map, whose `rules` is no search
 * identifier) -> the searches and the condition of d. */
int kx__detection_compile(kx__ctx *c, const kx_yaml_node *det, bool filter, kx__detection *d);

/* filter.c: Sigma filters. A document with `filter` and neither `detection` nor
 * `correlation` is one; kx__filter_add checks its shape and keeps it (its file's documents
 * are handed over by kx__filter_keep_docs); kx__filters_apply narrows the rules each filter
 * names, after resolve, then lets the YAML go. */
bool kx__is_filter_doc(const kx_yaml_node *root);
int kx__filter_add(kx_ruleset *rs, kx__ctx *c, const kx_yaml_node *root);
int kx__filter_keep_docs(kx_ruleset *rs, kx_yaml_doc *docs);
/* Appends a record of document root (of c's file) at *tail: a filter or a mapping. */
int kx__keep(kx__ctx *c, const kx_yaml_node *root, kx__filter ***tail);
/* r's detection becomes (its condition) and (det's), its searches followed by det's (a
 * filter's, or a field mapping's conditions), det compiled in r's context; r lists title
 * among its filters. */
int kx__narrow(kx_ruleset *rs, const char *file, const kx_yaml_node *det, const kx_yaml_node *title,
               kx_rule *r, kx_err *err);
int kx__filters_apply(kx_ruleset *rs, kx__diag *dg, kx_err *err);
void kx__filters_release(kx_ruleset *rs);

/* mapping.c: field mappings. A document with `fieldmapping` (Sigma taxonomy field -> the
 * decoders' field, or a list of them) renames the fields of every detection rule within its
 * logsource, and the group-by and value fields correlations read from those rules. Kept
 * like filters (kx__filter records), applied after them. */
bool kx__is_mapping_doc(const kx_yaml_node *root);
/* filter.c: the rule's logsource lies within ls (each part ls gives, the rule has). */
bool kx__within(const kx__detection *d, const kx_yaml_node *ls);
int kx__mapping_add(kx_ruleset *rs, kx__ctx *c, const kx_yaml_node *root);
int kx__mappings_apply(kx_ruleset *rs, kx__diag *dg, kx_err *err);

/* resolve.c: unique ids and names, correlation references and their fields. With dg, every
 * problem is reported and a correlation with one is left unresolved (no refs). */
int kx__resolve(kx_ruleset *rs, kx__diag *dg, kx_err *err);

#endif
