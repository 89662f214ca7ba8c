/*
 * The flood valve: a route that receives more than `max` alerts of one rule within `per`
 * stops sending them one by one. The alert that crosses the limit is replaced by one notice
 * ("flood of <rule>: muted"), the next ones are muted (counted in klaxon_alerts_muted_total,
 * never silently), and once a whole `per` passes with no more than `max` alerts of that
 * rule, a summary notice says how many were muted and the valve opens again.
 *
 *   alerting:
 *     flood: {max: 20, per: 5m}      # default for every route (optional)
 *     routes:
 *       - match: {team: secops}
 *         flood: {max: 5, per: 10m}  # this route's own; `flood: off` for none
 *
 * State is per (route, rule), in this process (the routes' counts of several processes
 * are not shared). Windows are fixed: the first alert of a quiet rule opens one. Bounded:
 * at most KX__FLOOD_MAX_KEYS keys; past that, the oldest idle key is reused, and a new
 * rule on a full table is not limited (logged): the valve fails open for muting, since
 * muting is what could hide a detection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "klaxon/metrics.h"

#define KX__FLOOD_MAX_KEYS 4096

typedef struct fkey {
    bool used;
    uint16_t route;
    uint64_t rule_hash;
    int64_t win_start, last_ms; /* monotonic */
    uint64_t count;             /* alerts in the current window */
    bool muting;
    uint64_t muted;     /* since the flood started */
    int64_t since_ms;   /* wall clock: when the flood started */
    bool summary_due;   /* the flood ended (seen by check): the sweep sends the summary */
    uint64_t due_muted; /* ... with this count */
    char rule[128];
    char title[160];
    char level[16];
    char team[64];
    char tenant[64];
} fkey;

struct kx__flood {
    fkey *keys;
    size_t n, cap;
};

int kx__flood_parse(const kx_yaml_node *n, const char *file, kx__flood_cfg *out, kx_err *err)
{
    static const char *const keys[] = {"max", "per", NULL};
    memset(out, 0, sizeof(*out));
    if (kx_yaml_is(n, "off"))
        return 0;
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "flood: expected {max: N, per: DURATION} or off");
    int rc = kx_yaml_check_keys(n, file, keys, err);
    if (rc)
        return rc;
    const kx_yaml_node *m = kx_yaml_get(n, "max"), *p = kx_yaml_get(n, "per");
    if (!m || !p)
        return kx_yaml_err(err, file, n, "flood: needs max and per");
    long long v;
    if ((rc = kx_yaml_int(m, file, 1, 1000000, &v, err)))
        return rc;
    out->max = (uint64_t)v;
    if ((rc = kx_yaml_duration_ms(p, file, &v, err)))
        return rc;
    if (v < 1000 || v > 86400000LL)
        return kx_yaml_err(err, file, p, "flood: per must be between 1s and 24h");
    out->per_ms = v;
    out->on = true;
    return 0;
}

kx__flood *kx__flood_create(void)
{
    return calloc(1, sizeof(kx__flood));
}

void kx__flood_destroy(kx__flood *f)
{
    if (!f)
        return;
    free(f->keys);
    free(f);
}

static void copy(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

static fkey *find(kx__flood *f, uint16_t route, const char *rule, uint64_t h, int64_t now,
                  int64_t per_ms)
{
    fkey *idle = NULL;
    for (size_t i = 0; i < f->n; i++) {
        fkey *k = &f->keys[i];
        if (k->used && k->route == route && k->rule_hash == h && !strcmp(k->rule, rule))
            return k;
        if (!k->used || (!k->muting && now - k->last_ms > per_ms))
            if (!idle || !idle->used || (k->used && k->last_ms < idle->last_ms))
                idle = k;
    }
    if (f->n < f->cap || f->n < KX__FLOOD_MAX_KEYS) {
        if (f->n == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 64;
            fkey *p = realloc(f->keys, cap * sizeof(*p));
            if (!p)
                return idle;
            f->keys = p;
            f->cap = cap;
        }
        memset(&f->keys[f->n], 0, sizeof(fkey));
        return &f->keys[f->n++];
    }
    return idle;
}

/* A window of k is over: a flood whose window stayed within max has ended (its summary is
 * due: the sweep sends it); a new window starts now. */
static void close_window(fkey *k, const kx__flood_cfg *cfg, int64_t now)
{
    if (k->muting && k->count <= cfg->max) {
        k->muting = false;
        k->summary_due = true;
        k->due_muted = k->muted;
        k->muted = 0;
    }
    k->win_start = now;
    k->count = 0;
}

kx__flood_verdict kx__flood_check(kx__flood *f, const kx__flood_cfg *cfg, uint16_t route,
                                  const kx_alert *a, int64_t now)
{
    if (!cfg->on)
        return KX__FLOOD_PASS;
    const char *rule = a->rule_id ? a->rule_id : "";
    uint64_t h = kx_hash64(rule, strlen(rule), route);
    fkey *k = find(f, route, rule, h, now, cfg->per_ms);
    if (!k) {
        kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
               "flood valve: %d keys in use, rule %s is not limited on route %u",
               KX__FLOOD_MAX_KEYS, rule, route + 1);
        return KX__FLOOD_PASS;
    }
    if (!k->used || k->rule_hash != h || strcmp(k->rule, rule) || k->route != route) {
        memset(k, 0, sizeof(*k));
        k->used = true;
        k->route = route;
        k->rule_hash = h;
        k->win_start = now;
        copy(k->rule, sizeof(k->rule), rule);
    }
    /* Keep what a notice needs (the latest alert's). */
    copy(k->title, sizeof(k->title), a->rule_title);
    copy(k->level, sizeof(k->level), a->rule_level);
    copy(k->team, sizeof(k->team), a->team);
    copy(k->tenant, sizeof(k->tenant), a->tenant);
    if (now - k->win_start >= cfg->per_ms)
        close_window(k, cfg, now);
    k->last_ms = now;
    k->count++;
    if (k->muting) {
        k->muted++;
        kx_metric_inc(KX_M_ALERTS_MUTED);
        return KX__FLOOD_MUTE;
    }
    if (k->count <= cfg->max)
        return KX__FLOOD_PASS;
    k->muting = true;
    k->muted = 1;
    k->since_ms = kx_now_ms();
    kx_metric_inc(KX_M_ALERTS_MUTED);
    kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
           "flood valve: rule %s sent more than %llu alerts in %lld s on route %u: muted until "
           "it calms down",
           rule, (unsigned long long)cfg->max, (long long)(cfg->per_ms / 1000), route + 1);
    return KX__FLOOD_START;
}

