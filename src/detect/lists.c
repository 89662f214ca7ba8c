/*
 * Named lists (docs/rules.md, "Lists and placeholders"): files in the rules tree that
 * Sigma's placeholders stand for -- `User|expand: '%terminated_users%'` matches any value of
 * the list terminated_users. Read before any rule (a rule anywhere may use any list), into
 * the ruleset's arena, so they reload with the rules.
 *
 * NAME.list is plain text, one value a line: a line is trimmed of surrounding blanks; an
 * empty line, or one whose first character is '#', is skipped (a value cannot start with
 * '#'). NAME.list.yml (or .yaml) is YAML: a sequence of values, or a map with `values` and
 * `description`, and `redis` for a live list -- a Redis set another system (HR offboarding,
 * an IaC pipeline) updates while klaxon runs, read by app/livelists.c and matched as a set
 * (liveset.c) rather than expanded. Values are taken as written: what they mean is the
 * modifiers' (`expand|cidr` for networks, `expand|contains`, ...).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

#define KX__LIST_MAX_BYTES (64u << 20) /* one list file at most (a typo'd path to a disk?) */

const kx__list *kx__list_find(const kx__lists *ls, const char *name, size_t n)
{
    for (size_t i = 0; ls && i < ls->n; i++)
        if (strlen(ls->v[i].name) == n && !memcmp(ls->v[i].name, name, n))
            return &ls->v[i];
    return NULL;
}

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

#define KX__LIST_REFRESH_DEFAULT_MS 30000
#define KX__LIST_REFRESH_MIN_MS 100

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

/* The values of a YAML sequence (scalars) into the arena. */
static int yaml_values(kx__ctx *c, const kx_yaml_node *seq, kx__list *l)
{
    if (seq->type != KX_YAML_SEQ)
        return kx_yaml_err(c->err, c->file, seq, "expected a list of values");
    const char **vals = kx__alloc(c, (seq->n ? seq->n : 1) * sizeof(*vals));
    if (!vals)
        return -ENOMEM;
    for (size_t i = 0; i < seq->n; i++) {
        const kx_yaml_node *v = seq->vals[i];
        if (v->type != KX_YAML_SCALAR || kx_yaml_is_null(v))
            return kx_yaml_err(c->err, c->file, v, "expected a value (a string or number)");
        if (memchr(v->str, '\0', v->len))
            return kx_yaml_err(c->err, c->file, v, "a value holds a NUL byte");
        if (!(vals[i] = kx__strndup(c, v->str, v->len)))
            return -ENOMEM;
    }
    l->vals = vals;
    l->n = seq->n;
    return 0;
}

/* `redis: KEY` or `redis: {key: KEY, refresh: DURATION}`. */
static int yaml_redis(kx__ctx *c, const kx_yaml_node *n, kx__list *l)
{
    const char *key = NULL;
    long long refresh = KX__LIST_REFRESH_DEFAULT_MS;
    const kx_yaml_node *kn = n;
    if (n->type == KX_YAML_MAP) {
        static const char *const allowed[] = {"key", "refresh", NULL};
        int rc = kx_yaml_check_keys(n, c->file, allowed, c->err);
        if (rc)
            return rc;
        if (!(kn = kx_yaml_get(n, "key")))
            return kx_yaml_err(c->err, c->file, n, "redis: needs a key (the Redis set)");
        const kx_yaml_node *r = kx_yaml_get(n, "refresh");
        if (r && (rc = kx_yaml_duration_ms(r, c->file, &refresh, c->err)))
            return rc;
        if (r && (refresh < KX__LIST_REFRESH_MIN_MS || refresh > 86400000LL))
            return kx_yaml_err(c->err, c->file, r, "refresh: between 100ms and 1d");
    }
    int rc = kx_yaml_str(kn, c->file, &key, c->err);
    if (rc)
        return rc;
    if (!*key || strlen(key) > 1024)
        return kx_yaml_err(c->err, c->file, kn, "a Redis key of 1 to 1024 bytes");
    if (!(l->redis_key = kx__strndup(c, key, strlen(key))))
        return -ENOMEM;
    l->refresh_ms = refresh;
    return 0;
}

