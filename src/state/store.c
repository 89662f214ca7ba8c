/*
 * kx_store front: dispatch to the backend through its vtable, the checks both backends apply
 * to an add (so they refuse the same calls), and the store URL parser.
 *
 * URL forms: "memory", "redis://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]". HOST is a numeric
 * IPv4 address, a bracketed IPv6 address or "localhost": the loop must never block in a name
 * lookup. The password never reaches a message: errors show the URL with "***" for it.
 */
#include "klaxon/store.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/store_impl.h"

#define KX_REDIS_DEFAULT_PREFIX "klaxon:"
#define KX_REDIS_DEFAULT_PORT 6379

void kx__store_base_init(kx_store *s, const kx__store_vtbl *vt)
{
    s->vt = vt;
    s->state_cb = NULL;
    s->state_ud = NULL;
    s->member_cap = KX__STORE_MEMBER_CAP;
}

int kx__store_validate(const kx_window_add *op)
{
    if (!op || !op->key || !op->member)
        return -EINVAL;
    if (op->window_ms < 0 || op->ttl_ms <= 0 || op->ttl_ms < op->window_ms)
        return -EINVAL;
    /* Bounds keep every sum the backends form (t - ttl, t - window) exact in a double. */
    if (op->time_ms <= -KX__STORE_MAX_TIME || op->time_ms >= KX__STORE_MAX_TIME ||
        op->ttl_ms >= KX__STORE_MAX_TIME)
        return -EINVAL;
    if (!op->evidence && op->evidence_len)
        return -EINVAL;
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN || strlen(op->member) > KX__STORE_MAX_KEY_LEN)
        return -EMSGSIZE;
    if (op->evidence_len > KX__STORE_MAX_EVIDENCE_LEN)
        return -EMSGSIZE;
    if (op->agg == KX_AGG_FIRST_SEEN && !strchr(op->member, 0x1f))
        return -EINVAL; /* identity 0x1f value */
    if (op->agg == KX_AGG_BASELINE &&
        (op->window_ms <= 0 || op->history < 1 || op->history > 100000 ||
         !(op->deviations >= 0 && op->deviations < 1e9) ||
         (op->history * 3 + 2) > KX__STORE_MAX_TIME / op->window_ms - 1))
        return -EINVAL;
    if ((unsigned)op->agg > KX_AGG_BASELINE || op->ncond > KX_CMP_MAX_TERMS ||
        (op->ncond && !op->cond) || op->suppress_ms < 0 || op->suppress_ms >= KX__STORE_MAX_TIME ||
        (op->cross_at > 0 && op->agg != KX_AGG_COUNT))
        return -EINVAL;
    for (size_t i = 0; i < op->ncond; i++)
        if ((unsigned)op->cond[i].op > KX_CMP_NEQ || op->cond[i].value != op->cond[i].value)
            return -EINVAL; /* NaN never compares */
    return 0;
}

int kx__store_validate_many(const kx_window_add *ops, size_t n)
{
    if (!ops || n < 1 || n > KX_STORE_MANY_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = kx__store_validate(&ops[i]);
        if (rc)
            return rc;
        const kx_window_add *a = &ops[0], *b = &ops[i];
        if ((a->agg == KX_AGG_BASELINE &&
             (a->history != b->history || a->deviations != b->deviations)) ||
            strcmp(a->key, b->key) || a->window_ms != b->window_ms || a->ttl_ms != b->ttl_ms ||
            a->max_evidence != b->max_evidence || a->cross_at != b->cross_at || a->agg != b->agg ||
            a->ncond != b->ncond ||
            (a->ncond && memcmp(a->cond, b->cond, a->ncond * sizeof(*a->cond))) ||
            a->suppress_ms != b->suppress_ms || a->evidence_if_crossed != b->evidence_if_crossed)
            return -EINVAL;
    }
    return 0;
}

int kx_store_window_add_many(kx_store *s, const kx_window_add *ops, size_t n, kx_store_many_cb cb,
                             void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->window_add_many(s, ops, n, cb, ud);
}

