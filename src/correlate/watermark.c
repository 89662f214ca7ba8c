/*
 * Rules judged by the watermark: absence (a group silent for longer than its timespan),
 * "at most N" (event_count conditions that hold for an empty window, judged per tumbling window
 * when it closes) and `resolve: auto` (resolve.c). Their sightings carry a payload (the tenant
 * and group values, then evidence) for whichever process judges them. After each batch that
 * moved the newest event time (and every second on a quiet stream in `run`), the correlator
 * publishes each partition's newest time to a watermark shared in the store (the minimum over
 * all partitions; a partition quiet 30 s moves with the wall clock), then asks the store for
 * the groups whose silence, or whose window's end, the watermark minus lateness passed; the
 * store hands each to exactly one process.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

/* The groups of one absence rule live under one key (the tenant is part of each group). */
void kx__absence_key(const kx_rule *c, char *out, size_t len)
{
    /* The id in full (hashed; readable prefix for operators); a closing rule's windows depend
     * on its timespan, so a reload that changes it starts a new key set. */
    unsigned long long h = (unsigned long long)kx_hash64(c->id, strlen(c->id), 5);
    if (c->closing)
        snprintf(out, len, "%.40s|%016llx|close|%lld", c->id, h, (long long)c->timespan_ms);
    else if (c->resolve_auto)
        snprintf(out, len, "%.40s|%016llx|resolve", c->id, h);
    else
        snprintf(out, len, "%.40s|%016llx|absence", c->id, h);
}

/* Rules judged by the watermark: absence, event_count conditions that hold for an empty
 * window ("at most N", judged when windows close), and `resolve: auto` (resolved once the
 * condition has not held for a timespan). */
bool kx__judged_by_watermark(const kx_rule *c)
{
    return c->kind == KX_RULE_CORRELATION &&
           (c->corr_type == KX_CORR_ABSENCE || c->closing || c->resolve_auto);
}

/* Keys of closing windows live until their windows can be judged, and some more. */
static int64_t close_ttl(const kx_correlator *p, const kx_rule *c)
{
    return 2 * c->timespan_ms + kx__corr_lateness(p, c) + 600000;
}

/* A due question for rule c at watermark wm, counted in pending (NULL: out of memory). */
static kx_op *absence_due_make(kx_correlator *p, kx_rule *c, int64_t wm)
{
    kx_op *op = kx__op_get(p);
    if (!op) {
        kx_log(KX_LOG_ERROR, "correlate", "out of memory: rule %s not checked", c->id);
        return NULL;
    }
    op->kind = c->closing ? KX_OP_CDUE : KX_OP_DUE;
    op->corr = c;
    op->watermark_ms = wm;
    op->token = kx__op_token(p); /* kept across the op's retries */
    kx__absence_key(c, op->key, sizeof(op->key));
    p->pending++;
    return op;
}

static void absence_due_issue(kx_correlator *p, kx_rule *c, int64_t wm)
{
    kx_op *op = absence_due_make(p, c, wm);
    if (op)
        kx__op_issue(op);
}

/* More groups are due than one answer holds: ask again from the loop, not from inside the
 * answer's callback (with the memory store that would nest one call per answer). */
void kx__absence_reask(kx_correlator *p, kx_rule *c, int64_t wm)
{
    kx_op *op = absence_due_make(p, c, wm);
    if (!op)
        return;
    op->next = p->reask;
    p->reask = op;
    ev_idle_start(p->loop, &p->reask_w);
}

void kx__reask_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    kx_correlator *p = w->data;
    ev_idle_stop(loop, w);
    kx_op *op = p->reask;
    p->reask = NULL;
    while (op) {
        kx_op *next = op->next;
        op->next = NULL;
        kx__op_issue(op);
        op = next;
    }
}

