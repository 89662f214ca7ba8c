/*
 * The router: parses `alerting:` (docs/internals/alert.md), owns the sinks, and for each
 * alert decides whether it is a duplicate, renders it once, and hands the same bytes to every
 * sink of the alert's route.
 *
 * Lifetime of one send: kx_router_send allocates one kx__send holding the rendered JSON and
 * a count of sinks still working on it, plus one token of its own so that sinks finishing
 * synchronously (stdout, file) cannot complete the send before every sink has been started.
 * The last kx__send_finish writes the dead-letter line if a sink gave up, runs the caller's
 * done callback, frees the send, and runs the drain callback when nothing is left pending.
 *
 * Bounded state: the dedup cache (fixed capacity) and the in-flight sends, which the sinks
 * bound themselves (webhook retries end, kafka has message.timeout.ms).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alert_int.h"
#include "klaxon/metrics.h"

#define DEFAULT_EVIDENCE 5
#define DEFAULT_DEDUP_WINDOW_MS (3600 * 1000LL)
#define DEFAULT_DEDUP_CAPACITY 65536
#define RENDER_MAX (4u << 20) /* an alert larger than this is refused, not sent */

typedef struct route {
    char *team;
    size_t *sinks; /* indices into router->sinks */
    size_t nsinks;
} route;

struct kx_router {
    struct ev_loop *loop;
    kx__sink **sinks;
    size_t nsinks;
    route *routes;
    size_t nroutes;
    route *default_route; /* NULL when there are no routes: every sink gets every alert */
    size_t *all_sinks;

    size_t max_evidence;
    int64_t dedup_window_ms;
    kx__dedup dedup;

    char *dead_letter_path;
    int dead_letter_fd;
    uint64_t dead_letter_errors;

    kx_buf scratch; /* render buffer, reused */
    kx__send *inflight;
    size_t pending;
    void (*drain_cb)(void *ud);
    void *drain_ud;
    kx_ratelimit rl;
};

static const struct {
    const char *type;
    kx__sink_create_fn create;
} sink_types[] = {
    {"stdout", kx__sink_stdout_create},
    {"file", kx__sink_file_create},
    {"webhook", kx__sink_webhook_create},
    {"kafka", kx__sink_kafka_create},
};

/* ---- helpers shared by the sinks ---- */

int kx__sink_base_init(kx__sink *sink, const kx__sink_ops *ops, struct ev_loop *loop,
                       const char *name)
{
    sink->ops = ops;
    sink->loop = loop;
    sink->delivered = sink->failed = 0;
    sink->name = strdup(name);
    return sink->name ? 0 : -ENOMEM;
}

void kx__sink_base_fini(kx__sink *sink)
{
    free(sink->name);
    sink->name = NULL;
}

/* ---- sends ---- */

static void dead_letter(kx_router *r, const kx__send *s)
{
    if (r->dead_letter_fd < 0)
        return;
    /* One writev so the line is appended whole (O_APPEND) even if another process shares the
     * file. */
    struct iovec iov[2] = {{(void *)s->payload, s->len}, {(void *)"\n", 1}};
    ssize_t n;
    do {
        n = writev(r->dead_letter_fd, iov, 2);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)(s->len + 1)) {
        r->dead_letter_errors++;
        kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                       "dead-letter %s: write failed: %s; alert %s lost", r->dead_letter_path,
                       n < 0 ? strerror(errno) : "short write", s->key);
    }
}

static void send_complete(kx__send *s)
{
    kx_router *r = s->router;
    if (s->prev)
        s->prev->next = s->next;
    else
        r->inflight = s->next;
    if (s->next)
        s->next->prev = s->prev;
    r->pending--;
    if (s->status < 0)
        dead_letter(r, s);
    if (s->done)
        s->done(s->ud, s->status);
    free(s);
    if (r->pending == 0 && r->drain_cb) {
        void (*cb)(void *) = r->drain_cb;
        r->drain_cb = NULL;
        cb(r->drain_ud);
    }
}

void kx__send_finish(kx__send *s, kx__sink *sink, int status)
{
    if (sink) {
        if (status == 0) {
            sink->delivered++;
            kx_metric_inc(KX_M_ALERTS_DELIVERED);
        } else {
            sink->failed++;
            kx_metric_inc(KX_M_ALERTS_FAILED);
            kx_log_limited(&s->router->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                           "sink %s gave up on alert %s: %s", sink->name, s->key,
                           strerror(-status));
            if (s->status == 0)
                s->status = status;
        }
    }
    if (--s->remaining == 0)
        send_complete(s);
}