int kx__store_validate_touch(const kx_absence_touch *op)
{
    if (!op || !op->key || !op->group || (!op->payload && op->payload_len) ||
        (unsigned)op->mode > KX_TOUCH_REPLACE)
        return -EINVAL;
    if (op->timespan_ms <= 0 || op->keep_ms <= 0 || op->timespan_ms >= KX__STORE_MAX_TIME / 4 ||
        op->keep_ms >= KX__STORE_MAX_TIME / 4 || op->time_ms <= -KX__STORE_MAX_TIME / 2 ||
        op->time_ms >= KX__STORE_MAX_TIME / 2)
        return -EINVAL;
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN || strlen(op->group) > KX__STORE_MAX_KEY_LEN ||
        strchr(op->group, ' '))
        return strchr(op->group, ' ') ? -EINVAL : -EMSGSIZE;
    if (op->payload_len > KX__STORE_MAX_EVIDENCE_LEN)
        return -EMSGSIZE;
    return 0;
}

int kx__store_validate_due(const kx_absence_due *op)
{
    if (!op || !op->key || op->limit < 1 || op->limit > KX_STORE_ABSENCE_DUE_MAX ||
        op->timespan_ms <= 0 || op->keep_ms <= 0 || op->timespan_ms >= KX__STORE_MAX_TIME / 4 ||
        op->keep_ms >= KX__STORE_MAX_TIME / 4 || op->watermark_ms <= -KX__STORE_MAX_TIME / 2 ||
        op->watermark_ms >= KX__STORE_MAX_TIME / 2)
        return -EINVAL;
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN)
        return -EMSGSIZE;
    return 0;
}

int kx__store_validate_close_touch(const kx_close_touch *op)
{
    if (!op || !op->key || !op->group || !op->identity || (!op->payload && op->payload_len) ||
        strchr(op->group, '|') || !*op->group)
        return -EINVAL;
    if (op->timespan_ms <= 0 || op->ttl_ms <= 0 || op->timespan_ms >= KX__STORE_MAX_TIME / 4 ||
        op->ttl_ms >= KX__STORE_MAX_TIME / 4 || op->time_ms <= -KX__STORE_MAX_TIME / 2 ||
        op->time_ms >= KX__STORE_MAX_TIME / 2)
        return -EINVAL;
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN || strlen(op->group) > KX__STORE_MAX_KEY_LEN ||
        strlen(op->identity) > KX__STORE_MAX_KEY_LEN ||
        op->payload_len > KX__STORE_MAX_EVIDENCE_LEN)
        return -EMSGSIZE;
    return 0;
}

int kx__store_validate_close_due(const kx_close_due *op)
{
    if (!op || !op->key || op->limit < 1 || op->limit > KX_STORE_ABSENCE_DUE_MAX || op->ncond < 1 ||
        op->ncond > KX_CMP_MAX_TERMS || !op->cond || op->timespan_ms <= 0 || op->ttl_ms <= 0 ||
        op->timespan_ms >= KX__STORE_MAX_TIME / 4 || op->ttl_ms >= KX__STORE_MAX_TIME / 4 ||
        op->watermark_ms <= -KX__STORE_MAX_TIME / 2 || op->watermark_ms >= KX__STORE_MAX_TIME / 2)
        return -EINVAL;
    for (size_t i = 0; i < op->ncond; i++)
        if ((unsigned)op->cond[i].op > KX_CMP_NEQ || op->cond[i].value != op->cond[i].value)
            return -EINVAL;
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN)
        return -EMSGSIZE;
    return 0;
}

int kx__store_validate_watermark(const kx_watermark_op *op)
{
    if (!op || !op->key || (op->n && !op->mine) || op->n > KX_STORE_ABSENCE_DUE_MAX ||
        op->quiet_ms <= 0 || op->ttl_ms <= 0 || op->quiet_ms >= KX__STORE_MAX_TIME / 4 ||
        op->ttl_ms >= KX__STORE_MAX_TIME / 4 || op->now_ms <= 0 ||
        op->now_ms >= KX__STORE_MAX_TIME / 2)
        return -EINVAL;
    for (size_t i = 0; i < op->n; i++) {
        if (!op->mine[i].name || !*op->mine[i].name || strchr(op->mine[i].name, ' ') ||
            op->mine[i].max_ms <= -KX__STORE_MAX_TIME / 2 ||
            op->mine[i].max_ms >= KX__STORE_MAX_TIME / 2)
            return -EINVAL;
        if (strlen(op->mine[i].name) > 256)
            return -EMSGSIZE;
    }
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN)
        return -EMSGSIZE;
    return 0;
}