/* Asks the store for the groups of every absence rule whose silence the watermark has passed. */
void kx__absence_check(kx_correlator *p)
{
    if (!p->wm_known)
        return; /* nothing to judge by yet */
    if (p->store_down) {
        /* The next check asks again once the store is back; at the end of the input there is
         * no next check, so say what is not judged. */
        if (p->final)
            kx_log(KX_LOG_WARN, "correlate",
                   "state store down at the end of the input: absence and at-most-N rules are "
                   "not judged");
        return;
    }
    p->wm_checked = p->wm_max_t;
    p->parts_dirty = false;
    if (!p->opts.wall_clock) {
        /* replay: this process's own event time; a replay's files must not move (or be held
         * back by) the watermark live processes share in the store. */
        for (size_t i = 0; i < kx_ruleset_size(p->rules); i++) {
            kx_rule *c = kx_ruleset_at(p->rules, i);
            if (kx__judged_by_watermark(c))
                absence_due_issue(p, c, p->wm_max_t - (p->final ? 0 : kx__corr_lateness(p, c)));
        }
        return;
    }
    /* First the shared watermark (our partitions in, the minimum over all out); the due
     * questions follow in its callback. */
    kx_op *op = kx__op_get(p);
    if (!op) {
        kx_log(KX_LOG_ERROR, "correlate", "out of memory: watermark rules not checked");
        return;
    }
    op->kind = KX_OP_WM;
    op->corr = NULL; /* (logs of a failure name a rule: the first judged by the watermark) */
    for (size_t i = 0; i < kx_ruleset_size(p->rules) && !op->corr; i++)
        if (kx__judged_by_watermark(kx_ruleset_at(p->rules, i)))
            op->corr = kx_ruleset_at(p->rules, i);
    if (!op->corr) {
        kx__op_put(p, op);
        return;
    }
    op->watermark_ms = p->final ? 1 : 0; /* judged at the end of the input */
    /* Each entry: the name in strs; its newest time and whether it is live in evidence. */
    for (size_t i = 0; i < p->nparts; i++) {
        unsigned char live = p->parts[i].live || p->wm_refresh;
        if (kx_buf_append(&op->strs, p->parts[i].name, strlen(p->parts[i].name) + 1) ||
            kx_buf_append(&op->evidence, &p->parts[i].max_ms, sizeof(int64_t)) ||
            kx_buf_append(&op->evidence, &live, 1)) {
            kx_log(KX_LOG_ERROR, "correlate", "out of memory: watermark rules not checked");
            kx__op_put(p, op);
            return;
        }
    }
    for (size_t i = 0; i < p->nparts; i++)
        p->parts[i].live = false;
    p->wm_refresh = false;
    p->pending++;
    kx__op_issue(op);
}

#define WM_ENTRY_BYTES (sizeof(int64_t) + 1)

/* A publish queued for a retry: by the time it goes out our partitions have been waiting
 * for the store, which is not silence of theirs. */
void kx__wm_mark_live(kx_op *op)
{
    for (size_t at = sizeof(int64_t); at < op->evidence.len; at += WM_ENTRY_BYTES)
        op->evidence.data[at] = 1;
}

/* The shared watermark is known: ask each watermark rule for what it passed. */
static void wm_cb(void *ud, int status, bool known, int64_t wm)
{
    kx_op *op = ud;
    kx_correlator *p = op->p;
    if (kx__op_failed(op, status))
        return;
    if (status && status != -ECANCELED)
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "correlate", "watermark update failed: %s",
                       strerror(-status));
    if (status == 0) {
        bool final = op->watermark_ms == 1;
        int64_t base = known ? wm : p->wm_max_t;
        for (size_t i = 0; i < kx_ruleset_size(p->rules); i++) {
            kx_rule *c = kx_ruleset_at(p->rules, i);
            if (kx__judged_by_watermark(c))
                absence_due_issue(p, c, base - (final ? 0 : kx__corr_lateness(p, c)));
        }
    }
    kx__op_done(op);
}

