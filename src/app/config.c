/*
 * Loads the config file: checks the top level strictly (a typo must not pass silently),
 * parses the sections the app owns (rules, state, metrics, limits, log_level) and keeps the
 * stage sections as YAML nodes for the stages to parse themselves.
 */
#include "klaxon/config.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/secret.h"
#include "klaxon/store.h"

static const char *const top_keys[] = {"rules",   "rules_watch", "decoders",  "kafka",
                                       "inputs",  "decode",      "state",     "alerting",
                                       "metrics", "limits",      "log_level", NULL};

static int check_keys(const kx_yaml_node *map, const char *file, const char *const *allowed,
                      kx_err *err)
{
    if (!map || map->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, map, "expected a mapping");
    return kx_yaml_check_keys(map, file, allowed, err);
}

static char *resolve(const char *base_dir, const char *p)
{
    if (p[0] == '/' || !base_dir[0] || !strcmp(base_dir, "."))
        return strdup(p);
    size_t n = strlen(base_dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r)
        snprintf(r, n, "%s/%s", base_dir, p);
    return r;
}

/* A path or a list of paths (`rules`, `decoders`), resolved against dir. */
static int parse_paths(kx_config *c, const kx_yaml_node *n, const char *dir, const char *what,
                       char ***out, size_t *nout, kx_err *err)
{
    const kx_yaml_node *const *items = NULL;
    size_t cnt = 0;
    const kx_yaml_node *one[1];
    if (n->type == KX_YAML_SCALAR) {
        one[0] = n;
        items = one;
        cnt = 1;
    } else if (n->type == KX_YAML_SEQ) {
        items = (const kx_yaml_node *const *)n->vals;
        cnt = n->n;
    } else {
        return kx_yaml_err(err, c->file, n, "%s: expected a path or a list of paths", what);
    }
    *out = calloc(cnt ? cnt : 1, sizeof(char *));
    if (!*out)
        return -ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        const char *s;
        if (kx_yaml_str(items[i], c->file, &s, err))
            return -EINVAL;
        (*out)[i] = resolve(dir, s);
        if (!(*out)[i])
            return -ENOMEM;
        (*nout)++;
    }
    return 0;
}

static int parse_inputs(kx_config *c, const kx_yaml_node *n, kx_err *err)
{
    if (n->type != KX_YAML_SEQ)
        return kx_yaml_err(err, c->file, n, "inputs: expected a list of inputs");
    c->inputs = calloc(n->n ? n->n : 1, sizeof(*c->inputs));
    c->input_topics = calloc(n->n ? n->n : 1, sizeof(*c->input_topics));
    if (!c->inputs || !c->input_topics)
        return -ENOMEM;
    for (size_t i = 0; i < n->n; i++) {
        const kx_yaml_node *in = n->vals[i];
        if (in->type != KX_YAML_MAP)
            return kx_yaml_err(err, c->file, in, "inputs: each input must be a mapping");
        const kx_yaml_node *t = kx_yaml_get(in, "topic");
        if (t && kx_yaml_str(t, c->file, &c->input_topics[i], err))
            return -EINVAL;
        for (size_t j = 0; j < i && t; j++) {
            if (c->input_topics[j] && !strcmp(c->input_topics[j], c->input_topics[i]))
                return kx_yaml_err(err, c->file, t, "topic \"%s\" is configured twice",
                                   c->input_topics[i]);
        }
        c->inputs[i] = in;
        c->ninputs++;
    }
    return 0;
}

