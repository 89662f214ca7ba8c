/*
 * Per-team alert counters (alert_int.h): raised per team, delivered and dead-lettered per
 * team and sink, for /metrics. Teams come from the rules and routes, so there are few; the
 * table still has a cap (KX__TEAMS_MAX): past it a team is counted as "other", logged once.
 * Memory is fixed at create: cap x sinks counters.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "alert_int.h"
#include "klaxon/metrics.h"

struct kx__teams {
    size_t nsinks, n;
    char *name[KX__TEAMS_MAX + 1]; /* the last slot is "other" */
    uint64_t raised[KX__TEAMS_MAX + 1];
    uint64_t *delivered, *dead; /* [team * nsinks + sink] */
    bool warned;
};

kx__teams *kx__teams_create(size_t nsinks)
{
    kx__teams *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->nsinks = nsinks;
    t->delivered = calloc((KX__TEAMS_MAX + 1) * (nsinks ? nsinks : 1), sizeof(uint64_t));
    t->dead = calloc((KX__TEAMS_MAX + 1) * (nsinks ? nsinks : 1), sizeof(uint64_t));
    t->name[KX__TEAMS_MAX] = strdup("other");
    if (!t->delivered || !t->dead || !t->name[KX__TEAMS_MAX]) {
        kx__teams_destroy(t);
        return NULL;
    }
    return t;
}

void kx__teams_destroy(kx__teams *t)
{
    if (!t)
        return;
    for (size_t i = 0; i <= KX__TEAMS_MAX; i++)
        free(t->name[i]);
    free(t->delivered);
    free(t->dead);
    free(t);
}

uint16_t kx__teams_index(kx__teams *t, const char *team)
{
    if (!team)
        team = "default";
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->name[i], team))
            return (uint16_t)i;
    if (t->n < KX__TEAMS_MAX && (t->name[t->n] = strdup(team)))
        return (uint16_t)t->n++;
    if (!t->warned) {
        t->warned = true;
        kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
               "more than %d teams: the alerts of team \"%s\" and later new teams are counted as "
               "team \"other\" in the per-team metrics",
               KX__TEAMS_MAX, team);
    }
    return KX__TEAMS_MAX;
}

uint16_t kx__teams_index_json(kx__teams *t, const char *json, size_t len)
{
    json_t *a = json_loadb(json, len, 0, NULL);
    uint16_t i = kx__teams_index(t, json_string_value(json_object_get(a, "team")));
    json_decref(a);
    return i;
}

void kx__teams_raised(kx__teams *t, uint16_t team)
{
    t->raised[team]++;
}

void kx__teams_ended(kx__teams *t, uint16_t team, size_t sink, bool delivered)
{
    if (sink < t->nsinks)
        (delivered ? t->delivered : t->dead)[team * t->nsinks + sink]++;
}

static int family(kx_buf *out, const char *name, const char *help)
{
    return kx_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
}

int kx__teams_render(const kx__teams *t, const char *const *sinks, kx_buf *out)
{
    int rc = family(out, "klaxon_team_alerts_raised_total", "Alerts raised, by team.");
    for (size_t i = 0; i <= KX__TEAMS_MAX && !rc; i++) {
        if (!t->name[i] || (i == KX__TEAMS_MAX && !t->raised[i]))
            continue;
        rc = kx_buf_puts(out, "klaxon_team_alerts_raised_total{team=\"");
        rc = rc ? rc : kx_metrics_put_label(out, t->name[i]);
        rc = rc ? rc : kx_buf_printf(out, "\"} %llu\n", (unsigned long long)t->raised[i]);
    }
    static const char *const names[2] = {"klaxon_team_delivered_total",
                                         "klaxon_team_dead_letters_total"};
    static const char *const helps[2] = {"Alerts a sink acknowledged, by team and sink.",
                                         "Alerts a sink gave up on, by team and sink."};
    for (int k = 0; k < 2 && !rc; k++) {
        const uint64_t *v = k ? t->dead : t->delivered;
        rc = family(out, names[k], helps[k]);
        for (size_t i = 0; i <= KX__TEAMS_MAX && !rc; i++)
            for (size_t s = 0; s < t->nsinks && !rc; s++) {
                uint64_t n = v[i * t->nsinks + s];
                if (!n) /* only the pairs that happened: teams x sinks stays small */
                    continue;
                rc = kx_buf_printf(out, "%s{team=\"", names[k]);
                rc = rc ? rc : kx_metrics_put_label(out, t->name[i]);
                rc = rc ? rc : kx_buf_puts(out, "\",sink=\"");
                rc = rc ? rc : kx_metrics_put_label(out, sinks[s]);
                rc = rc ? rc : kx_buf_printf(out, "\"} %llu\n", (unsigned long long)n);
            }
    }
    return rc;
}
