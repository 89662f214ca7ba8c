/*
 * Named lists (docs/rules.md, "Lists and placeholders"): NAME.list files in the rules tree,
 * one value a line, which Sigma's placeholders stand for -- `User|expand: '%terminated_users%'`
 * matches any value of terminated_users.list. Read before any rule (a rule anywhere may use
 * any list), into the ruleset's arena, so they reload with the rules.
 *
 * A line is trimmed of surrounding blanks; an empty line, or one whose first character is
 * '#', is skipped (a value cannot start with '#'). Values are taken as written: what they
 * mean is the modifiers' (`expand|cidr` for networks, `expand|contains`, ...).
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

/* The list NAME from path ".../NAME.list" into l. */
static int load_one(kx__ctx *c, const char *path, kx__list *l)
{
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
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    l->name = kx__strndup(c, base, strlen(base) - 5); /* without ".list" */
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
            if (prev)
                rc = kx_err_set(err, l->file, 0, 0, "list \"%s\" is defined twice (first in %s)",
                                l->name, prev->file);
            else
                rs->lists.n++;
        }
        if (rc != -ENOMEM)
            rc = kx__diag_error(dg, rc, err);
    }
    return rc;
}
