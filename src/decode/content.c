/*
 * Decoders as content (docs/sources.md): the decoders/ tree beside rules/ says, per log
 * source, which syslog program it is, the logsource its events belong to, the field
 * extractors (PCRE2 named groups) that turn its messages into fields, the fields it
 * produces, and sample lines with the fields each must give:
 *
 * A decoder without a logsource only adds its extractors to the programs it names (PAM's
 * messages, which whichever program authenticates writes). Example:
 *
 *   title: OpenSSH server
 *   program: [sshd, sshd-session]       # OpenSSH 9.8+ logs as sshd-session
 *   logsource: {product: linux, service: sshd}
 *   extractors:
 *     - pattern: '^Failed (?<auth_method>\S+) for (?<user>\S+) from (?<src_ip>\S+) ...'
 *   fields: [outcome, auth_method, user, src_ip, src_port]
 *   samples:
 *     - line: 'Mar 10 09:20:05 web-01 sshd[20611]: Failed password for root from ...'
 *       fields: {outcome: Failed, user: root}
 *
 * A set is loaded once (every file's every document checked, extractors compiled to find
 * their errors at file:line:col) and kept as YAML; kx_decoder_create_with adds its programs
 * and extractors to a decoder, except those of a program the config's own `decode` section
 * names: the config adds to the content and overrides it program by program.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "decode/decode_int.h"

struct kx_decoder_set {
    kx_yaml_doc **docs; /* one per file (NULL: not loaded) */
    char **files;
    size_t n;                  /* files */
    const kx_yaml_node **defs; /* every decoder document's root, in load order */
    const char **def_files;
    size_t ndefs;
};

static const char *const def_keys[] = {"title",      "description", "program", "logsource",
                                       "extractors", "fields",      "samples", NULL};

static bool yml(const char *name)
{
    size_t n = strlen(name);
    return (n > 4 && !strcmp(name + n - 4, ".yml")) || (n > 5 && !strcmp(name + n - 5, ".yaml"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the *.yml / *.yaml files under path (or path itself), sorted per directory. */
static int collect(const char *path, char ***v, size_t *n, size_t *cap, int depth, kx_err *err)
{
    struct stat st;
    if (stat(path, &st))
        return kx_err_set(err, path, 0, 0, "%s", strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 16;
            char **nv = realloc(*v, c * sizeof(*nv));
            if (!nv)
                return kx_err_set(err, path, 0, 0, "out of memory");
            *v = nv;
            *cap = c;
        }
        if (!((*v)[*n] = strdup(path)))
            return kx_err_set(err, path, 0, 0, "out of memory");
        (*n)++;
        return 0;
    }
    if (depth > 16)
        return kx_err_set(err, path, 0, 0, "directories nested too deep");
    DIR *d = opendir(path);
    if (!d)
        return kx_err_set(err, path, 0, 0, "%s", strerror(errno));
    size_t first = *n;
    int rc = 0;
    for (struct dirent *de; !rc && (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
        if (stat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && yml(de->d_name)))
            rc = collect(p, v, n, cap, depth + 1, err);
    }
    closedir(d);
    if (!rc)
        qsort(*v + first, *n - first, sizeof(**v), cmp_str);
    return rc;
}

/* The program names of a decoder document: a string or a list of them. */
static int programs_of(const kx_yaml_node *def, const char *file, const kx_yaml_node *const **v,
                       size_t *n, kx_err *err)
{
    const kx_yaml_node *p = kx_yaml_get(def, "program");
    if (!p)
        return kx_yaml_err(err, file, def, "a decoder needs a program (its syslog program name)");
    *v = p->type == KX_YAML_SEQ ? (const kx_yaml_node *const *)p->vals
                                : (const kx_yaml_node *const *)&def->vals[0];
    if (p->type != KX_YAML_SEQ) {
        /* one name: find its slot in the map to point at it */
        for (size_t i = 0; i < def->n; i++)
            if (def->vals[i] == p)
                *v = (const kx_yaml_node *const *)&def->vals[i];
    }
    *n = p->type == KX_YAML_SEQ ? p->n : 1;
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i]->type != KX_YAML_SCALAR || !(*v)[i]->len)
            return kx_yaml_err(err, file, (*v)[i], "a program is a non-empty name");
    return *n ? 0 : kx_yaml_err(err, file, p, "a decoder needs a program");
}

