/*
 * An event (or a chained correlation's alert) into a window update: the referenced rule's
 * position, the group values (aliases), the key (tenant and rule readable, the group hashed),
 * the member (the event's identity, and the value an aggregate needs), the evidence, and the
 * group cap's word on a new group. Absence and closing windows get their sighting instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

/* Values a correlation update reads: from an event, or from a chained correlation's alert
 * (its group). */
typedef struct corr_src {
    const kx_event *ev;    /* or NULL: */
    const kx_rule *child;  /* the referenced correlation that fired */
    const kx_op *child_op; /* its group values */
} corr_src;

static bool src_get(const corr_src *s, const char *field, const char **v, size_t *vl)
{
    if (s->ev) {
        const kx_field *f = kx_event_get(s->ev, field);
        if (!f)
            return false;
        *v = f->value;
        *vl = f->value_len;
        return true;
    }
    for (size_t i = 0; i < kx__corr_ngroup(s->child); i++) {
        if (!strcmp(kx__corr_group_name(s->child, i), field)) {
            *v = s->child_op->strs.data + s->child_op->val_off[i];
            *vl = strlen(*v);
            return true;
        }
    }
    return false;
}

/* A group's two hashes as 32 hex digits and a NUL (out: 33 bytes). */
static void group_hex(char *out, uint64_t h1, uint64_t h2)
{
    kx_hex64(out, h1);
    kx_hex64(out + 16, h2);
    out[32] = '\0';
}

/* Appends the value this update carries after 0x1f in its member; false when the source lacks
 * what the rule aggregates (counted, logged, not counted in the window). */
static bool member_value(kx_correlator *p, const kx_rule *c, int ref, const corr_src *src,
                         kx_buf *out)
{
    const char *v;
    size_t vl;
    char num[40];
    size_t start = out->len;
    kx_buf_putc(out, 0x1f);
    switch (c->corr_type) {
    case KX_CORR_TEMPORAL:
    case KX_CORR_TEMPORAL_ORDERED:
        kx_buf_put_i64(out, ref);
        return true;
    case KX_CORR_VALUE_SUM:
    case KX_CORR_VALUE_AVG: {
        const char *fname = c->value_fields[(size_t)ref * c->nvalue_fields];
        if (!src_get(src, fname, &v, &vl) || vl == 0 || vl >= sizeof(num))
            goto missing;
        memcpy(num, v, vl);
        num[vl] = '\0';
        char *end;
        double d = strtod(num, &end);
        if (*end || d != d || d > 9e15 || d < -9e15)
            goto missing;
        /* %.17g: the store parses back the exact double (both backends). */
        kx_buf_put_g17(out, d);
        return true;
    }
    default: /* value_count (a tuple of fields), value_percentile */
        for (size_t k = 0; k < c->nvalue_fields; k++) {
            const char *fname = c->value_fields[(size_t)ref * c->nvalue_fields + k];
            if (!src_get(src, fname, &v, &vl))
                goto missing;
            if (k)
                kx_buf_putc(out, 0x1e);
            /* Long values are hashed: distinctness is kept, the member stays small. */
            if (vl > 128)
                kx_buf_printf(out, "#%016llx%016llx", (unsigned long long)kx_hash64(v, vl, 1),
                              (unsigned long long)kx_hash64(v, vl, 2));
            else
                kx_buf_append(out, v, vl);
        }
        return true;
    }
missing:
    out->len = start;
    kx_metric_inc(KX_M_CORR_SKIPPED);
    kx_log_limited(&p->rl_value, KX_LOG_WARN, "correlate",
                   "rule %s: field \"%s\" missing or not a number: event not counted", c->id,
                   c->value_fields[(size_t)ref * c->nvalue_fields]);
    return false;
}