int kx__wm_issue(kx_op *op)
{
    kx_correlator *p = op->p;
    if (p->store_down)
        return -EAGAIN;
    size_t n = op->evidence.len / WM_ENTRY_BYTES, at = 0;
    if (n > KX_STORE_ABSENCE_DUE_MAX)
        n = KX_STORE_ABSENCE_DUE_MAX;
    for (size_t i = 0; i < n; i++) {
        p->wm_entries[i].name = op->strs.data + at;
        memcpy(&p->wm_entries[i].max_ms, op->evidence.data + i * WM_ENTRY_BYTES, sizeof(int64_t));
        p->wm_entries[i].live = op->evidence.data[i * WM_ENTRY_BYTES + sizeof(int64_t)] != 0;
        at += strlen(op->strs.data + at) + 1;
    }
    kx_watermark_op w = {
        .key = "watermark",
        .mine = p->wm_entries,
        .n = n,
        .now_ms = kx_now_ms(),
        /* A partition quiet this long moves on with the wall clock (run); in a replay only
         * event time counts. */
        .quiet_ms = !p->opts.wall_clock   ? (int64_t)1 << 50
                    : p->opts.wm_quiet_ms ? p->opts.wm_quiet_ms
                                          : KX_WM_QUIET_MS,
        .ttl_ms = KX_WM_TTL_MS,
    };
    return kx_store_watermark(p->store, &w, wm_cb, op);
}

static void payload_put(kx_buf *b, const char *v, size_t len)
{
    unsigned char n[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
                          (unsigned char)(len >> 24)};
    kx_buf_append(b, n, 4);
    kx_buf_append(b, v, len);
}

/* The start of a sighting's payload: op's tenant and its ng group values (from strs; lengths
 * from the offsets, as a value may hold a NUL byte). */
void kx__payload_group(kx_buf *b, const kx_op *op, size_t ng)
{
    payload_put(b, op->strs.data, (ng ? op->val_off[0] : op->strs.len) - 1);
    for (size_t i = 0; i < ng; i++) {
        size_t end = i + 1 < ng ? op->val_off[i + 1] : op->strs.len;
        payload_put(b, op->strs.data + op->val_off[i], end - op->val_off[i] - 1);
    }
}

/* Splits a payload into NUL-terminated strings in out (tenant, then ng values) and the
 * evidence; false when it is damaged. */
bool kx__payload_split(const char *payload, size_t len, size_t ng, kx_buf *out, size_t *offs,
                       const char **evidence, size_t *evidence_len)
{
    size_t at = 0;
    kx_buf_reset(out);
    for (size_t i = 0; i <= ng; i++) {
        if (len - at < 4)
            return false;
        const unsigned char *n = (const unsigned char *)payload + at;
        size_t l = (size_t)n[0] | (size_t)n[1] << 8 | (size_t)n[2] << 16 | (size_t)n[3] << 24;
        at += 4;
        if (len - at < l)
            return false;
        offs[i] = out->len;
        kx_buf_append(out, payload + at, l);
        kx_buf_putc(out, '\0');
        at += l;
    }
    *evidence = payload + at;
    *evidence_len = len - at;
    return true;
}

/* An absence alert from a payload as the sighting stored it. status: "firing" (the group went
 * silent) or "resolved" (it came back at until_ms). */
static void absence_alert(kx_correlator *p, kx_rule *c, const char *payload, size_t len,
                          int64_t since_ms, int64_t until_ms, const char *status,
                          const char *evidence, size_t evidence_len, int64_t count)
{
    kx_kv group[KX_MAX_GROUP_BY];
    size_t offs[KX_MAX_GROUP_BY + 1];
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    const char *stored_ev;
    size_t stored_len;
    if (!kx__payload_split(payload, len, ng, &p->payload, offs, &stored_ev, &stored_len)) {
        kx_log(KX_LOG_ERROR, "correlate", "rule %s: stored group of an absence is damaged", c->id);
        return;
    }
    const char *tenant = p->payload.data + offs[0];
    for (size_t i = 0; i < ng; i++) {
        group[i].key = c->group_by[i];
        group[i].value = p->payload.data + offs[i + 1];
    }
    if (!evidence) {
        evidence = stored_ev;
        evidence_len = stored_len;
    }
    const char *evs[1] = {evidence};
    size_t evl[1] = {evidence_len};
    c->matches++;
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = c->title,
        .rule_level = c->level,
        .team = kx__corr_team(c),
        .tenant = tenant,
        .category = kx__corr_category(c),
        .group = group,
        .ngroup = ng,
        .count = count,
        .window_s = c->timespan_ms / 1000,
        .first_seen_ms = since_ms,
        .last_seen_ms = until_ms,
        .status = status,
        .tags = c->tags,
        .ntags = c->ntags,
        .events = evs,
        .events_len = evl,
        .nevents = evidence && evidence_len ? 1 : 0,
    };
    /* An absence is about a silence, whose last event is old by design: never backfill. */
    kx__corr_send(p, &a, c, false);
}

