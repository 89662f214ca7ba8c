/*
 * Pre-aggregation (opts.preaggregate): while a batch's messages are processed, window updates,
 * absence sightings and closing-window touches are collected per key; at the batch's end each key's
 * go to the store as one call (kx_store_window_add_many, kx_store_absence_touch_many,
 * kx_store_close_touch_many), in order, with the
 * results each would have had alone. Redis work then grows with the matching groups of a
 * batch (for absence: its rules), not its matching events. Every collected call is sent
 * before the batch's due questions (kx_correlate_batch_end), as the calls one by one were.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

/* ---- pre-aggregation ---- */

/* True when op was queued with the other updates of its key in this batch. Window updates
 * (every aggregate), absence sightings and closing touches merge: the store
 * applies several of a key in order, as one call, with the results they would have had one by one.
 */
bool kx__grp_collect(kx_op *op)
{
    kx_correlator *p = op->p;
    if (!p->collecting)
        return false;
    if ((p->ngrp + 1) * 2 > p->grp_cap) {
        size_t cap = p->grp_cap ? p->grp_cap * 2 : 256;
        struct grp_slot *g = calloc(cap, sizeof(*g));
        size_t *order = malloc(cap * sizeof(*order));
        if (!g || !order) {
            free(g);
            free(order);
            return false; /* out of memory: send it alone */
        }
        for (size_t k = 0; k < p->ngrp; k++) {
            struct grp_slot *o = &p->grp[p->grp_order[k]];
            size_t i = (size_t)kx_hash64(o->head->key, strlen(o->head->key), 9) & (cap - 1);
            while (g[i].head)
                i = (i + 1) & (cap - 1);
            g[i] = *o;
            order[k] = i;
        }
        free(p->grp);
        free(p->grp_order);
        p->grp = g;
        p->grp_order = order;
        p->grp_cap = cap;
    }
    size_t i = (size_t)kx_hash64(op->key, strlen(op->key), 9) & (p->grp_cap - 1);
    while (p->grp[i].head &&
           (p->grp[i].head->kind != op->kind || strcmp(p->grp[i].head->key, op->key)))
        i = (i + 1) & (p->grp_cap - 1);
    struct grp_slot *g = &p->grp[i];
    op->grp_next = NULL;
    if (!g->head) {
        g->head = op;
        p->grp_order[p->ngrp++] = i;
    } else {
        g->tail->grp_next = op;
    }
    g->tail = op;
    g->n++;
    return true;
}

/* One call's results, in the order of its updates. */
static void grp_cb(void *ud, int status, const kx_window_result *res, size_t n)
{
    kx_op *op = ud;
    for (size_t i = 0; op; i++) {
        kx_op *next = op->grp_next;
        op->grp_next = NULL;
        if (status == 0 && i < n)
            kx__window_cb(op, 0, &res[i]);
        else
            kx__window_cb(op, status ? status : -EPROTO, NULL);
        op = next;
    }
}

/* The same for sightings and closing touches. */
static void touch_grp_cb(void *ud, int status, const kx_absence_result *res, size_t n)
{
    kx_op *op = ud;
    for (size_t i = 0; op; i++) {
        kx_op *next = op->grp_next;
        op->grp_next = NULL;
        if (status == 0 && i < n)
            kx__absence_cb(op, 0, &res[i]);
        else
            kx__absence_cb(op, status ? status : -EPROTO, NULL);
        op = next;
    }
}

/* A scratch array kept across batches with room for n entries of size bytes (buf itself, or
 * its reallocation), or NULL (buf is left as it was). */
static void *scratch(void *buf, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap)
        return buf;
    void *b = realloc(buf, n * size);
    if (b)
        *cap = n;
    return b;
}

/* One call for the chain first..(end): n window adds, sightings or closing touches of one
 * key. */
static int grp_send(kx_correlator *p, kx_op *first, size_t n)
{
    size_t i = 0;
    if (p->store_down)
        return -EAGAIN;
    if (first->kind == KX_OP_TOUCH) {
        kx_absence_touch *b = scratch(p->touches, &p->touches_cap, n, sizeof(*b));
        if (!b)
            return -ENOMEM;
        p->touches = b;
        for (kx_op *o = first; o; o = o->grp_next)
            kx__touch_of(o, &p->touches[i++]);
        return kx_store_absence_touch_many(p->store, p->touches, n, touch_grp_cb, first);
    }
    if (first->kind == KX_OP_CTOUCH) {
        kx_close_touch *b = scratch(p->ctouches, &p->ctouches_cap, n, sizeof(*b));
        if (!b)
            return -ENOMEM;
        p->ctouches = b;
        for (kx_op *o = first; o; o = o->grp_next)
            kx__ctouch_of(o, &p->ctouches[i++]);
        return kx_store_close_touch_many(p->store, p->ctouches, n, touch_grp_cb, first);
    }
    kx_window_add *b = scratch(p->adds, &p->adds_cap, n, sizeof(*b));
    if (!b)
        return -ENOMEM;
    p->adds = b;
    for (kx_op *o = first; o; o = o->grp_next)
        kx__window_add_of(o, &p->adds[i++]);
    return kx_store_window_add_many(p->store, p->adds, n, grp_cb, first);
}

/* Sends every collected key: one store call per key (chunks of KX_STORE_MANY_MAX). */
void kx__grp_flush(kx_correlator *p)
{
    p->collecting = false;
    for (size_t k = 0; k < p->ngrp; k++) {
        struct grp_slot *g = &p->grp[p->grp_order[k]];
        kx_op *op = g->head;
        *g = (struct grp_slot){0};
        while (op) {
            /* Up to KX_STORE_MANY_MAX updates, cut off from the rest of the chain. */
            kx_op *first = op, *last = op;
            size_t n = 1;
            while (last->grp_next && n < KX_STORE_MANY_MAX) {
                last = last->grp_next;
                n++;
            }
            op = last->grp_next;
            last->grp_next = NULL;
            int rc = grp_send(p, first, n);
            if (rc >= 0)
                continue;
            for (kx_op *o = first; o;) {
                kx_op *nx = o->grp_next;
                o->grp_next = NULL;
                /* Refused as a whole (one bad update? no memory?): alone, only that one is
                 * refused. */
                if (kx__op_transient(rc))
                    kx__op_not_issued(o, rc);
                else
                    kx__op_issue(o);
                o = nx;
            }
        }
    }
    p->ngrp = 0;
}