static const route *route_for(const kx_router *r, const char *team)
{
    if (team)
        for (size_t i = 0; i < r->nroutes; i++)
            if (!strcmp(r->routes[i].team, team))
                return &r->routes[i];
    return r->default_route;
}

int kx_router_send(kx_router *r, const kx_alert *a, kx_router_done_cb done, void *ud)
{
    /* Render before the dedup check: an alert that cannot be rendered (too large) must not
     * mark its key as sent, or the caller's retry with less evidence would be dropped. */
    const char *team = a->team ? a->team : "default";
    kx_buf_reset(&r->scratch);
    int rc = kx_alert_render(a, team, &r->scratch);
    if (rc) {
        kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE, "alert for rule %s not rendered: %s",
                       a->rule_id ? a->rule_id : "?", strerror(-rc));
        return rc;
    }
    kx_metric_inc(KX_M_ALERTS_RAISED);

    uint64_t h1, h2;
    kx__alert_dedup_hash(a, &h1, &h2);
    /* An absence's resolve carries its firing alert's dedup_key but is news of its own. */
    if (a->status && !strcmp(a->status, "resolved"))
        h1 ^= 0x7265736f6c766564ULL;
    if (r->dedup_window_ms > 0 &&
        kx__dedup_check(&r->dedup, h1, h2, kx_mono_ms(), r->dedup_window_ms)) {
        kx_metric_inc(KX_M_ALERTS_DEDUPED);
        if (done)
            done(ud, 0);
        return 0;
    }
    kx__send *s = malloc(sizeof(*s) + r->scratch.len + 1);
    if (!s)
        return -ENOMEM;
    memset(s, 0, sizeof(*s));
    s->router = r;
    s->done = done;
    s->ud = ud;
    kx_alert_dedup_key(a, s->key, sizeof(s->key));
    s->len = r->scratch.len;
    memcpy(s->payload, r->scratch.data, s->len + 1);

    const route *rt = route_for(r, a->team);
    const size_t *idx = rt ? rt->sinks : r->all_sinks;
    size_t n = rt ? rt->nsinks : r->nsinks;

    s->remaining = (unsigned)n + 1;
    s->next = r->inflight;
    if (s->next)
        s->next->prev = s;
    r->inflight = s;
    r->pending++;
    for (size_t i = 0; i < n; i++) {
        kx__sink *sink = r->sinks[idx[i]];
        sink->ops->deliver(sink, s);
    }
    kx__send_finish(s, NULL, 0);
    return 0;
}

size_t kx_router_pending(const kx_router *r)
{
    return r->pending;
}

void kx_router_drain(kx_router *r, void (*cb)(void *ud), void *ud)
{
    if (r->pending == 0) {
        r->drain_cb = NULL;
        cb(ud);
        return;
    }
    r->drain_cb = cb;
    r->drain_ud = ud;
}

size_t kx_router_max_evidence(const kx_router *r)
{
    return r->max_evidence;
}

uint64_t kx__router_dedup_evictions(const kx_router *r)
{
    return r->dedup.evictions;
}

size_t kx__router_dedup_size(const kx_router *r)
{
    return r->dedup.count;
}

/* ---- config ---- */

static int find_sink(const kx_router *r, const kx_yaml_node *name)
{
    for (size_t i = 0; i < r->nsinks; i++)
        if (kx_yaml_is(name, r->sinks[i]->name))
            return (int)i;
    return -1;
}

