/*
 * correlate: the stage between detection and alerting for correlation rules. For each event a
 * correlation references it builds the group's key and member (chaining, aliases, the group
 * caps), updates the window in the state store, and turns what the store answers into alerts:
 * crossings, absences and their returns, "at most N" windows judged when they close, and the
 * resolves of `resolve: auto`. It keeps the shared watermark those judgements use, merges a
 * batch's updates of one key into one store call (pre-aggregation), and holds and re-issues
 * updates across a store outage. docs/internals/correlate.md says how, and what is exact.
 *
 * Accounting: the correlator counts its own work in flight (store operations, queued retries,
 * due questions); the host's idle callback runs each time that count comes back to zero. The
 * alerts it raises go to the host, which counts them in its batch and sends them.
 *
 * Ownership: borrows the loop, ruleset and store (it sets the store's state callback). The
 * rules must outlive the work in flight: kx_correlate_set_rules refuses while updates wait.
 * Not thread-safe (one loop).
 */
#ifndef KLAXON_CORRELATE_H
#define KLAXON_CORRELATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/alert.h"
#include "klaxon/detect.h"
#include "klaxon/event.h"
#include "klaxon/source.h"
#include "klaxon/store.h"

struct ev_loop;

typedef struct kx_correlate_opts {
    size_t evidence_bytes; /* cap per evidence event (0 = 16 KiB) */
    size_t max_evidence;   /* evidence blobs the store keeps per window */
    int64_t lateness_ms;   /* allowed lateness, added to window TTLs */
    size_t max_groups;     /* live groups per rule and tenant (0 = 100000) */
    bool wall_clock;       /* run: the watermark also moves with the wall clock */
    int64_t wm_quiet_ms;   /* with wall_clock: a partition quiet this long moves on (0 = 30 s) */
    bool preaggregate;     /* merge a batch's updates of one key into one store call */
} kx_correlate_opts;

typedef struct kx_correlate_host {
    void *ud;
    /* An alert of correlation rule r for the router; may_backfill: whether its age may mark
     * it backfill. The host fills in the rule's descriptive fields and sends it. r is NULL for
     * klaxon's own alerts about a rule ("detection degraded"): sent as they are. */
    void (*alert)(void *ud, kx_alert *a, const kx_rule *r, bool may_backfill);
    /* The correlator's work in flight came back to zero. */
    void (*idle)(void *ud);
    /* Store outage: hold the source (true), or let it go again (false). */
    void (*pause)(void *ud, bool pause);
    /* Optional (`klaxon rules explain`): what the store answered for each window update of a
     * sliding-window, first_seen or baseline rule, before any alert of it: the rule, the
     * group's values (names from the rule), the event's time and the window's state. */
    void (*window)(void *ud, const kx_rule *r, const kx_kv *group, size_t ngroup, int64_t time_ms,
                   const kx_window_result *res);
} kx_correlate_host;

typedef struct kx_correlator kx_correlator;

int kx_correlator_create(struct ev_loop *loop, kx_ruleset *rules, kx_store *store,
                         const kx_correlate_opts *opts, const kx_correlate_host *host,
                         kx_correlator **out);
void kx_correlator_destroy(kx_correlator *c);
/* Another ruleset (reload): -EBUSY while updates wait for the store. */
int kx_correlate_set_rules(kx_correlator *c, kx_ruleset *rules);

/* A batch of messages starts (pre-aggregation collects from here). */
void kx_correlate_batch_begin(kx_correlator *c);
/* The message m was read, with an event at time_ms (the watermark's input). */
void kx_correlate_seen(kx_correlator *c, const kx_msg *m, int64_t time_ms);
/* ev matched rule `matched`; c_rule is one of the correlations referencing it. */
void kx_correlate_event(kx_correlator *c, kx_rule *c_rule, const kx_rule *matched,
                        const kx_event *ev, const char *degraded);
/* The batch's messages are processed: send what was collected, and ask for the silences and
 * closed windows the watermark passed when it moved. */
void kx_correlate_batch_end(kx_correlator *c);
/* A check of its own while no events arrive (wall clock): true when one was started. */
bool kx_correlate_tick(kx_correlator *c);
/* End of input: judge by the last event time, once. */
void kx_correlate_finish(kx_correlator *c);
/* The batch is done (the host's count too): a store outage no longer pauses anything. */
void kx_correlate_batch_done(kx_correlator *c);

/* Work in flight (store operations, queued retries, due questions). */
size_t kx_correlate_pending(const kx_correlator *c);
/* Holding the source for the store. */
bool kx_correlate_paused(const kx_correlator *c);

#endif