int kx_store_watermark(kx_store *s, const kx_watermark_op *op, kx_watermark_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->watermark(s, op, cb, ud);
}

int kx__store_validate_claim(const kx_claim_op *op)
{
    if (!op || !op->key || !op->holder || !*op->holder || !strcmp(op->holder, "d") ||
        (unsigned)op->mode > KX_CLAIM_RELEASE ||
        (op->mode == KX_CLAIM_TAKE &&
         (op->lease_ms <= 0 || op->lease_ms >= KX__STORE_MAX_TIME / 4)) ||
        (op->mode == KX_CLAIM_DONE && (op->keep_ms <= 0 || op->keep_ms >= KX__STORE_MAX_TIME / 4)))
        return -EINVAL;
    if (strlen(op->key) > KX__STORE_MAX_KEY_LEN || strlen(op->holder) > 256)
        return -EMSGSIZE;
    return 0;
}

int kx_store_claim(kx_store *s, const kx_claim_op *op, kx_claim_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->claim(s, op, cb, ud);
}

int kx_store_forget(kx_store *s, const char *key)
{
    if (!s || !key || strlen(key) > KX__STORE_MAX_KEY_LEN)
        return -EINVAL;
    return s->vt->forget(s, key);
}

int kx_store_set_scan(kx_store *s, const char *key, const char *cursor, kx_set_scan_cb cb, void *ud)
{
    if (!s || !key || !cursor || !cb || strlen(key) > KX__STORE_MAX_KEY_LEN)
        return -EINVAL;
    return s->vt->set_scan ? s->vt->set_scan(s, key, cursor, cb, ud) : -ENOTSUP;
}

int64_t kx__store_close_window(int64_t t, int64_t timespan)
{
    return (int64_t)floor((double)t / (double)timespan);
}

int kx__store_validate_close_touch_many(const kx_close_touch *ops, size_t n)
{
    if (!ops || n < 1 || n > KX_STORE_MANY_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = kx__store_validate_close_touch(&ops[i]);
        if (rc)
            return rc;
        if (strcmp(ops[0].key, ops[i].key) || ops[0].timespan_ms != ops[i].timespan_ms ||
            ops[0].ttl_ms != ops[i].ttl_ms)
            return -EINVAL;
    }
    return 0;
}

int kx_store_close_touch_many(kx_store *s, const kx_close_touch *ops, size_t n,
                              kx_absence_many_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->close_touch_many(s, ops, n, cb, ud);
}

int kx_store_close_touch(kx_store *s, const kx_close_touch *op, kx_absence_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->close_touch(s, op, cb, ud);
}

int kx_store_close_due(kx_store *s, const kx_close_due *op, kx_absence_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->close_due(s, op, cb, ud);
}

int kx__store_validate_touch_many(const kx_absence_touch *ops, size_t n)
{
    if (!ops || n < 1 || n > KX_STORE_MANY_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = kx__store_validate_touch(&ops[i]);
        if (rc)
            return rc;
        if (strcmp(ops[0].key, ops[i].key) || ops[0].timespan_ms != ops[i].timespan_ms ||
            ops[0].keep_ms != ops[i].keep_ms)
            return -EINVAL;
    }
    return 0;
}

int kx_store_absence_touch_many(kx_store *s, const kx_absence_touch *ops, size_t n,
                                kx_absence_many_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->absence_touch_many(s, ops, n, cb, ud);
}

int kx_store_absence_touch(kx_store *s, const kx_absence_touch *op, kx_absence_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->absence_touch(s, op, cb, ud);
}

