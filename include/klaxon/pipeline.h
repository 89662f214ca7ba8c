/*
 * pipeline: the stages after the source, wired on one loop. For each message of a batch:
 * decode -> match rules -> (single-event rules) alert, (correlations) the correlate stage
 * (klaxon/correlate.h: window updates in the store, alerts when they cross) -> router. The
 * batch's done callback runs once every state update it caused is applied and every alert it
 * caused is handed to the sinks: only then may the source store its offsets.
 *
 * When the store is down, the correlator's failed updates wait in order for a retry and the
 * pause callback tells the source to stop until the store is back (updates are idempotent
 * per event identity, so a retry never double-counts).
 *
 * Ownership: the pipeline borrows the loop, ruleset, store and router and owns the decoders
 * handed to it. Destroy the router and the store before the pipeline: their cancelled
 * callbacks land in the pipeline. Clear the pause callback before destroying its target.
 */
#ifndef KLAXON_PIPELINE_H
#define KLAXON_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/alert.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/source.h"
#include "klaxon/store.h"

struct ev_loop;

typedef struct kx_pipeline_opts {
    size_t max_event_bytes; /* larger messages are malformed */
    size_t evidence_bytes;  /* cap per evidence event */
    int64_t lateness_ms;    /* added to window TTLs */
    size_t max_groups;      /* live groups per correlation rule; 0 = 100000 */
    /* Absence rules: when no event arrives, the watermark advances with the wall clock and
     * silences are checked every second (run). Off: event time only (replay). */
    bool wall_clock;
    /* With wall_clock: a partition that has not moved for this long moves on with the wall
     * clock in the shared watermark (0 = 30 s). */
    int64_t wm_quiet_ms;
    /* Merge a batch's updates of one window key into one store call (see pipeline.c). */
    bool preaggregate;
} kx_pipeline_opts;

typedef struct kx_pipeline kx_pipeline;
typedef void (*kx_pipeline_done_cb)(void *ud);
typedef void (*kx_pipeline_pause_cb)(void *ud, bool pause);

int kx_pipeline_create(struct ev_loop *loop, kx_ruleset *rules, kx_store *store, kx_router *router,
                       const kx_pipeline_opts *opts, kx_pipeline **out);
/* Adds the decoder for messages of topic (NULL: the default for any other topic and for
 * files). Takes ownership of d, also on failure. */
int kx_pipeline_add_decoder(kx_pipeline *p, const char *topic, kx_decoder *d);
void kx_pipeline_set_pause_cb(kx_pipeline *p, kx_pipeline_pause_cb cb, void *ud);
/* With opts.wall_clock the pipeline runs checks of its own between batches (absence rules,
 * every second), during which kx_pipeline_busy is true. cb runs when one is done, so a caller
 * waiting for the pipeline to be idle (shutdown, reload) can go on. A batch handed in
 * meanwhile is accepted and absorbs the check (then only its own done runs). */
void kx_pipeline_set_tick_cb(kx_pipeline *p, kx_pipeline_done_cb cb, void *ud);
/* No more checks of its own (shutdown: a silence reported while the router drains could be
 * lost with the store). */
void kx_pipeline_stop_ticks(kx_pipeline *p);
/* Processes one batch; done runs later from the loop (never before this returns).
 * Only one batch at a time: returns -EBUSY while one is in flight. */
int kx_pipeline_process(kx_pipeline *p, const kx_msg *msgs, size_t n, kx_pipeline_done_cb done,
                        void *ud);
bool kx_pipeline_busy(const kx_pipeline *p);
/* End of input (replay): a last check of absence rules by the final watermark, as a batch
 * without messages; done runs when its alerts are handed on. -EBUSY while a batch is in
 * flight. */
int kx_pipeline_finish(kx_pipeline *p, kx_pipeline_done_cb done, void *ud);
/* Swaps in another ruleset (reload). Only between batches, since in-flight state updates
 * point at the current rules: returns -EBUSY while a batch is in flight. The caller keeps
 * ownership of both rulesets. */
int kx_pipeline_set_rules(kx_pipeline *p, kx_ruleset *rules);
/* Builds in rules the route of every logsource the pipeline's decoders can give an event
 * (kx_ruleset_prepare), so no input pauses on its first event: at start, and for a reloaded
 * set before it is swapped in. */
void kx_pipeline_prepare_rules(kx_pipeline *p, kx_ruleset *rules);
void kx_pipeline_destroy(kx_pipeline *p);

#endif
