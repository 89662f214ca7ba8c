/*
 * A small YAML document tree built with libyaml, keeping each node's line and column so
 * rule and config loaders can report "file:line:col: message".
 *
 * Ownership: kx_yaml_load_* returns a new document the caller frees with kx_yaml_free;
 * every node and string inside is owned by the document and borrowed by callers.
 * Anchors and aliases are resolved by libyaml's document loader (an alias node points at
 * the anchored node). Multi-document files (--- separators) load as several documents
 * chained with `next` (Sigma correlation files use this).
 */
#ifndef KLAXON_YAML_H
#define KLAXON_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include "klaxon/common.h"

typedef enum { KX_YAML_SCALAR, KX_YAML_MAP, KX_YAML_SEQ } kx_yaml_type;

typedef struct kx_yaml_node kx_yaml_node;
struct kx_yaml_node {
    kx_yaml_type type;
    int line; /* 1-based */
    int col;  /* 1-based */
    /* scalar */
    const char *str;
    size_t len;
    bool quoted; /* written with ' or " (so "null"/"123" stay strings) */
    /* map: keys[i] -> vals[i]; seq: items in vals */
    size_t n;
    kx_yaml_node **keys;
    kx_yaml_node **vals;
};

typedef struct kx_yaml_doc kx_yaml_doc;
struct kx_yaml_doc {
    kx_yaml_node *root; /* NULL for an empty document */
    kx_yaml_doc *next;  /* next document in the same stream */
    void *priv;
};

/* Parses a file / memory buffer. On error returns -EINVAL and fills err with the position. */
int kx_yaml_load_file(const char *path, kx_yaml_doc **out, kx_err *err);
int kx_yaml_load_mem(const char *name, const char *buf, size_t len, kx_yaml_doc **out, kx_err *err);
void kx_yaml_free(kx_yaml_doc *doc); /* frees the whole chain */

/* Map lookup by key (exact); NULL if absent or not a map. */
const kx_yaml_node *kx_yaml_get(const kx_yaml_node *map, const char *key);
/* True for a scalar equal to s. */
bool kx_yaml_is(const kx_yaml_node *n, const char *s);
/* True for an unquoted scalar that is YAML null ("", "~", "null", "Null", "NULL"). */
bool kx_yaml_is_null(const kx_yaml_node *n);

/* Typed scalar readers: return 0, or -EINVAL with err set at the node's position. */
int kx_yaml_str(const kx_yaml_node *n, const char *file, const char **out, kx_err *err);
int kx_yaml_int(const kx_yaml_node *n, const char *file, long long min, long long max,
                long long *out, kx_err *err);
int kx_yaml_bool(const kx_yaml_node *n, const char *file, bool *out, kx_err *err);
/* Durations: "300", "300s", "5m", "2h", "1d", "500ms" -> milliseconds. */
int kx_yaml_duration_ms(const kx_yaml_node *n, const char *file, long long *out_ms, kx_err *err);
int kx_parse_duration_ms(const char *s, long long *out_ms);

/* Every key of map must be one of allowed (a NULL-terminated list); the first other key is
 * an error "unknown key \"x\"" at that key, so a typo never silently disables a setting.
 * map must be a map (callers word their own error for other nodes). */
int kx_yaml_check_keys(const kx_yaml_node *map, const char *file, const char *const *allowed,
                       kx_err *err);

/* Sets err to "file:line:col: msg" at node n. Returns -EINVAL. */
int kx_yaml_err(kx_err *err, const char *file, const kx_yaml_node *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