static int add_sink(kx_router *r, const kx_yaml_node *name, const kx_yaml_node *cfg,
                    const char *file, kx_err *err)
{
    if (name->type != KX_YAML_SCALAR || name->len == 0)
        return kx_yaml_err(err, file, name, "sink name must be a non-empty string");
    if (find_sink(r, name) >= 0)
        return kx_yaml_err(err, file, name, "duplicate sink \"%s\"", name->str);
    if (cfg->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, cfg, "sink \"%s\": expected a map", name->str);
    const kx_yaml_node *type = kx_yaml_get(cfg, "type");
    if (!type)
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"type\"", name->str);
    kx__sink_create_fn create = NULL;
    for (size_t i = 0; i < KX_ARRAY_LEN(sink_types) && !create; i++)
        if (kx_yaml_is(type, sink_types[i].type))
            create = sink_types[i].create;
    if (!create)
        return kx_yaml_err(err, file, type,
                           "unknown sink type \"%s\" (expected stdout, file, webhook or kafka)",
                           type->type == KX_YAML_SCALAR ? type->str : "");
    kx__sink *sink = NULL;
    int rc = create(r->loop, name->str, cfg, file, &sink, err);
    if (rc)
        return rc;
    r->sinks[r->nsinks++] = sink;
    return 0;
}

static int parse_routes(kx_router *r, const kx_yaml_node *routes, const char *file, kx_err *err)
{
    static const char *const route_keys[] = {"team", "sinks", NULL};
    if (routes->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, routes, "routes: expected a list");
    r->routes = calloc(routes->n ? routes->n : 1, sizeof(*r->routes));
    if (!r->routes)
        return -ENOMEM;
    for (size_t i = 0; i < routes->n; i++) {
        const kx_yaml_node *item = routes->vals[i];
        int rc;
        if (item->type != KX_YAML_MAP)
            return kx_yaml_err(err, file, item, "route: expected a map with team and sinks");
        if ((rc = kx_yaml_check_keys(item, file, route_keys, err)))
            return rc;
        const kx_yaml_node *team = kx_yaml_get(item, "team");
        const kx_yaml_node *sinks = kx_yaml_get(item, "sinks");
        if (!team)
            return kx_yaml_err(err, file, item, "route: missing \"team\"");
        if (!sinks)
            return kx_yaml_err(err, file, item, "route: missing \"sinks\"");
        const char *tname;
        if ((rc = kx_yaml_str(team, file, &tname, err)))
            return rc;
        for (size_t j = 0; j < r->nroutes; j++)
            if (!strcmp(r->routes[j].team, tname))
                return kx_yaml_err(err, file, team, "duplicate route for team \"%s\"", tname);
        if (sinks->type != KX_YAML_SEQ || sinks->n == 0)
            return kx_yaml_err(err, file, sinks, "route: sinks must be a non-empty list");
        route *rt = &r->routes[r->nroutes++];
        rt->team = strdup(tname);
        rt->sinks = calloc(sinks->n, sizeof(*rt->sinks));
        if (!rt->team || !rt->sinks)
            return -ENOMEM;
        for (size_t j = 0; j < sinks->n; j++) {
            int idx = find_sink(r, sinks->vals[j]);
            if (idx < 0)
                return kx_yaml_err(err, file, sinks->vals[j], "unknown sink \"%s\"",
                                   sinks->vals[j]->type == KX_YAML_SCALAR ? sinks->vals[j]->str
                                                                          : "");
            for (size_t k = 0; k < rt->nsinks; k++)
                if (rt->sinks[k] == (size_t)idx)
                    return kx_yaml_err(err, file, sinks->vals[j], "sink \"%s\" listed twice",
                                       sinks->vals[j]->str);
            rt->sinks[rt->nsinks++] = (size_t)idx;
        }
        if (!strcmp(tname, "default"))
            r->default_route = rt;
    }
    if (r->nroutes && !r->default_route)
        return kx_yaml_err(err, file, routes,
                           "routes: a route for team \"default\" is required (alerts without "
                           "a team, or whose team has no route, go there)");
    return 0;
}

