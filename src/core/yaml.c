/*
 * YAML documents as a small tree with positions, built from libyaml's document API.
 * libyaml resolves aliases to node indexes, so an alias simply shares the anchored node.
 * All nodes of one stream live in one allocation list owned by the first document.
 */
#include "klaxon/yaml.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct yaml_store {
    void **ptrs;
    size_t n, cap;
} yaml_store;

static void *store_alloc(yaml_store *st, size_t size)
{
    if (st->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 64;
        void **np = realloc(st->ptrs, ncap * sizeof(*np));
        if (!np)
            return NULL;
        st->ptrs = np;
        st->cap = ncap;
    }
    void *p = calloc(1, size ? size : 1);
    if (p)
        st->ptrs[st->n++] = p;
    return p;
}

static void store_free(yaml_store *st)
{
    for (size_t i = 0; i < st->n; i++)
        free(st->ptrs[i]);
    free(st->ptrs);
    free(st);
}

/* Converts libyaml node idx (1-based) of doc into our tree; memo avoids re-building shared
 * (aliased) nodes and bounds the work on alias bombs to one node per source node. */
static kx_yaml_node *convert(yaml_document_t *doc, int idx, kx_yaml_node **memo, yaml_store *st,
                             int depth)
{
    if (idx < 1)
        return NULL;
    if (memo[idx])
        return memo[idx];
    if (depth > 256)
        return NULL;
    yaml_node_t *yn = yaml_document_get_node(doc, idx);
    if (!yn)
        return NULL;
    kx_yaml_node *n = store_alloc(st, sizeof(*n));
    if (!n)
        return NULL;
    memo[idx] = n;
    n->line = (int)yn->start_mark.line + 1;
    n->col = (int)yn->start_mark.column + 1;
    switch (yn->type) {
    case YAML_SCALAR_NODE: {
        n->type = KX_YAML_SCALAR;
        char *s = store_alloc(st, yn->data.scalar.length + 1);
        if (!s)
            return NULL;
        memcpy(s, yn->data.scalar.value, yn->data.scalar.length);
        n->str = s;
        n->len = yn->data.scalar.length;
        n->quoted = yn->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    yn->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE ||
                    yn->data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
                    yn->data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
        break;
    }
    case YAML_SEQUENCE_NODE: {
        n->type = KX_YAML_SEQ;
        size_t cnt = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
        n->vals = store_alloc(st, cnt * sizeof(*n->vals));
        if (!n->vals)
            return NULL;
        for (size_t i = 0; i < cnt; i++) {
            n->vals[i] = convert(doc, yn->data.sequence.items.start[i], memo, st, depth + 1);
            if (!n->vals[i])
                return NULL;
        }
        n->n = cnt;
        break;
    }
    case YAML_MAPPING_NODE: {
        n->type = KX_YAML_MAP;
        size_t cnt = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
        n->keys = store_alloc(st, cnt * sizeof(*n->keys));
        n->vals = store_alloc(st, cnt * sizeof(*n->vals));
        if (!n->keys || !n->vals)
            return NULL;
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_pair_t *pr = &yn->data.mapping.pairs.start[i];
            n->keys[i] = convert(doc, pr->key, memo, st, depth + 1);
            n->vals[i] = convert(doc, pr->value, memo, st, depth + 1);
            if (!n->keys[i] || !n->vals[i])
                return NULL;
        }
        n->n = cnt;
        break;
    }
    default:
        return NULL;
    }
    return n;
}

static int load(const char *name, yaml_parser_t *parser, kx_yaml_doc **out, kx_err *err)
{
    yaml_store *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    kx_yaml_doc *first = NULL, **tail = &first;
    int rc = 0;
    for (;;) {
        yaml_document_t ydoc;
        if (!yaml_parser_load(parser, &ydoc)) {
            const yaml_mark_t *m = parser->problem_mark.line || parser->problem_mark.column
                                       ? &parser->problem_mark
                                       : &parser->context_mark;
            rc = kx_err_set(err, name, (int)m->line + 1, (int)m->column + 1, "YAML: %s%s%s",
                            parser->problem ? parser->problem : "parse error",
                            parser->context ? " " : "", parser->context ? parser->context : "");
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&ydoc);
        if (!root) {
            /* End of stream (an empty trailing document is also how libyaml ends). */
            yaml_document_delete(&ydoc);
            break;
        }
        int nnodes = (int)(ydoc.nodes.top - ydoc.nodes.start);
        kx_yaml_node **memo = calloc((size_t)nnodes + 1, sizeof(*memo));
        kx_yaml_doc *d = store_alloc(st, sizeof(*d));
        if (!memo || !d) {
            free(memo);
            yaml_document_delete(&ydoc);
            rc = -ENOMEM;
            break;
        }
        d->root = convert(&ydoc, 1, memo, st, 0);
        int line = (int)root->start_mark.line + 1, col = (int)root->start_mark.column + 1;
        free(memo);
        yaml_document_delete(&ydoc);
        if (!d->root) {
            rc = kx_err_set(err, name, line, col, "YAML: document too deep or out of memory");
            break;
        }
        *tail = d;
        tail = &d->next;
    }
    if (rc) {
        store_free(st);
        return rc;
    }
    if (!first) {
        /* An empty file is one empty document, so callers always get a doc. */
        first = store_alloc(st, sizeof(*first));
        if (!first) {
            store_free(st);
            return -ENOMEM;
        }
    }
    first->priv = st;
    *out = first;
    return 0;
}