void kx__absence_cb(void *ud, int status, const kx_absence_result *res)
{
    kx_op *op = ud;
    kx_correlator *p = op->p;
    kx_rule *c = op->corr;
    if (kx__op_failed(op, status))
        return;
    if (status == -ENOSPC)
        kx_log_limited(&p->rl_store, KX_LOG_WARN, "correlate",
                       "rule %s: state key cap reached, sighting not recorded", c->id);
    else if (status && status != -ECANCELED)
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "correlate",
                       "rule %s: absence update failed: %s", c->id, strerror(-status));
    if (status) {
        kx__op_done(op);
        return;
    }
    if (c->resolve_auto) {
        kx__resolve_answer(op, res);
        kx__op_done(op);
        return;
    }
    if (op->kind == KX_OP_TOUCH && res->outcome != KX_ABSENCE_NONE && c->generate) {
        /* The new sighting's own evidence (the end of its payload) shows the return. */
        if (res->outcome == KX_ABSENCE_GAP) /* the silence nobody reported yet */
            absence_alert(p, c, res->payload[0], res->payload_len[0], res->since_ms, res->since_ms,
                          "firing", NULL, 0, 0);
        absence_alert(p, c, op->evidence.data, op->evidence.len, res->since_ms, op->time_ms,
                      "resolved", NULL, 0, 0);
    } else if (op->kind == KX_OP_DUE) {
        for (size_t i = 0; i < res->n && c->generate; i++)
            absence_alert(p, c, res->payload[i], res->payload_len[i], res->last_ms[i],
                          res->last_ms[i], "firing", NULL, 0, 0);
        if (res->n == KX_ABSENCE_DUE_BATCH) /* more may be due */
            kx__absence_reask(p, c, op->watermark_ms);
    } else if (op->kind == KX_OP_CTOUCH && res->late) {
        kx_metric_inc(KX_M_EVENTS_LATE);
        char t[40];
        kx_time_format(op->time_ms, t, sizeof(t));
        kx_log_limited(&p->rl_late, KX_LOG_WARN, "correlate",
                       "rule %s: event at %s is in a window already closed: not counted", c->id, t);
    } else if (op->kind == KX_OP_CDUE) {
        /* A closed window whose count met the condition: [start, start + timespan). */
        for (size_t i = 0; i < res->n && c->generate; i++)
            absence_alert(p, c, res->payload[i], res->payload_len[i], res->last_ms[i],
                          res->last_ms[i] + c->timespan_ms - 1, NULL, NULL, 0, res->count[i]);
        if (res->more || res->n == KX_ABSENCE_DUE_BATCH)
            kx__absence_reask(p, c, op->watermark_ms);
    }
    kx__op_done(op);
}

/* The partition of message m moved to t (the newest event time read from it). */
/* Same partition? No formatting per event: the partition number, then the topic's bytes. */
static bool part_is(const struct wm_part *e, const kx_msg *m)
{
    return e->partition == m->partition &&
           strncmp(e->topic, m->topic ? m->topic : "-", sizeof(e->topic) - 1) == 0;
}