/* A YAML list: a sequence of values, or a map (values, description, redis). */
static int load_yaml(kx__ctx *c, const char *path, kx__list *l)
{
    kx_yaml_doc *doc = NULL;
    int rc = kx_yaml_load_file(path, &doc, c->err);
    if (rc)
        return rc;
    const kx_yaml_node *root = doc->root;
    if (!root || doc->next) {
        rc = kx_err_set(c->err, path, 1, 1, "a list file holds one YAML document");
    } else if (root->type == KX_YAML_SEQ) {
        rc = yaml_values(c, root, l);
    } else if (root->type != KX_YAML_MAP) {
        rc = kx_yaml_err(c->err, path, root, "expected a list of values, or a map with values");
    } else {
        static const char *const allowed[] = {"description", "values", "redis", NULL};
        const kx_yaml_node *vals = kx_yaml_get(root, "values");
        const kx_yaml_node *redis = kx_yaml_get(root, "redis");
        rc = kx_yaml_check_keys(root, path, allowed, c->err);
        if (!rc && !vals && !redis)
            rc = kx_yaml_err(c->err, path, root, "a list needs values, redis, or both");
        if (!rc && vals)
            rc = yaml_values(c, vals, l);
        if (!rc && redis)
            rc = yaml_redis(c, redis, l);
    }
    kx_yaml_free(doc);
    if (!rc && !l->vals && !(l->vals = kx__alloc(c, sizeof(*l->vals))))
        rc = -ENOMEM;
    return rc;
}

/* A live list's state: not read yet. */
static int live_new(kx__ctx *c, kx__list *l)
{
    kx__live *live = calloc(1, sizeof(*live));
    size_t n = strlen(l->name) + 64;
    if (!live || !(live->why = malloc(n))) {
        free(live);
        return kx_err_set(c->err, l->file, 0, 0, "out of memory"), -ENOMEM;
    }
    snprintf(live->why, n, "list %s is not read from Redis yet", l->name);
    l->live = live;
    return 0;
}

void kx__lists_free(kx__lists *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        kx__live *live = ls->v[i].live;
        if (live) {
            kx__liveset_free(live->set);
            free(live->why);
            free(live);
        }
    }
    ls->n = 0;
}