int kx_yaml_load_mem(const char *name, const char *buf, size_t len, kx_yaml_doc **out, kx_err *err)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return -ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    int rc = load(name, &parser, out, err);
    yaml_parser_delete(&parser);
    return rc;
}

int kx_yaml_load_file(const char *path, kx_yaml_doc **out, kx_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kx_err_set(err, path, 0, 0, "cannot open: %s", strerror(errno));
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return -ENOMEM;
    }
    yaml_parser_set_input_file(&parser, f);
    int rc = load(path, &parser, out, err);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

void kx_yaml_free(kx_yaml_doc *doc)
{
    if (doc && doc->priv)
        store_free(doc->priv);
}

const kx_yaml_node *kx_yaml_get(const kx_yaml_node *map, const char *key)
{
    if (!map || map->type != KX_YAML_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < map->n; i++) {
        const kx_yaml_node *k = map->keys[i];
        if (k->type == KX_YAML_SCALAR && k->len == kl && memcmp(k->str, key, kl) == 0)
            return map->vals[i];
    }
    return NULL;
}

bool kx_yaml_is(const kx_yaml_node *n, const char *s)
{
    return n && n->type == KX_YAML_SCALAR && n->len == strlen(s) && memcmp(n->str, s, n->len) == 0;
}

bool kx_yaml_is_null(const kx_yaml_node *n)
{
    if (!n || n->type != KX_YAML_SCALAR || n->quoted)
        return false;
    return n->len == 0 || kx_yaml_is(n, "~") || kx_yaml_is(n, "null") || kx_yaml_is(n, "Null") ||
           kx_yaml_is(n, "NULL");
}

int kx_yaml_err(kx_err *err, const char *file, const kx_yaml_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[sizeof(err->msg)];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kx_err_set(err, file, n ? n->line : 0, n ? n->col : 0, "%s", msg);
}

int kx_yaml_check_keys(const kx_yaml_node *map, const char *file, const char *const *allowed,
                       kx_err *err)
{
    for (size_t i = 0; i < map->n; i++) {
        const kx_yaml_node *k = map->keys[i];
        bool ok = false;
        for (size_t j = 0; allowed[j] && !ok; j++)
            ok = kx_yaml_is(k, allowed[j]);
        if (!ok)
            return kx_yaml_err(err, file, k, "unknown key \"%.*s\"",
                               (int)(k->type == KX_YAML_SCALAR ? k->len : 0),
                               k->type == KX_YAML_SCALAR ? k->str : "");
    }
    return 0;
}

int kx_yaml_str(const kx_yaml_node *n, const char *file, const char **out, kx_err *err)
{
    if (!n || n->type != KX_YAML_SCALAR)
        return kx_yaml_err(err, file, n, "expected a string");
    *out = n->str;
    return 0;
}

int kx_yaml_int(const kx_yaml_node *n, const char *file, long long min, long long max,
                long long *out, kx_err *err)
{
    if (!n || n->type != KX_YAML_SCALAR || n->len == 0)
        return kx_yaml_err(err, file, n, "expected an integer");
    char *end;
    errno = 0;
    long long v = strtoll(n->str, &end, 10);
    if (errno || *end)
        return kx_yaml_err(err, file, n, "expected an integer, got \"%s\"", n->str);
    if (v < min || v > max)
        return kx_yaml_err(err, file, n, "%lld is out of range [%lld, %lld]", v, min, max);
    *out = v;
    return 0;
}

int kx_yaml_bool(const kx_yaml_node *n, const char *file, bool *out, kx_err *err)
{
    if (kx_yaml_is(n, "true") || kx_yaml_is(n, "True") || kx_yaml_is(n, "yes")) {
        *out = true;
        return 0;
    }
    if (kx_yaml_is(n, "false") || kx_yaml_is(n, "False") || kx_yaml_is(n, "no")) {
        *out = false;
        return 0;
    }
    return kx_yaml_err(err, file, n, "expected true or false");
}

int kx_parse_duration_ms(const char *s, long long *out_ms)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -EINVAL;
    long long mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else if (!strcmp(end, "d"))
        mult = 86400000;
    else if (!strcmp(end, "w"))
        mult = 7 * 86400000LL;
    else
        return -EINVAL;
    if (v > LLONG_MAX / mult)
        return -EINVAL;
    *out_ms = v * mult;
    return 0;
}

int kx_yaml_duration_ms(const kx_yaml_node *n, const char *file, long long *out_ms, kx_err *err)
{
    if (!n || n->type != KX_YAML_SCALAR || kx_parse_duration_ms(n->str, out_ms))
        return kx_yaml_err(err, file, n,
                           "expected a duration like 30s, 5m, 2h, 1d or 500ms, got \"%s\"",
                           n && n->type == KX_YAML_SCALAR ? n->str : "(not a scalar)");
    return 0;
}
