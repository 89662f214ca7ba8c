/*
 * Rule file discovery: the paths given to kx_ruleset_load -> the list of files to load, in
 * a fixed order (paths as given; a directory walked recursively, its *.yml and *.yaml files
 * sorted by path, leaving out rules' tests: *.tests.yml, *.tests.yaml), so rule order -- the order
 * matches are reported in -- never depends on the file system.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "rules_int.h"

#define KX__MAX_DIR_DEPTH 32

int kx__strvec_push(strvec *sv, char *s)
{
    if (!s)
        return -ENOMEM;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 64;
        char **v = realloc(sv->v, cap * sizeof(*v));
        if (!v) {
            free(s);
            return -ENOMEM;
        }
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = s;
    return 0;
}

void kx__strvec_free(strvec *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

/* NAME.list, NAME.list.yml, NAME.list.yaml: a named list of values (lists.c), for `expand`
 * placeholders. */
static bool has_list_ext(const char *name)
{
    size_t n = strlen(name);
    return ends_with(name, n, ".list") || ends_with(name, n, ".list.yml") ||
           ends_with(name, n, ".list.yaml");
}

/* *.yml and *.yaml, but not a rule's tests (RULE.tests.yml, run by `klaxon rules test`) nor a
 * list. */
static bool has_rule_ext(const char *name)
{
    size_t n = strlen(name);
    return (ends_with(name, n, ".yml") || ends_with(name, n, ".yaml")) &&
           !ends_with(name, n, ".tests.yml") && !ends_with(name, n, ".tests.yaml") &&
           !has_list_ext(name);
}

static int walk(const char *dir, int depth, strvec *out, strvec *lists, kx_err *err)
{
    if (depth > KX__MAX_DIR_DEPTH)
        return kx_err_set(err, dir, 0, 0, "directories nested too deeply (symlink loop?)");
    DIR *d = opendir(dir);
    if (!d)
        return kx_err_set(err, dir, 0, 0, "%s", strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.') /* ., .. and hidden files such as editor swap files */
            continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *path = malloc(len);
        if (!path) {
            rc = kx_err_set(err, dir, 0, 0, "out of memory");
            break;
        }
        snprintf(path, len, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0) {
            rc = kx_err_set(err, path, 0, 0, "%s", strerror(errno));
            free(path);
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk(path, depth + 1, out, lists, err);
            free(path);
        } else if (S_ISREG(st.st_mode) && has_rule_ext(de->d_name)) {
            if (kx__strvec_push(out, path))
                rc = kx_err_set(err, dir, 0, 0, "out of memory");
        } else if (S_ISREG(st.st_mode) && lists && has_list_ext(de->d_name)) {
            if (kx__strvec_push(lists, path))
                rc = kx_err_set(err, dir, 0, 0, "out of memory");
        } else {
            free(path);
        }
    }
    closedir(d);
    return rc;
}

uint64_t kx_rule_files_fingerprint(const char *const *paths, size_t npaths)
{
    strvec files = {0};
    kx_err err;
    uint64_t h = 0x6b78; /* never 0 for a readable set, even an empty one */
    for (size_t i = 0; i < npaths; i++)
        if (kx__rule_files(paths[i], &files, &files, &err)) {
            kx__strvec_free(&files);
            return 0;
        }
    for (size_t i = 0; i < files.n; i++) {
        struct stat st;
        int64_t v[3] = {0, 0, 0};
        if (stat(files.v[i], &st) == 0) {
            v[0] = (int64_t)st.st_size;
            v[1] = (int64_t)st.st_mtim.tv_sec;
            v[2] = (int64_t)st.st_mtim.tv_nsec;
        }
        h = kx_hash64(files.v[i], strlen(files.v[i]) + 1, h);
        h = kx_hash64(v, sizeof(v), h);
    }
    kx__strvec_free(&files);
    return h ? h : 1;
}

int kx__rule_files(const char *path, strvec *out, strvec *lists, kx_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return kx_err_set(err, path, 0, 0, "%s", strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        /* A rule's tests named along with the rules (a shell glob of the directory) are
         * no rule either. */
        size_t n = strlen(path);
        if (ends_with(path, n, ".tests.yml") || ends_with(path, n, ".tests.yaml"))
            return 0;
        if (lists && has_list_ext(path)) {
            if (kx__strvec_push(lists, strdup(path)))
                return kx_err_set(err, path, 0, 0, "out of memory");
            return 0;
        }
        if (kx__strvec_push(out, strdup(path)))
            return kx_err_set(err, path, 0, 0, "out of memory");
        return 0;
    }
    size_t first = out->n, lfirst = lists ? lists->n : 0;
    int rc = walk(path, 0, out, lists, err);
    if (!rc)
        qsort(out->v + first, out->n - first, sizeof(char *), cmp_str);
    if (!rc && lists && lists != out && lists->n > lfirst + 1)
        qsort(lists->v + lfirst, lists->n - lfirst, sizeof(char *), cmp_str);
    return rc;
}