/* The notice for key k: an alert of its rule with the flood in its title and group. */
static void notice(const fkey *k, bool ended, int64_t per_ms, kx_alert *a, kx_kv *group,
                   char *title, size_t tlen, char *muted, size_t mlen)
{
    snprintf(muted, mlen, "%llu", (unsigned long long)k->muted);
    if (ended)
        snprintf(title, tlen, "Flood over: %llu alerts of \"%s\" were muted",
                 (unsigned long long)k->muted, k->title);
    else
        snprintf(title, tlen, "Flood: \"%s\" alerts are muted until it calms down", k->title);
    group[0] = (kx_kv){"klaxon.flood", ended ? "ended" : "started"};
    group[1] = (kx_kv){"muted", muted};
    static const char *const tags[] = {"klaxon.flood"};
    memset(a, 0, sizeof(*a));
    a->rule_id = k->rule;
    a->rule_title = title;
    a->rule_level = k->level[0] ? k->level : NULL;
    a->team = k->team[0] ? k->team : NULL;
    a->tenant = k->tenant[0] ? k->tenant : "default";
    a->category = "flood";
    a->group = group;
    a->ngroup = 2;
    a->count = (int64_t)k->muted;
    a->window_s = per_ms / 1000;
    a->first_seen_ms = k->since_ms;
    a->last_seen_ms = kx_now_ms();
    a->tags = tags;
    a->ntags = 1;
}

void kx__flood_notice(kx__flood *f, const kx__flood_cfg *cfg, uint16_t route, const kx_alert *a,
                      void (*send)(void *ud, uint16_t route, const kx_alert *notice), void *ud)
{
    const char *rule = a->rule_id ? a->rule_id : "";
    uint64_t h = kx_hash64(rule, strlen(rule), route);
    for (size_t i = 0; i < f->n; i++) {
        fkey *k = &f->keys[i];
        if (!k->used || k->route != route || k->rule_hash != h || strcmp(k->rule, rule))
            continue;
        kx_alert n;
        kx_kv group[2];
        char title[256], muted[24];
        if (k->summary_due) {
            /* The flood that ended before this one: its summary first, with its own count. */
            uint64_t now_muted = k->muted;
            k->muted = k->due_muted;
            notice(k, true, cfg->per_ms, &n, group, title, sizeof(title), muted, sizeof(muted));
            send(ud, route, &n);
            k->muted = now_muted;
            k->summary_due = false;
        }
        notice(k, false, cfg->per_ms, &n, group, title, sizeof(title), muted, sizeof(muted));
        send(ud, route, &n);
        return;
    }
}

size_t kx__flood_sweep(kx__flood *f, const kx__flood_cfg *(*cfg_of)(void *ud, uint16_t route),
                       int64_t now, void (*send)(void *ud, uint16_t route, const kx_alert *n),
                       void *ud)
{
    size_t active = 0;
    for (size_t i = 0; i < f->n; i++) {
        fkey *k = &f->keys[i];
        if (!k->used)
            continue;
        const kx__flood_cfg *cfg = cfg_of(ud, k->route);
        if (!cfg || !cfg->on) {
            k->used = false;
            continue;
        }
        if (now - k->win_start >= cfg->per_ms)
            close_window(k, cfg, now);
        if (k->summary_due) {
            kx_alert n;
            kx_kv group[2];
            char title[256], muted[24];
            uint64_t now_muted = k->muted;
            k->muted = k->due_muted;
            notice(k, true, cfg->per_ms, &n, group, title, sizeof(title), muted, sizeof(muted));
            kx_log(KX_LOG_INFO, KX__ALERT_MODULE,
                   "flood valve: rule %s on route %u calmed down; %llu alerts were muted", k->rule,
                   k->route + 1, (unsigned long long)k->due_muted);
            k->muted = now_muted;
            k->summary_due = false;
            send(ud, k->route, &n);
        }
        if (k->muting)
            active++;
        else if (now - k->last_ms > cfg->per_ms)
            k->used = false;
    }
    return active;
}