static int check_def(const kx_yaml_node *def, const char *file, kx_err *err)
{
    if (def->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, def, "a decoder is a map (title, program, logsource...)");
    int rc = kx_yaml_check_keys(def, file, def_keys, err);
    if (rc)
        return rc;
    const kx_yaml_node *const *progs;
    size_t np;
    if ((rc = programs_of(def, file, &progs, &np, err)))
        return rc;
    /* without a logsource a decoder only adds extractors to programs another one decodes
     * (PAM's messages, written by whichever program authenticates) */
    const kx_yaml_node *ls = kx_yaml_get(def, "logsource");
    if (ls && ls->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, ls, "a logsource is a map (product, service, category)");
    if (!ls && !kx_yaml_get(def, "extractors"))
        return kx_yaml_err(err, file, def,
                           "a decoder needs a logsource (product, service, category), or "
                           "extractors for programs another decoder gives one");
    const kx_yaml_node *xs = kx_yaml_get(def, "extractors");
    if (xs && xs->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, xs, "extractors must be a list");
    for (size_t i = 0; xs && i < xs->n; i++) {
        if (xs->vals[i]->type == KX_YAML_MAP && kx_yaml_get(xs->vals[i], "program"))
            return kx_yaml_err(err, file, kx_yaml_get(xs->vals[i], "program"),
                               "an extractor of a decoder is for its program: no program here");
        kx__extractor x;
        if ((rc = kx__extractor_init(&x, xs->vals[i], file, err)))
            return rc;
        kx__extractor_fini(&x);
    }
    const kx_yaml_node *f = kx_yaml_get(def, "fields");
    if (f && f->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, f, "fields: the list of fields the decoder produces");
    const kx_yaml_node *s = kx_yaml_get(def, "samples");
    if (s && s->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, s, "samples: a list of {line, fields}");
    for (size_t i = 0; s && i < s->n; i++) {
        static const char *const skeys[] = {"line", "fields", NULL};
        const kx_yaml_node *one = s->vals[i], *line;
        if (one->type != KX_YAML_MAP)
            return kx_yaml_err(err, file, one, "a sample is a map {line, fields}");
        if ((rc = kx_yaml_check_keys(one, file, skeys, err)))
            return rc;
        if (!(line = kx_yaml_get(one, "line")) || line->type != KX_YAML_SCALAR)
            return kx_yaml_err(err, file, one, "a sample needs its line");
        const kx_yaml_node *want = kx_yaml_get(one, "fields");
        if (want && want->type != KX_YAML_MAP)
            return kx_yaml_err(err, file, want, "a sample's fields: a map of field -> value");
    }
    return 0;
}

int kx_decoder_set_load(const char *const *paths, size_t npaths, kx_decoder_set **out, kx_err *err)
{
    kx_decoder_set *s = calloc(1, sizeof(*s));
    size_t cap = 0;
    if (!s)
        return kx_err_set(err, NULL, 0, 0, "out of memory");
    int rc = 0;
    for (size_t i = 0; !rc && i < npaths; i++)
        rc = collect(paths[i], &s->files, &s->n, &cap, 0, err);
    if (!rc && !(s->docs = calloc(s->n ? s->n : 1, sizeof(*s->docs))))
        rc = kx_err_set(err, NULL, 0, 0, "out of memory");
    size_t ndefs = 0;
    for (size_t i = 0; !rc && i < s->n; i++) {
        rc = kx_yaml_load_file(s->files[i], &s->docs[i], err);
        for (kx_yaml_doc *d = rc ? NULL : s->docs[i]; d; d = d->next)
            ndefs += d->root != NULL;
    }
    if (!rc && (!(s->defs = calloc(ndefs ? ndefs : 1, sizeof(*s->defs))) ||
                !(s->def_files = calloc(ndefs ? ndefs : 1, sizeof(*s->def_files)))))
        rc = kx_err_set(err, NULL, 0, 0, "out of memory");
    for (size_t i = 0; !rc && i < s->n; i++)
        for (kx_yaml_doc *d = s->docs[i]; !rc && d; d = d->next) {
            if (!d->root)
                continue;
            if ((rc = check_def(d->root, s->files[i], err)))
                break;
            s->defs[s->ndefs] = d->root;
            s->def_files[s->ndefs++] = s->files[i];
        }
    /* one program, one logsource: a second would make which one applies depend on file
     * order (decoders without a logsource only add extractors) */
    for (size_t a = 0; !rc && a < s->ndefs; a++)
        for (size_t b = 0; !rc && b < a; b++) {
            if (!kx_yaml_get(s->defs[a], "logsource") || !kx_yaml_get(s->defs[b], "logsource"))
                continue;
            const kx_yaml_node *const *pa, *const *pb;
            size_t na = kx_decoder_def_programs(s->defs[a], &pa);
            size_t nb = kx_decoder_def_programs(s->defs[b], &pb);
            for (size_t i = 0; !rc && i < na; i++)
                for (size_t j = 0; !rc && j < nb; j++)
                    if (!strcmp(pa[i]->str, pb[j]->str))
                        rc = kx_yaml_err(err, s->def_files[a], pa[i],
                                         "program \"%s\" has a decoder already (%s)", pa[i]->str,
                                         s->def_files[b]);
        }
    if (rc) {
        kx_decoder_set_destroy(s);
        return rc < 0 ? rc : -EINVAL;
    }
    *out = s;
    return 0;
}

void kx_decoder_set_destroy(kx_decoder_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        if (s->docs)
            kx_yaml_free(s->docs[i]);
        free(s->files[i]);
    }
    free(s->docs);
    free(s->files);
    free(s->defs);
    free(s->def_files);
    free(s);
}

size_t kx_decoder_set_size(const kx_decoder_set *s)
{
    return s ? s->ndefs : 0;
}

const kx_yaml_node *kx_decoder_set_at(const kx_decoder_set *s, size_t i, const char **file)
{
    if (!s || i >= s->ndefs)
        return NULL;
    if (file)
        *file = s->def_files[i];
    return s->defs[i];
}

size_t kx_decoder_def_programs(const kx_yaml_node *def, const kx_yaml_node *const **out)
{
    size_t n = 0;
    kx_err err;
    if (programs_of(def, "", out, &n, &err))
        return 0;
    return n;
}
