/*
 * Secret config values (include/klaxon/secret.h).
 */
#include "klaxon/secret.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_FILE_MAX (64u << 10)

void kx_secret_free(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* Expands every ${NAME} of v. */
static int expand(const kx_yaml_node *n, const char *file, const char *key, char **out, kx_err *err)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    const char *p = n->str;
    int rc = 0;
    while (!rc && *p) {
        const char *s = strstr(p, "${");
        if (!s) {
            rc = kx_buf_puts(&b, p);
            break;
        }
        rc = kx_buf_append(&b, p, (size_t)(s - p));
        const char *e = strchr(s + 2, '}');
        size_t nl = e ? (size_t)(e - s - 2) : 0;
        bool ok = e && nl > 0 && (isalpha((unsigned char)s[2]) || s[2] == '_');
        for (size_t i = 0; ok && i < nl; i++)
            ok = isalnum((unsigned char)s[2 + i]) || s[2 + i] == '_';
        if (!ok) {
            rc = kx_yaml_err(err, file, n, "%s: \"${\" must start ${NAME} (letters, digits, _)",
                             key);
            break;
        }
        char name[256];
        if (nl >= sizeof(name)) {
            rc = kx_yaml_err(err, file, n, "%s: variable name too long", key);
            break;
        }
        memcpy(name, s + 2, nl);
        name[nl] = '\0';
        const char *v = getenv(name);
        if (!v) {
            rc = kx_yaml_err(err, file, n, "%s: environment variable %s is not set", key, name);
            break;
        }
        rc = kx_buf_puts(&b, v);
        p = e + 1;
    }
    if (!rc && !b.data)
        rc = kx_buf_puts(&b, "");
    if (rc) {
        if (b.data)
            explicit_bzero(b.data, b.len);
        kx_buf_fini(&b);
        return rc;
    }
    *out = b.data; /* kx_buf's memory is plain malloc'd: freed by kx_secret_free */
    return 0;
}

static int read_file(const kx_yaml_node *n, const char *file, const char *key, char **out,
                     kx_err *err)
{
    const char *path;
    int rc = kx_yaml_str(n, file, &path, err);
    if (rc)
        return rc;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kx_yaml_err(err, file, n, "%s_file: cannot read \"%s\": %s", key, path,
                           strerror(errno));
    char *buf = malloc(SECRET_FILE_MAX + 1);
    size_t len = buf ? fread(buf, 1, SECRET_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!buf)
        return -ENOMEM;
    if (len > SECRET_FILE_MAX) {
        explicit_bzero(buf, len);
        free(buf);
        return kx_yaml_err(err, file, n, "%s_file: \"%s\" is larger than 64 KiB", key, path);
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        explicit_bzero(buf, len);
        free(buf);
        return kx_yaml_err(err, file, n, "%s_file: \"%s\" holds a NUL byte", key, path);
    }
    *out = buf;
    return 0;
}

int kx_secret_get(const kx_yaml_node *map, const char *key, const char *file, bool required,
                  char **out, kx_err *err)
{
    char fkey[128];
    snprintf(fkey, sizeof(fkey), "%s_file", key);
    const kx_yaml_node *v = kx_yaml_get(map, key), *f = kx_yaml_get(map, fkey);
    *out = NULL;
    if (v && f)
        return kx_yaml_err(err, file, f, "give %s or %s, not both", key, fkey);
    if (f)
        return read_file(f, file, key, out, err);
    if (v) {
        if (v->type != KX_YAML_SCALAR)
            return kx_yaml_err(err, file, v, "%s: expected a string", key);
        return expand(v, file, key, out, err);
    }
    if (required)
        return kx_yaml_err(err, file, map, "missing \"%s\" (or \"%s\")", key, fkey);
    return 0;
}

int kx_secret_setting(const kx_yaml_node *map, size_t i, const char *file, char **name,
                      char **value, bool *secret, kx_err *err)
{
    const kx_yaml_node *k = map->keys[i], *v = map->vals[i];
    *name = *value = NULL;
    if (k->type != KX_YAML_SCALAR || !k->len)
        return kx_yaml_err(err, file, k, "expected a setting name");
    if (v->type != KX_YAML_SCALAR)
        return kx_yaml_err(err, file, v, "%s: expected a scalar value", k->str);
    bool from_file = k->len > 5 && !strcmp(k->str + k->len - 5, "_file");
    if (!(*name = strndup(k->str, from_file ? k->len - 5 : k->len)))
        return -ENOMEM;
    int rc = from_file ? read_file(v, file, *name, value, err) : expand(v, file, *name, value, err);
    if (rc) {
        free(*name);
        *name = NULL;
        return rc;
    }
    *secret = from_file || strstr(v->str, "${") != NULL;
    return 0;
}