void kx__part_seen(kx_correlator *p, const kx_msg *m, int64_t t)
{
    size_t i = p->last_part;
    if (i >= p->nparts || !part_is(&p->parts[i], m)) {
        for (i = 0; i < p->nparts && !part_is(&p->parts[i], m); i++)
            ;
        if (i == p->nparts) {
            char name[272];
            snprintf(name, sizeof(name), "%.250s/%d", m->topic ? m->topic : "-", (int)m->partition);
            for (char *c = name; *c; c++)
                if (*c == ' ')
                    *c = '_';
            if (p->nparts == KX_STORE_ABSENCE_DUE_MAX) {
                kx_log_limited(&p->rl_parts, KX_LOG_WARN, "correlate",
                               "more than %d input partitions: %s does not count in the "
                               "watermark",
                               KX_STORE_ABSENCE_DUE_MAX, name);
                return;
            }
            if (p->nparts == p->parts_cap) {
                size_t cap = p->parts_cap ? p->parts_cap * 2 : 16;
                struct wm_part *np = realloc(p->parts, cap * sizeof(*np));
                kx_watermark_entry *ne = realloc(p->wm_entries, cap * sizeof(*ne));
                if (np)
                    p->parts = np;
                if (ne)
                    p->wm_entries = ne;
                if (!np || !ne) {
                    kx_log_limited(&p->rl_parts, KX_LOG_ERROR, "correlate",
                                   "out of memory: %s does not count in the watermark", name);
                    return;
                }
                p->parts_cap = cap;
            }
            snprintf(p->parts[i].name, sizeof(p->parts[i].name), "%s", name);
            snprintf(p->parts[i].topic, sizeof(p->parts[i].topic), "%s", m->topic ? m->topic : "-");
            p->parts[i].partition = m->partition;
            p->parts[i].max_ms = t;
            p->parts[i].live = false;
            p->nparts++;
        }
        p->last_part = i;
    }
    if (t > p->parts[i].max_ms)
        p->parts[i].max_ms = t;
    p->parts[i].live = true;
    p->parts_dirty = true;
}

int kx__absence_issue(kx_op *op)
{
    kx_correlator *p = op->p;
    const kx_rule *c = op->corr;
    if (p->store_down)
        return -EAGAIN;
    if (op->kind == KX_OP_CTOUCH) {
        kx_close_touch t;
        kx__ctouch_of(op, &t);
        return kx_store_close_touch(p->store, &t, kx__absence_cb, op);
    }
    if (op->kind == KX_OP_CDUE) {
        kx_close_due d = {
            .key = op->key,
            .watermark_ms = op->watermark_ms,
            .timespan_ms = c->timespan_ms,
            .ttl_ms = close_ttl(p, c),
            .cond = c->cond, /* the rule's own terms (klaxon/compare.h) */
            .ncond = c->ncond,
            .limit = KX_ABSENCE_DUE_BATCH,
            .token = op->token,
        };
        return kx_store_close_due(p->store, &d, kx__absence_cb, op);
    }
    if (op->kind == KX_OP_TOUCH) {
        kx_absence_touch t;
        kx__touch_of(op, &t);
        return kx_store_absence_touch(p->store, &t, kx__absence_cb, op);
    }
    kx_absence_due d = {
        .key = op->key,
        .watermark_ms = op->watermark_ms,
        .timespan_ms = c->timespan_ms,
        .keep_ms = c->keep_ms,
        .limit = KX_ABSENCE_DUE_BATCH,
        .token = op->token,
    };
    return kx_store_absence_due(p->store, &d, kx__absence_cb, op);
}

uint64_t kx__op_token(kx_correlator *p)
{
    uint64_t t = p->token_base ^ ++p->token_seq;
    return t ? t : ++p->token_seq;
}

/* The store's touch for a KX_OP_TOUCH op (alone, or with its key's others: preagg.c). */
void kx__touch_of(const kx_op *op, kx_absence_touch *out)
{
    *out = (kx_absence_touch){
        .key = op->key,
        .group = op->member.data,
        .payload = op->evidence.data,
        .payload_len = op->evidence.len,
        .time_ms = op->time_ms,
        .timespan_ms = op->corr->timespan_ms,
        .keep_ms = op->corr->keep_ms,
        .mode = op->touch_mode,
        .token = op->token,
    };
}

/* The store's closing touch for a KX_OP_CTOUCH op (alone, or with its key's others). */
void kx__ctouch_of(const kx_op *op, kx_close_touch *out)
{
    *out = (kx_close_touch){
        .key = op->key,
        .group = op->group,
        .identity = op->member.data,
        .payload = op->evidence.data,
        .payload_len = op->evidence.len,
        .time_ms = op->time_ms,
        .timespan_ms = op->corr->timespan_ms,
        .ttl_ms = close_ttl(op->p, op->corr),
    };
}

/* Once per ruleset (not per batch): does any rule judge by the watermark? */
bool kx__any_judged_by_watermark(kx_ruleset *rules)
{
    for (size_t i = 0; i < kx_ruleset_size(rules); i++)
        if (kx__judged_by_watermark(kx_ruleset_at(rules, i)))
            return true;
    return false;
}