int kx_store_absence_due(kx_store *s, const kx_absence_due *op, kx_absence_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->absence_due(s, op, cb, ud);
}

size_t kx__store_cond(const kx_window_add *op, kx_cmp_term *out)
{
    if (op->ncond) {
        memcpy(out, op->cond, op->ncond * sizeof(*out));
        return op->ncond;
    }
    if (op->cross_at > 0) {
        /* COUNT is monotone: "holds with the member, not without" is count == cross_at. */
        out[0] = (kx_cmp_term){KX_CMP_GTE, (double)op->cross_at};
        return 1;
    }
    return 0;
}

void kx__store_set_member_cap(kx_store *s, uint32_t cap)
{
    s->member_cap = cap ? cap : 1;
}

int kx_store_window_add(kx_store *s, const kx_window_add *op, kx_store_cb cb, void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    return s->vt->window_add(s, op, cb, ud);
}

bool kx_store_is_up(const kx_store *s)
{
    return s->vt->is_up(s);
}

void kx_store_set_state_cb(kx_store *s, kx_store_state_cb cb, void *ud)
{
    s->state_cb = cb;
    s->state_ud = ud;
}

size_t kx_store_pending(const kx_store *s)
{
    return s->vt->pending(s);
}

void kx_store_destroy(kx_store *s)
{
    if (s)
        s->vt->destroy(s);
}

const char *kx_store_kind(const kx_store *s)
{
    return s->vt->kind;
}

/* Parses the decimal port at p (1..65535); *end is left after the digits. */
static int parse_port(const char *p, const char **end)
{
    long v = 0;
    const char *q = p;
    while (*q >= '0' && *q <= '9' && q - p < 6) {
        v = v * 10 + (*q - '0');
        q++;
    }
    *end = q;
    if (q == p || v < 1 || v > 65535)
        return -1;
    return (int)v;
}

/* Percent-decodes [p, p + n) into out (outlen with the NUL); false when malformed or too long. */
static bool pct_decode(const char *p, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)p[i + 1]) ||
                !isxdigit((unsigned char)p[i + 2]))
                return false;
            char hex[3] = {p[i + 1], p[i + 2], '\0'};
            c = (char)strtoul(hex, NULL, 16);
            if (c == '\0')
                return false;
            i += 2;
        }
        if (o + 1 >= outlen)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

/* url with the password of its userinfo replaced by "***", for messages. */
static void url_redacted(const char *url, char *out, size_t outlen)
{
    const char *auth = url + 8; /* after "redis://" */
    /* The last '@' anywhere: a password with an unencoded '/' must be masked too (the parse
     * then fails, and this is what its message shows). */
    const char *at = strrchr(auth, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon)
        snprintf(out, outlen, "%s", url);
    else
        snprintf(out, outlen, "%.*s:***%s", (int)(colon - url), url, at);
}

/* A redis URL's parts; pass is wiped by url_parts_wipe. */
typedef struct url_parts {
    char shown[512]; /* the URL with its password masked, for messages */
    char host[64];
    int port;
    const char *prefix; /* into the URL */
    char user[256], pass[512];
    bool has_user, has_pass;
} url_parts;

static void url_parts_wipe(url_parts *u)
{
    explicit_bzero(u->pass, sizeof(u->pass));
}