static int parse_state(kx_config *c, const kx_yaml_node *n, kx_err *err)
{
    static const char *const keys[] = {"store",         "max_keys", "lateness",
                                       "max_groups",    "username", "password",
                                       "password_file", "windows",  NULL};
    if (check_keys(n, c->file, keys, err))
        return -EINVAL;
    const kx_yaml_node *v;
    if ((v = kx_yaml_get(n, "store"))) {
        const char *s;
        if (kx_yaml_str(v, c->file, &s, err))
            return -EINVAL;
        /* Parsed here too, so a mistake points at the line (the message never shows the
         * URL's password). */
        kx_err ue = {0};
        if (kx_store_url_check(s, &ue))
            return kx_yaml_err(err, c->file, v, "%s", ue.msg);
        free(c->store_url);
        c->store_url = strdup(s);
        if (!c->store_url)
            return -ENOMEM;
    }
    if ((v = kx_yaml_get(n, "username"))) {
        const char *s;
        if (kx_yaml_str(v, c->file, &s, err))
            return -EINVAL;
        free(c->store_username);
        if (!(c->store_username = strdup(s)))
            return -ENOMEM;
    }
    /* The Redis password: ${ENV} or password_file, so the config need not hold it. */
    kx_secret_free(c->store_password);
    c->store_password = NULL;
    int rc = kx_secret_get(n, "password", c->file, false, &c->store_password, err);
    if (rc)
        return rc;
    if (c->store_username && !c->store_password)
        return kx_yaml_err(err, c->file, kx_yaml_get(n, "username"),
                           "username: a Redis ACL user needs a password (password or "
                           "password_file)");
    long long x;
    if ((v = kx_yaml_get(n, "max_keys"))) {
        if (kx_yaml_int(v, c->file, 1, 1000000000LL, &x, err))
            return -EINVAL;
        c->state_max_keys = (size_t)x;
    }
    if ((v = kx_yaml_get(n, "lateness"))) {
        if (kx_yaml_duration_ms(v, c->file, &x, err))
            return -EINVAL;
        c->lateness_ms = x;
    }
    if ((v = kx_yaml_get(n, "max_groups"))) {
        if (kx_yaml_int(v, c->file, 1, 100000000LL, &x, err))
            return -EINVAL;
        c->max_groups = (size_t)x;
    }
    if ((v = kx_yaml_get(n, "windows"))) {
        const char *s;
        if (kx_yaml_str(v, c->file, &s, err))
            return -EINVAL;
        if (strcmp(s, "script") != 0 && strcmp(s, "log") != 0)
            return kx_yaml_err(err, c->file, v,
                               "windows: \"script\" or \"log\" (how Redis keeps sliding windows)");
        c->state_windows_log = strcmp(s, "log") == 0;
    }
    return 0;
}

static int parse_metrics(kx_config *c, const kx_yaml_node *n, kx_err *err)
{
    static const char *const keys[] = {"listen", NULL};
    if (check_keys(n, c->file, keys, err))
        return -EINVAL;
    const kx_yaml_node *v = kx_yaml_get(n, "listen");
    if (!v)
        return kx_yaml_err(err, c->file, n, "metrics: missing required key \"listen\"");
    const char *s;
    if (kx_yaml_str(v, c->file, &s, err))
        return -EINVAL;
    const char *colon = strrchr(s, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == s || !end || end == colon + 1 || *end || port < 0 || port > 65535 ||
        colon[1] == '+' || colon[1] == '-' || colon[1] == ' ')
        return kx_yaml_err(err, c->file, v, "metrics.listen: expected HOST:PORT, got \"%s\"", s);
    c->metrics_addr = strndup(s, (size_t)(colon - s));
    if (!c->metrics_addr)
        return -ENOMEM;
    c->metrics_port = (int)port;
    return 0;
}

static int parse_limits(kx_config *c, const kx_yaml_node *n, kx_err *err)
{
    static const char *const keys[] = {"max_event_bytes", "evidence_bytes", NULL};
    if (check_keys(n, c->file, keys, err))
        return -EINVAL;
    const kx_yaml_node *v;
    long long x;
    if ((v = kx_yaml_get(n, "max_event_bytes"))) {
        if (kx_yaml_int(v, c->file, 64, 64LL << 20, &x, err))
            return -EINVAL;
        c->max_event_bytes = (size_t)x;
    }
    if ((v = kx_yaml_get(n, "evidence_bytes"))) {
        if (kx_yaml_int(v, c->file, 256, 16LL << 20, &x, err))
            return -EINVAL;
        c->evidence_bytes = (size_t)x;
    }
    return 0;
}