static int parse_config(kx_router *r, const kx_yaml_node *cfg, const char *file, kx_err *err)
{
    static const char *const keys[] = {
        "evidence", "dedup_window", "dedup_capacity", "dead_letter", "sinks", "routes", NULL};
    long long v;
    int rc;
    if (cfg->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, cfg, "alerting: expected a map");
    if ((rc = kx_yaml_check_keys(cfg, file, keys, err)))
        return rc;
    const kx_yaml_node *n;
    if ((n = kx_yaml_get(cfg, "evidence"))) {
        if ((rc = kx_yaml_int(n, file, 0, 100, &v, err)))
            return rc;
        r->max_evidence = (size_t)v;
    }
    if ((n = kx_yaml_get(cfg, "dedup_window"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        r->dedup_window_ms = v;
    }
    size_t cap = DEFAULT_DEDUP_CAPACITY;
    if ((n = kx_yaml_get(cfg, "dedup_capacity"))) {
        if ((rc = kx_yaml_int(n, file, 1, 1 << 24, &v, err)))
            return rc;
        cap = (size_t)v;
    }
    if ((rc = kx__dedup_init(&r->dedup, cap)))
        return rc;
    if ((n = kx_yaml_get(cfg, "dead_letter")) && !kx_yaml_is_null(n)) {
        const char *path;
        if ((rc = kx_yaml_str(n, file, &path, err)))
            return rc;
        r->dead_letter_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (r->dead_letter_fd < 0)
            return kx_yaml_err(err, file, n, "dead_letter: cannot open \"%s\": %s", path,
                               strerror(errno));
        if (!(r->dead_letter_path = strdup(path)))
            return -ENOMEM;
    }
    const kx_yaml_node *sinks = kx_yaml_get(cfg, "sinks");
    if (sinks && !kx_yaml_is_null(sinks)) {
        if (sinks->type != KX_YAML_MAP)
            return kx_yaml_err(err, file, sinks, "sinks: expected a map of name: {type: ...}");
        r->sinks = calloc(sinks->n ? sinks->n : 1, sizeof(*r->sinks));
        if (!r->sinks)
            return -ENOMEM;
        for (size_t i = 0; i < sinks->n; i++)
            if ((rc = add_sink(r, sinks->keys[i], sinks->vals[i], file, err)))
                return rc;
    }
    const kx_yaml_node *routes = kx_yaml_get(cfg, "routes");
    if (routes && !kx_yaml_is_null(routes)) {
        if (r->nsinks == 0)
            return kx_yaml_err(err, file, routes, "routes: no sinks are defined");
        if ((rc = parse_routes(r, routes, file, err)))
            return rc;
    }
    return 0;
}

int kx_router_create(struct ev_loop *loop, const kx_yaml_node *cfg, const char *file,
                     kx_router **out, kx_err *err)
{
    int rc = -ENOMEM;
    kx_router *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->loop = loop;
    r->max_evidence = DEFAULT_EVIDENCE;
    r->dedup_window_ms = DEFAULT_DEDUP_WINDOW_MS;
    r->dead_letter_fd = -1;
    kx_buf_init(&r->scratch, RENDER_MAX);

    if (cfg && !kx_yaml_is_null(cfg)) {
        if ((rc = parse_config(r, cfg, file, err)))
            goto fail;
    } else if ((rc = kx__dedup_init(&r->dedup, DEFAULT_DEDUP_CAPACITY))) {
        goto fail;
    }
    if (r->nsinks == 0) {
        /* No sinks configured: everything goes to stdout, so alerts are never silently lost. */
        static const kx_yaml_node none = {.type = KX_YAML_MAP};
        free(r->sinks);
        if (!(r->sinks = calloc(1, sizeof(*r->sinks))))
            goto fail;
        if ((rc = kx__sink_stdout_create(loop, "stdout", &none, file, &r->sinks[0], err)))
            goto fail;
        r->nsinks = 1;
    }
    r->all_sinks = calloc(r->nsinks, sizeof(*r->all_sinks));
    if (!r->all_sinks) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < r->nsinks; i++)
        r->all_sinks[i] = i;
    *out = r;
    return 0;
fail:
    if (rc == -ENOMEM)
        kx_err_set(err, file, 0, 0, "out of memory");
    kx_router_destroy(r);
    return rc;
}

void kx_router_destroy(kx_router *r)
{
    if (!r)
        return;
    /* Sinks first: cancelling their work completes the sends (done with -ECANCELED and a
     * dead-letter line), which needs the rest of the router intact. */
    r->drain_cb = NULL;
    for (size_t i = 0; i < r->nsinks; i++)
        r->sinks[i]->ops->destroy(r->sinks[i]);
    free(r->sinks);
    for (size_t i = 0; i < r->nroutes; i++) {
        free(r->routes[i].team);
        free(r->routes[i].sinks);
    }
    free(r->routes);
    free(r->all_sinks);
    kx__dedup_fini(&r->dedup);
    if (r->dead_letter_fd >= 0)
        close(r->dead_letter_fd);
    free(r->dead_letter_path);
    kx_buf_fini(&r->scratch);
    free(r);
}