static int url_parse(const char *url, url_parts *u, kx_err *err)
{
    static const char scheme[] = "redis://";
    memset(u, 0, sizeof(*u));
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return kx_err_set(err, NULL, 0, 0,
                          "store url: expected \"memory\" or "
                          "\"redis://[USER:PASSWORD@]HOST:PORT[/PREFIX]\"");
    url_redacted(url, u->shown, sizeof(u->shown));
    const char *p = url + sizeof(scheme) - 1;
    /* userinfo: up to the last '@' before the path */
    size_t alen = strcspn(p, "/");
    const char *at = NULL;
    for (const char *q = p; q < p + alen; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (!pct_decode(p, (size_t)(uend - p), u->user, sizeof(u->user)) ||
            (colon && !pct_decode(colon + 1, (size_t)(at - colon - 1), u->pass, sizeof(u->pass))))
            return kx_err_set(err, NULL, 0, 0,
                              "store url \"%s\": bad user or password (percent-encode '@', ':', "
                              "'/' and '%%'; at most 255 and 511 bytes)",
                              u->shown);
        u->has_user = u->user[0] != '\0';
        u->has_pass = colon != NULL;
        p = at + 1;
    }
    size_t hlen;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            return kx_err_set(err, NULL, 0, 0, "store url \"%s\": unterminated '['", u->shown);
        hlen = (size_t)(close - p - 1);
        if (hlen == 0 || hlen >= sizeof(u->host))
            return kx_err_set(err, NULL, 0, 0, "store url \"%s\": bad host", u->shown);
        memcpy(u->host, p + 1, hlen);
        p = close + 1;
    } else {
        hlen = strcspn(p, ":/");
        if (hlen == 0 || hlen >= sizeof(u->host))
            return kx_err_set(err, NULL, 0, 0, "store url \"%s\": bad host", u->shown);
        memcpy(u->host, p, hlen);
        p += hlen;
    }
    u->host[hlen] = '\0';
    u->port = KX_REDIS_DEFAULT_PORT;
    if (*p == ':') {
        const char *end;
        u->port = parse_port(p + 1, &end);
        if (u->port < 0 || (*end != '\0' && *end != '/'))
            return kx_err_set(err, NULL, 0, 0, "store url \"%s\": bad port", u->shown);
        p = end;
    }
    u->prefix = KX_REDIS_DEFAULT_PREFIX;
    if (*p == '/')
        u->prefix = p + 1;
    else if (*p != '\0')
        return kx_err_set(err, NULL, 0, 0, "store url \"%s\": unexpected \"%s\"", u->shown, p);
    return 0;
}

int kx_store_url_check(const char *url, kx_err *err)
{
    if (!url)
        return kx_err_set(err, NULL, 0, 0, "store url: missing");
    if (strcmp(url, "memory") == 0)
        return 0;
    url_parts u;
    int rc = url_parse(url, &u, err);
    url_parts_wipe(&u);
    return rc ? -EINVAL : 0;
}

int kx_store_create_from_url(struct ev_loop *loop, const char *url, const kx_store_opts *opts,
                             kx_store **out, kx_err *err)
{
    kx_store_opts none = {0};
    if (!opts)
        opts = &none;
    if (!url)
        return kx_err_set(err, NULL, 0, 0, "store url: missing");
    if (strcmp(url, "memory") == 0) {
        int rc = kx_store_memory_create(loop, opts->max_keys, out);
        if (rc)
            kx_err_set(err, NULL, 0, 0, "store url \"%s\": %s", url, strerror(-rc));
        return rc;
    }
    url_parts u;
    if (url_parse(url, &u, err)) {
        url_parts_wipe(&u);
        return -EINVAL;
    }
    /* The URL's credentials win over the options' (both may come from the config). */
    const char *username = u.has_user ? u.user : opts->username;
    const char *password = u.has_pass ? u.pass : opts->password;
    if (username && !username[0])
        username = NULL;
    int rc = (username && !password) ? -EINVAL
                                     : kx_store_redis_create_auth(loop, u.host, u.port, u.prefix,
                                                                  username, password, out);
    url_parts_wipe(&u);
    if (!rc && opts->log_windows && (rc = kx_store_redis_use_log(*out)) != 0) {
        kx_store_destroy(*out);
        *out = NULL;
    }
    if (rc == -EINVAL && username && !password)
        return kx_err_set(err, NULL, 0, 0, "store url \"%s\": user \"%s\" without a password",
                          u.shown, username);
    if (rc == -EINVAL)
        return kx_err_set(err, NULL, 0, 0,
                          "store url \"%s\": host must be a numeric IP address or \"localhost\" "
                          "(names are not resolved: that would block the loop)",
                          u.shown);
    if (rc)
        kx_err_set(err, NULL, 0, 0, "store url \"%s\": %s", u.shown, strerror(-rc));
    return rc;
}