static int parse_level(kx_config *c, const kx_yaml_node *v, kx_err *err)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < KX_ARRAY_LEN(names); i++) {
        if (kx_yaml_is(v, names[i])) {
            c->log_level = (kx_log_level)i;
            return 0;
        }
    }
    return kx_yaml_err(err, c->file, v, "log_level: expected debug, info, warn or error");
}

int kx_config_load(const char *path, kx_config **out, kx_err *err)
{
    kx_config *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int rc = -ENOMEM;
    c->file = strdup(path);
    c->store_url = strdup("memory");
    if (!c->file || !c->store_url)
        goto fail;
    c->state_max_keys = 1000000;
    c->lateness_ms = 60000;
    c->max_groups = 100000;
    c->max_event_bytes = 1 << 20;
    c->evidence_bytes = 16 << 10;
    c->log_level = KX_LOG_INFO;

    rc = kx_yaml_load_file(path, &c->doc, err);
    if (rc)
        goto fail;
    rc = -EINVAL;
    const kx_yaml_node *root = c->doc->root;
    if (!root) {
        kx_err_set(err, path, 1, 1, "the config file is empty");
        goto fail;
    }
    if (c->doc->next) {
        kx_yaml_err(err, path, c->doc->next->root, "a config file holds one YAML document");
        goto fail;
    }
    if (check_keys(root, path, top_keys, err))
        goto fail;

    char *dcopy = strdup(path);
    if (!dcopy) {
        rc = -ENOMEM;
        goto fail;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", dirname(dcopy));
    free(dcopy);

    const kx_yaml_node *v;
    if ((v = kx_yaml_get(root, "rules")) &&
        (rc = parse_paths(c, v, dir, "rules", &c->rule_paths, &c->nrule_paths, err)))
        goto fail;
    if ((v = kx_yaml_get(root, "decoders"))) {
        c->decoders_given = true;
        if (!(v->type == KX_YAML_SEQ && v->n == 0) &&
            (rc = parse_paths(c, v, dir, "decoders", &c->decoder_paths, &c->ndecoder_paths, err)))
            goto fail;
    }
    rc = -EINVAL;
    c->kafka = kx_yaml_get(root, "kafka");
    if ((v = kx_yaml_get(root, "inputs")) && (rc = parse_inputs(c, v, err)))
        goto fail;
    c->decode = kx_yaml_get(root, "decode");
    c->alerting = kx_yaml_get(root, "alerting");
    if ((v = kx_yaml_get(root, "state")) && (rc = parse_state(c, v, err)))
        goto fail;
    if ((v = kx_yaml_get(root, "metrics")) && (rc = parse_metrics(c, v, err)))
        goto fail;
    if ((v = kx_yaml_get(root, "limits")) && (rc = parse_limits(c, v, err)))
        goto fail;
    if ((v = kx_yaml_get(root, "log_level")) && (rc = parse_level(c, v, err)))
        goto fail;
    rc = -EINVAL;
    long long watch = 0;
    if ((v = kx_yaml_get(root, "rules_watch")) && !kx_yaml_is_null(v) &&
        kx_yaml_duration_ms(v, c->file, &watch, err))
        goto fail;
    if (watch < 0 || (watch > 0 && watch < 1000)) {
        kx_yaml_err(err, path, v, "rules_watch is at least 1s (or 0: off)");
        goto fail;
    }
    c->rules_watch_ms = watch;
    *out = c;
    return 0;
fail:
    kx_config_destroy(c);
    return rc;
}

void kx_config_destroy(kx_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nrule_paths; i++)
        free(c->rule_paths[i]);
    free(c->rule_paths);
    for (size_t i = 0; i < c->ndecoder_paths; i++)
        free(c->decoder_paths[i]);
    free(c->decoder_paths);
    free(c->inputs);
    free(c->input_topics);
    free(c->store_url);
    free(c->store_username);
    kx_secret_free(c->store_password);
    free(c->metrics_addr);
    free(c->file);
    kx_yaml_free(c->doc);
    free(c);
}