/* The list NAME from path ".../NAME.list" (text) or ".../NAME.list.yml" into l. */
static int load_one(kx__ctx *c, const char *path, kx__list *l)
{
    memset(l, 0, sizeof(*l));
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    bool yaml = !ends_with(path, ".list");
    size_t suffix = ends_with(path, ".list") ? 5 : ends_with(path, ".list.yml") ? 9 : 10;
    if (yaml) {
        int rc = load_yaml(c, path, l);
        if (rc)
            return rc;
        l->name = kx__strndup(c, base, strlen(base) - suffix);
        l->file = kx__strndup(c, path, strlen(path));
        if (!l->name || !l->file)
            return -ENOMEM;
        return l->redis_key ? live_new(c, l) : 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return kx_err_set(c->err, path, 0, 0, "%s", strerror(errno));
    kx_buf text;
    kx_buf_init(&text, KX__LIST_MAX_BYTES);
    char chunk[65536];
    size_t got;
    int rc = 0;
    while (!rc && (got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = kx_buf_append(&text, chunk, got);
    bool bad = ferror(f);
    fclose(f);
    if (rc || bad) {
        kx_buf_fini(&text);
        return rc == -E2BIG ? kx_err_set(c->err, path, 0, 0, "a list is at most %u MiB",
                                         KX__LIST_MAX_BYTES >> 20)
               : rc         ? kx_err_set(c->err, path, 0, 0, "out of memory")
                            : kx_err_set(c->err, path, 0, 0, "read error");
    }
    size_t cap = 1;
    for (size_t i = 0; i < text.len; i++)
        cap += text.data[i] == '\n';
    const char **vals = kx__alloc(c, cap * sizeof(*vals));
    size_t n = 0;
    int line = 0;
    for (size_t i = 0; vals && i < text.len;) {
        line++;
        const char *p = text.data + i, *nl = memchr(p, '\n', text.len - i);
        size_t len = nl ? (size_t)(nl - p) : text.len - i;
        i += len + 1;
        while (len && blank(*p))
            p++, len--;
        while (len && blank(p[len - 1]))
            len--;
        if (!len || *p == '#')
            continue;
        if (memchr(p, '\0', len)) {
            rc = kx_err_set(c->err, path, line, 1, "a value holds a NUL byte");
            break;
        }
        if (!(vals[n++] = kx__strndup(c, p, len))) {
            rc = -ENOMEM;
            break;
        }
    }
    kx_buf_fini(&text);
    if (!vals)
        return -ENOMEM;
    if (rc)
        return rc;
    l->name = kx__strndup(c, base, strlen(base) - suffix);
    l->file = kx__strndup(c, path, strlen(path));
    l->vals = vals;
    l->n = n;
    return l->name && l->file ? 0 : -ENOMEM;
}

int kx__lists_load(kx_ruleset *rs, const strvec *files, kx__diag *dg, kx_err *err)
{
    kx__ctx c = {.arena = &rs->arena, .res = &rs->res, .err = err, .rx = &rs->rx, .dg = dg};
    if (!files->n)
        return 0;
    rs->lists.v = kx__alloc(&c, files->n * sizeof(*rs->lists.v));
    if (!rs->lists.v)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < files->n && !rc; i++) {
        c.file = files->v[i];
        kx__list *l = &rs->lists.v[rs->lists.n];
        if ((rc = load_one(&c, files->v[i], l)) == 0) {
            const kx__list *prev = kx__list_find(&rs->lists, l->name, strlen(l->name));
            if (prev) {
                rc = kx_err_set(err, l->file, 0, 0, "list \"%s\" is defined twice (first in %s)",
                                l->name, prev->file);
                kx__lists_free(&(kx__lists){.v = l, .n = 1});
            } else {
                rs->lists.n++;
            }
        }
        if (rc != -ENOMEM)
            rc = kx__diag_error(dg, rc, err);
    }
    return rc;
}

/* ---- live lists: the public face (klaxon/detect.h) ---- */

static kx__list *live_at(const kx_ruleset *rs, size_t i)
{
    for (size_t j = 0; j < rs->lists.n; j++)
        if (rs->lists.v[j].live && i-- == 0)
            return &rs->lists.v[j];
    return NULL;
}

size_t kx_ruleset_live_lists(const kx_ruleset *rs)
{
    size_t n = 0;
    for (size_t j = 0; j < rs->lists.n; j++)
        n += rs->lists.v[j].live != NULL;
    return n;
}

void kx_ruleset_live_list(const kx_ruleset *rs, size_t i, kx_live_list *out)
{
    const kx__list *l = live_at(rs, i);
    *out = (kx_live_list){0};
    if (!l)
        return;
    *out = (kx_live_list){.name = l->name,
                          .key = l->redis_key,
                          .refresh_ms = l->refresh_ms,
                          .nvalues = kx__liveset_size(l->live->set),
                          .loaded_ms = l->live->loaded_ms};
}

int kx_ruleset_live_list_set(kx_ruleset *rs, size_t i, const char *vals, size_t len, size_t n,
                             int64_t now_ms)
{
    kx__list *l = live_at(rs, i);
    if (!l)
        return -EINVAL;
    /* the file's values first, then the set's */
    kx_buf all;
    kx_buf_init(&all, 0);
    int rc = 0;
    for (size_t k = 0; k < l->n && !rc; k++)
        rc = kx_buf_append(&all, l->vals[k], strlen(l->vals[k]) + 1);
    if (!rc && len)
        rc = kx_buf_append(&all, vals, len);
    kx__liveset *set = NULL;
    if (!rc)
        rc = kx__liveset_build(all.data, all.len, l->n + n, l->n, &set);
    kx_buf_fini(&all);
    if (rc)
        return rc;
    kx__liveset_free(l->live->set);
    l->live->set = set;
    l->live->loaded_ms = now_ms;
    return 0;
}

void kx_ruleset_carry_live_lists(kx_ruleset *to, const kx_ruleset *from)
{
    if (!from)
        return;
    for (size_t i = 0, k = 0; i < to->lists.n; i++) {
        kx__list *l = &to->lists.v[i];
        if (!l->live)
            continue;
        size_t at = k++;
        const kx__list *o = kx__list_find(&from->lists, l->name, strlen(l->name));
        if (!o || !o->live || !o->live->set || strcmp(l->redis_key, o->redis_key))
            continue;
        /* the set's values with the new file's: a value taken out of the file is gone */
        const char *vals;
        size_t len, n;
        kx__liveset_tail(o->live->set, &vals, &len, &n);
        if (kx_ruleset_live_list_set(to, at, vals, len, n, o->live->loaded_ms))
            continue; /* out of memory: the list waits for its next read */
    }
}