static void corr_update(kx_correlator *p, kx_rule *c, const kx_rule *ref_rule, const corr_src *src,
                        const char *tenant, int64_t time_ms, const char *identity,
                        const kx_buf *evidence)
{
    int ref = kx_corr_ref_index(c, ref_rule);
    if (ref < 0)
        return;
    kx_op *op = kx__op_get(p);
    if (!op) {
        kx_log(KX_LOG_ERROR, "correlate", "out of memory: correlation %s not updated", c->id);
        return;
    }
    op->corr = c;
    op->time_ms = time_ms;
    kx_buf_puts(&op->member, identity);
    if (c->corr_type != KX_CORR_EVENT_COUNT && c->corr_type != KX_CORR_BASELINE &&
        c->corr_type != KX_CORR_ABSENCE && !member_value(p, c, ref, src, &op->member)) {
        kx__op_put(p, op);
        return;
    }
    /* Group values in order, NUL-separated; a missing field groups as "". */
    op->tenant_off = 0;
    kx_buf_append(&op->strs, tenant, strlen(tenant) + 1);
    uint64_t h1 = kx_hash64(c->id, strlen(c->id), 1), h2 = kx_hash64(c->id, strlen(c->id), 2);
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    for (size_t i = 0; i < ng; i++) {
        const char *v = "";
        size_t vl = 0;
        if (!src_get(src, c->group_fields[(size_t)ref * c->ngroup_by + i], &v, &vl)) {
            v = "";
            vl = 0;
        }
        op->val_off[i] = op->strs.len;
        kx_buf_append(&op->strs, v, vl);
        kx_buf_append(&op->strs, "", 1);
        h1 = kx_hash64(v, vl + 1, h1);
        h2 = kx_hash64(v, vl + 1, h2);
    }
    /* The tenant is hashed too: the readable prefix below is truncated, and two tenants
     * must never share a window. */
    h1 = kx_hash64(tenant, strlen(tenant) + 1, h1);
    h2 = kx_hash64(tenant, strlen(tenant) + 1, h2);
    if (c->corr_type >= KX_CORR_FIRST_SEEN) {
        /* These keep other Redis types under the same names: a rule id reused with another
         * type must not meet its old keys (WRONGTYPE). */
        h1 = kx_hash64(&c->corr_type, sizeof(c->corr_type), h1);
        h2 = kx_hash64(&c->corr_type, sizeof(c->corr_type), h2);
    }
    /* first_seen: the watched values join the alert's group (not the key). */
    for (size_t k = 0; c->corr_type == KX_CORR_FIRST_SEEN && k < kx__corr_ngroup(c) - ng; k++) {
        const char *v = "";
        size_t vl = 0;
        if (!src_get(src, c->value_fields[(size_t)ref * c->nvalue_fields + k], &v, &vl)) {
            v = "";
            vl = 0;
        }
        op->val_off[ng + k] = op->strs.len;
        kx_buf_append(&op->strs, v, vl);
        kx_buf_append(&op->strs, "", 1);
    }
    kx__group_key(op->key, sizeof(op->key), tenant, c, h1, h2);
    if (!kx__group_admit(p, c, tenant, h1, h2, time_ms)) {
        kx__op_put(p, op);
        return;
    }
    if (c->resolve_auto) /* the group's identity under the rule's resolve key */
        group_hex(op->group, h1, h2);
    if (c->corr_type == KX_CORR_ABSENCE || c->closing) {
        /* A sighting of the group: its identity is the group's hash, its payload what an alert
         * about the group needs (tenant, values, this event as evidence), for whichever
         * process judges it. Closing windows also count the event by its identity. */
        kx__absence_key(c, op->key, sizeof(op->key));
        if (c->closing) {
            op->kind = KX_OP_CTOUCH;
            group_hex(op->group, h1, h2);
        } else {
            op->kind = KX_OP_TOUCH;
            op->token = kx__op_token(p);
            char hex[33];
            group_hex(hex, h1, h2);
            kx_buf_reset(&op->member);
            kx_buf_append(&op->member, hex, 32);
        }
        kx__payload_group(&op->evidence, op, ng);
        /* The whole payload must fit what the store keeps: the evidence is left out first
         * (a group too large even without it is refused and logged like any update). */
        if (evidence && op->evidence.len + evidence->len > KX_STORE_MAX_EVIDENCE_BYTES) {
            kx_log_limited(&p->rl_value, KX_LOG_WARN, "correlate",
                           "rule %s: evidence too large to keep with an absence sighting: left "
                           "out",
                           c->id);
            evidence = NULL;
        }
    }
    if (evidence && evidence->len)
        kx_buf_append(&op->evidence, evidence->data, evidence->len);
    p->pending++;
    kx__op_issue(op);
}

/* Public entry (klaxon/correlate.h): one event matched rule `matched`, which c references. */
void kx_correlate_event(kx_correlator *p, kx_rule *c, const kx_rule *matched, const kx_event *ev,
                        const char *degraded)
{
    char id[24];
    kx_event_id(ev, id, sizeof(id));
    /* The store keeps evidence blobs up to KX_STORE_MAX_EVIDENCE_BYTES: render within it. */
    size_t ev_cap = p->opts.evidence_bytes < KX_STORE_MAX_EVIDENCE_BYTES
                        ? p->opts.evidence_bytes
                        : KX_STORE_MAX_EVIDENCE_BYTES;
    kx_buf_reset(&p->scratch);
    if (kx_evidence_render_degraded(ev, degraded, ev_cap, &p->scratch))
        kx_buf_reset(&p->scratch);
    corr_src src = {.ev = ev};
    corr_update(p, c, matched, &src, ev->tenant, ev->time_ms, id, &p->scratch);
}

/* A referenced correlation fired: its alert counts as one event of the parent, identified by
 * (rule, tenant, group, window) so a replayed crossing is the same member, at the time the
 * window ended, carrying a small summary as evidence. */
void kx__corr_feed_alert(kx_correlator *p, kx_rule *parent, const kx_rule *child, const kx_op *cop,
                         const kx_window_result *res)
{
    uint64_t h = kx_hash64(child->id, strlen(child->id), 3);
    h = kx_hash64(cop->strs.data, cop->strs.len, h);
    h = kx_hash64(&res->cross_first_ms, sizeof(res->cross_first_ms), h);
    char id[24];
    snprintf(id, sizeof(id), "c%016llx", (unsigned long long)h);
    kx_buf_reset(&p->chain_ev);
    char first[40], last[40];
    kx_time_format(res->cross_first_ms, first, sizeof(first));
    kx_time_format(res->cross_last_ms, last, sizeof(last));
    kx_buf_puts(&p->chain_ev, "{\"correlation\":");
    kx_buf_json_str(&p->chain_ev, child->id, strlen(child->id));
    kx_buf_puts(&p->chain_ev, ",\"group\":{");
    for (size_t i = 0; i < kx__corr_ngroup(child); i++) {
        const char *v = cop->strs.data + cop->val_off[i];
        const char *name = kx__corr_group_name(child, i);
        if (i)
            kx_buf_putc(&p->chain_ev, ',');
        kx_buf_json_str(&p->chain_ev, name, strlen(name));
        kx_buf_putc(&p->chain_ev, ':');
        kx_buf_json_str(&p->chain_ev, v, strlen(v));
    }
    kx_buf_printf(&p->chain_ev, "},\"count\":%lld,\"first_seen\":\"%s\",\"last_seen\":\"%s\"}",
                  (long long)res->cross_count, first, last);
    corr_src src = {.child = child, .child_op = cop};
    corr_update(p, parent, child, &src, cop->strs.data + cop->tenant_off, res->cross_last_ms, id,
                &p->chain_ev);
}
