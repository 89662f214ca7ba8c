/* baseline in the memory store: as src/state/lua/baseline.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* ---- KX_AGG_BASELINE: counts per interval against their own history ---- */

static int64_t bl_interval(int64_t t, int64_t w)
{
    /* As the script computes it: math.floor(t / w) in doubles. */
    return (int64_t)floor((double)t / (double)w);
}

static int64_t bl_count(mem_win *w, int64_t j, int64_t iv)
{
    uint32_t lo = kx__mem_win_time_bound(w, j * iv, false);
    uint32_t hi = kx__mem_win_time_bound(w, (j + 1) * iv - 1, true);
    return hi > lo ? (int64_t)(hi - lo) : 0;
}

/* Folds the counts of intervals j0..j1 into (*mean, *var, *n): EWMA, as the script does. An
 * empty run is folded as zeros (none before the group's first events; past 3 * history + 2
 * zeros the mean and variance are 0). */
static void bl_fold(mem_win *w, int64_t j0, int64_t j1, int64_t iv, int64_t history, double alpha,
                    double *mean, double *var, int64_t *n)
{
    int64_t j = j0;
    while (j <= j1) {
        int64_t c = bl_count(w, j, iv);
        if (c == 0) {
            uint32_t i = kx__mem_win_time_bound(w, j * iv, false);
            int64_t nj = j1 + 1;
            if (i < w->n) {
                int64_t k = bl_interval(kx__mem_win_at(w, i)->t, iv);
                nj = k < j1 + 1 ? k : j1 + 1;
            }
            if (*n > 0) {
                int64_t g = nj - j, life = 3 * history + 2;
                for (int64_t z = 0; z < (g < life ? g : life); z++) {
                    double d = 0 - *mean;
                    double inc = alpha * d;
                    *mean = *mean + inc;
                    *var = (1 - alpha) * (*var + d * inc);
                }
                if (g > life)
                    *mean = *var = 0;
                *n += g;
            }
            j = nj;
            continue;
        }
        double d = (double)c - *mean;
        double inc = alpha * d;
        *mean = *mean + inc;
        *var = (1 - alpha) * (*var + d * inc);
        *n += 1;
        j++;
    }
}

/* The script's baseline branch, step for step (redis_scripts.h). */
int kx__mem_baseline(kx_store_memory *m, mem_win *w, const kx_window_add *op, int64_t now,
                     kx_window_result *res, bool *added_out)
{
    int64_t t = op->time_ms, iv = op->window_ms, late = op->ttl_ms - op->window_ms;
    double alpha = 2.0 / (double)(op->history + 1);
    if (now > w->members_expire_at && w->n > 0) {
        /* The script's :z and :e expired (wall clock) while its history lives on. */
        kx__mem_win_drop_front(w, w->n);
        for (uint32_t i = 0; i < w->ev_n; i++)
            free(w->ev[i].p);
        w->ev_n = 0;
    }
    int64_t k = bl_interval(t, iv);
    int64_t folded = w->bl_has ? w->bl_folded : bl_interval(t - late, iv) - 1;
    double mean = w->bl_has ? w->bl_mean : 0, var = w->bl_has ? w->bl_var : 0;
    int64_t n = w->bl_has ? w->bl_n : 0;
    size_t mlen = strlen(op->member);
    uint64_t h = kx_hash64(op->member, mlen, 0);
    /* A member already kept is a replay, never late: it may report its interval again. */
    bool added = kx__mem_win_find(w, h, op->member, mlen) == NULL;
    if (added && ((w->n > 0 && t < kx__mem_win_at(w, w->n - 1)->t - late) || k <= folded)) {
        res->late = true;
        return 0;
    }
    if (added) {
        int rc = kx__mem_win_insert(w, h, t, op->member, (uint32_t)mlen);
        if (rc)
            return rc;
    }
    int64_t maxt = kx__mem_win_at(w, w->n - 1)->t;
    int64_t lastclosed = bl_interval(maxt - late, iv) - 1;
    if (lastclosed > folded) {
        bl_fold(w, folded + 1, lastclosed, iv, op->history, alpha, &mean, &var, &n);
        folded = lastclosed;
    }
    kx__mem_win_drop_front(w, kx__mem_win_time_bound(w, maxt - op->ttl_ms, false));
    uint32_t cap = m->base.member_cap;
    if (w->n > cap) {
        uint32_t dropped = w->n - cap;
        kx__mem_win_drop_front(w, dropped);
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&m->rl_members, KX_LOG_WARN, "state",
                       "key \"%s\" over %u members: dropped the %u oldest", op->key, cap, dropped);
    }
    *added_out = added;
    int64_t c = bl_count(w, k, iv);
    double pm = mean, pv = var;
    int64_t pn = n;
    bl_fold(w, folded + 1, k - 1, iv, op->history, alpha, &pm, &pv, &pn);
    bool crossed = false;
    if (w->bl_alerted && w->bl_alerted_k == k) {
        crossed = !added;
    } else if (k > folded && pn >= op->history && (double)c > pm + op->deviations * sqrt(pv) &&
               kx_cmp_holds(op->cond, op->ncond, (double)c)) {
        crossed = true;
        w->bl_alerted = true;
        w->bl_alerted_k = k;
    }
    w->bl_has = true;
    w->bl_folded = folded;
    w->bl_mean = mean;
    w->bl_var = var;
    w->bl_n = n;
    /* The members expire with the history (:z and :e have the :a TTL): an open interval must
     * still be countable when the group's next event, however late in wall time, folds it. */
    w->expire_at = now + (3 * op->history + 2) * iv + late;
    w->members_expire_at = w->expire_at;
    res->added = added;
    res->count = res->cross_count = c;
    res->first_ms = res->cross_first_ms = k * iv;
    res->last_ms = res->cross_last_ms = t;
    res->crossed = crossed;
    res->cross_value = pm;
    return 0;
}
