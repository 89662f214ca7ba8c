/*
 * state: sliding windows of event time behind one interface, kx_store, with two backends:
 * `memory` (embedded, the default without Redis; state is lost on restart) and `redis`
 * (hiredis async on the caller's libev loop; one atomic Lua script per update, run with
 * EVALSHA and reloaded on NOSCRIPT; commands pipelined; reconnect with backoff).
 *
 * A window is keyed by a caller-built string (tenant, rule, group). Adding an event records
 * (member, event time) and returns how many members fall in [t - window, t], the earliest
 * and latest event time among them, whether this member was new (the same member added
 * twice is counted once: replay after a crash does not double-count), and the most recent
 * evidence blobs. Every key expires after ttl_ms of no updates.
 *
 * Callbacks: a call that returns 0 runs its callback exactly once, possibly before it
 * returns (memory backend). A call that returns < 0 never runs it. A callback with status
 * -EIO means the store was unavailable: nothing was applied that the caller can rely on,
 * and the caller retries the same call when the store is up again (safe: idempotent).
 * Other statuses: -EPROTO (an error reply), -ENOSPC (memory key cap), -ECANCELED (destroy).
 * A call made while the store is down returns -EAGAIN, and one past the in-flight cap
 * returns -ENOBUFS; neither runs its callback (docs/internals/state.md).
 * Results are borrowed for the duration of the callback.
 */
#ifndef KLAXON_STORE_H
#define KLAXON_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/compare.h"

struct ev_loop;

typedef struct kx_store kx_store;

/* What a window aggregates. COUNT counts members; every other kind reads a value from each
 * member, written after the first 0x1f byte of the member ("identity\x1fvalue"):
 *   DISTINCT  distinct values (Sigma value_count; temporal with values = rule positions)
 *   SUM, AVG  of the values as numbers (value_sum, value_avg; non-numbers count as 0)
 *   SHARE     percent (0..100) of the window's members whose value equals this member's
 *             (value_percentile: how rare this event's value is in its group)
 *   ORDERED   how many of the values "0", "1", ... appear in that order in time order
 *             (temporal_ordered: rule positions, greedy earliest match) */
typedef enum {
    KX_AGG_COUNT = 0,
    KX_AGG_DISTINCT,
    KX_AGG_SUM,
    KX_AGG_AVG,
    KX_AGG_SHARE,
    KX_AGG_ORDERED,
    KX_AGG_FIRST_SEEN, /* klaxon extension "first_seen": see below */
    KX_AGG_BASELINE,   /* klaxon extension "baseline": see below */
} kx_agg;

/*
 * KX_AGG_FIRST_SEEN keeps, per key, the values seen (the bytes after the member's first 0x1f;
 * before it: the event's identity) with the time each was last seen, and the identity of the
 * event that introduced it. window_ms is the retention D, ttl_ms = D + lateness. An add is
 * "new" (crossed = true, added = true) when the value is not kept or was last seen before
 * time - D; the add that introduced a value reports crossed again when it is replayed (same
 * identity, added = false): a lost reply must not lose the alert. Otherwise the value's last
 * time becomes max(last, time). Values last seen before (newest time - ttl_ms) are forgotten;
 * past KX__STORE_SEEN_CAP values the oldest are dropped (counted, logged). Results: count =
 * cross_count = values kept; first_ms = last_ms = cross_first_ms = cross_last_ms = time;
 * cross_value = when the value was last seen before this add (ms), -1 when never; never late;
 * no evidence is kept.
 *
 * KX_AGG_BASELINE counts members (event identities, idempotent as for COUNT) per tumbling
 * interval of window_ms (aligned to the epoch) and keeps, per key, an exponentially weighted
 * mean and variance of the counts of the closed intervals (EWMA, alpha = 2 / (history + 1)).
 * ttl_ms = window_ms + lateness: an add older than (newest time - lateness) is late and
 * refused; an interval closes once the newest time passes its end + lateness and is then
 * folded into the history (empty intervals as 0). crossed = the add's interval count now
 * satisfies cond (the minimum count), history >= `history` intervals were folded, and
 * count > mean + deviations * stddev, where mean and stddev are the history's, with the
 * still open earlier intervals folded in as they stand; reported once per interval (and again
 * for a replayed member of that interval). cross_first_ms = the interval's start,
 * cross_last_ms = time, cross_count = the interval's count, cross_value = the mean. The
 * history expires after (3 * history + 2) intervals + lateness without updates.
 */

/* Conditions on the aggregate are klaxon/compare.h's: the AND of up to KX_CMP_MAX_TERMS
 * terms (the rules' own, passed through). */

typedef struct kx_window_result {
    int64_t count;    /* members with time in [t - window, t] after this add */
    int64_t first_ms; /* earliest event time among them */
    int64_t last_ms;  /* latest event time among them */
    bool added;       /* false if this member was already in the window */
    /* With cross_at > 0: the earliest window ending at a member time in [t, t + window]
     * whose count is exactly cross_at after this add, i.e. the window this event completed.
     * For an event in time order that is its own window; a late event can complete a later
     * one. Up to KX_STORE_CROSS_SCAN later members are looked at. */
    bool crossed;
    int64_t cross_first_ms;
    int64_t cross_last_ms;
    int64_t cross_count; /* members in the crossed window */
    double cross_value;  /* the aggregate of the crossed window */
    /* With crossed: how many adds since the key's last reported window (none before the first)
     * found the condition
     * met (in a window they belong to) and raised nothing: held already, or passed over as
     * part of the reported burst or its suppress period. Reported once, with the next
     * crossing, then counted from 0. Re-added members (replays) do not count. */
    int64_t suppressed;
    /* The key's last reported window before this add, if any: its first time (what an alert
     * about it had as first_seen). Sliding windows only. */
    bool prev_alerted;
    int64_t prev_alert_first_ms;
    /* The condition held in a window this add belongs to (crossed or not): met_ms = the end
     * of the earliest such window (the add's own time for an event in time order). What
     * `resolve: auto` keeps as the group's last time above the condition. Sliding windows
     * with a condition only; a re-added member reports it too. */
    bool met;
    int64_t met_ms;
    /* The add was older than (newest time in the key - ttl): not counted, nothing changed.
     * The caller counts and logs it (allowed lateness exceeded). */
    bool late;
    size_t nevidence; /* most recent first, at most max_evidence */
    const char *const *evidence;
    const size_t *evidence_len;
} kx_window_result;

typedef void (*kx_store_cb)(void *ud, int status, const kx_window_result *res);
typedef void (*kx_store_state_cb)(void *ud, bool up);

typedef struct kx_window_add {
    const char *key;    /* caller-built; the store prefixes it */
    const char *member; /* event identity */
    int64_t time_ms;    /* event time */
    int64_t window_ms;
    int64_t ttl_ms;       /* >= window_ms */
    const char *evidence; /* may be NULL */
    size_t evidence_len;
    size_t max_evidence; /* evidence kept per key (0 = none) */
    int64_t cross_at;    /* > 0 (COUNT only): report the window this add brought to this count */
    /* The general form: report the window this add made satisfy the condition (it holds with
     * this member and not without it; SHARE: it holds, in the add's own window). */
    kx_agg agg;
    const kx_cmp_term *cond;
    size_t ncond; /* 0 = no crossing scan unless cross_at */
    /* A crossing window that overlaps [last reported first, last reported last + suppress]
     * is passed over (the same window again is reported again: replays). */
    int64_t suppress_ms;
    /* KX_AGG_BASELINE only: alert when count > mean + deviations * stddev (>= 0), after
     * `history` (>= 1) closed intervals. */
    double deviations;
    int64_t history;
    /* Return the evidence only with a crossing (nevidence 0 otherwise): the caller needs it
     * only for an alert, and a reply without it is much cheaper to build and parse. */
    bool evidence_if_crossed;
} kx_window_add;

/*
 * Absence (klaxon extension): groups expected to show up at least once per timespan. A key
 * holds the groups of one rule; each group has its newest sighting, a payload (what an alert
 * about it shows, as given with that sighting), and whether its current silence was reported.
 *
 * kx_store_absence_touch records a sighting at time_ms. When it is newer than the group's
 * last one (older sightings change nothing: idempotent under re-delivery) it reports
 *   KX_ABSENCE_RESOLVED  the silence after the last sighting had been reported (absence_due):
 *                        this sighting ends it;
 *   KX_ABSENCE_GAP       the sighting comes more than timespan after the last one and that
 *                        silence was not reported yet (the watermark never passed it, e.g. a
 *                        replay): the caller reports it and its end at once;
 * with since_ms = the last sighting before the silence and its payload (n = 1).
 *
 * A touch that repeats the sighting that set the group's last time (same time and payload: a
 * retry after a lost reply) reports that sighting's outcome again.
 *
 * kx_store_absence_due reports (n, up to limit) the groups whose last sighting + timespan is
 * before watermark_ms (by the timespan given now) and whose silence was not reported yet, and
 * marks them reported: of several processes sharing a Redis only one gets each group. A group
 * reported at a watermark more than keep_ms older than this one is forgotten. Every key
 * expires after timespan + keep_ms of no touch or due. Results (payloads) are borrowed for
 * the callback.
 */
typedef enum {
    KX_ABSENCE_NONE = 0,
    KX_ABSENCE_RESOLVED,
    KX_ABSENCE_GAP,
    KX_ABSENCE_REPLACED /* KX_TOUCH_REPLACE only */
} kx_absence_outcome;

/*
 * How a touch treats the group's current sighting. `resolve: auto` (klaxon/detect.h) keeps a
 * rule's alerted groups as open incidents whose "silence" is the condition not holding:
 *   KX_TOUCH_EXTEND   move the group's last sighting to time_ms (its payload stays; the one
 *                     given is ignored) only if that sighting is within timespan before it and
 *                     its silence was not reported (the open incident goes on); otherwise
 *                     change nothing; never reports;
 *   KX_TOUCH_REPLACE  as KX_TOUCH_PLAIN, and a sighting that replaces one within timespan
 *                     whose silence was not reported reports KX_ABSENCE_REPLACED (since_ms,
 *                     the replaced payload): a new incident takes the place of an open one.
 */
typedef enum { KX_TOUCH_PLAIN = 0, KX_TOUCH_EXTEND, KX_TOUCH_REPLACE } kx_touch_mode;

typedef struct kx_absence_touch {
    const char *key;   /* one per rule; the store prefixes it */
    const char *group; /* the group's identity within key */
    const char *payload;
    size_t payload_len;
    int64_t time_ms;
    int64_t timespan_ms; /* > 0 */
    int64_t keep_ms;     /* > 0 */
    kx_touch_mode mode;
    /* Non-zero, unique per touch and kept across its retries: a touch that reported an
     * outcome and is made again (its reply was lost) gets that outcome again, even when a
     * later touch of its group in the same call moved the group on (Redis keeps up to 1024
     * such answers per key, for 10 minutes). 0: none. The memory store loses no replies and
     * ignores it. */
    uint64_t token;
} kx_absence_touch;

typedef struct kx_absence_due {
    const char *key;
    int64_t watermark_ms;
    int64_t timespan_ms; /* as in the touches (the keys' TTL) */
    int64_t keep_ms;
    size_t limit; /* groups reported per call, 1..KX_STORE_ABSENCE_DUE_MAX */
    /* Non-zero, unique per question and kept across its retries: a retry after a lost reply
     * (the store had answered) gets the same groups again instead of none (Redis keeps the
     * last 64 answers that reported groups, for 10 minutes). */
    uint64_t token;
} kx_absence_due;

#define KX_STORE_ABSENCE_DUE_MAX 1024

typedef struct kx_absence_result {
    kx_absence_outcome outcome; /* touch only */
    int64_t since_ms;           /* touch: the last sighting before the silence */
    bool late;                  /* close touch: the event's window was already closed */
    bool more;                  /* close due: windows left to judge (ask again) */
    size_t n;                   /* touch: 1 with an outcome, else 0; due: groups reported */
    const int64_t *last_ms;     /* due: each group's last sighting (close due: window start) */
    const int64_t *count;       /* close due: the window's count; NULL otherwise */
    const char *const *payload;
    const size_t *payload_len;
} kx_absence_result;

typedef void (*kx_absence_cb)(void *ud, int status, const kx_absence_result *res);

int kx_store_absence_touch(kx_store *s, const kx_absence_touch *op, kx_absence_cb cb, void *ud);

/*
 * Several touches of one key as one store operation (on Redis: one script call, atomic),
 * applied in order with exactly the results of the same touches made one by one. The ops
 * share key, timespan_ms and keep_ms; groups, times, modes and payloads are their own; at
 * most KX_STORE_MANY_MAX. cb runs once with res[i] for ops[i] (payloads borrowed for the
 * callback), or with a failure status and no results.
 */
typedef void (*kx_absence_many_cb)(void *ud, int status, const kx_absence_result *res, size_t n);
int kx_store_absence_touch_many(kx_store *s, const kx_absence_touch *ops, size_t n,
                                kx_absence_many_cb cb, void *ud);
int kx_store_absence_due(kx_store *s, const kx_absence_due *op, kx_absence_cb cb, void *ud);

/*
 * Closing windows (event_count conditions that hold for an empty window: "at most N"). A key
 * holds the groups of one rule. Windows are tumbling, timespan long, aligned to the epoch.
 *
 * kx_store_close_touch counts one event (identity: idempotent) in its group's window and keeps
 * the payload of the group's newest event. It is refused (late = true, nothing counted) when
 * its window ends at or before the largest watermark a due call was given for this key (the
 * window is closed, whether or not the group had events judged there).
 *
 * kx_store_close_due judges, for up to limit groups, each window with events whose end is at
 * or before watermark_ms (the earliest first): res->last_ms[i] = the window's start,
 * res->count[i] = its events, res->payload[i] = the group's newest payload, reported only
 * when the count satisfies cond; the window is then forgotten and the group's next window
 * with events (if any) waits for its own end. Windows without events are never judged. One
 * process judges each window; token as for kx_store_absence_due. Every key expires after
 * ttl_ms of no touch or due.
 */
typedef struct kx_close_touch {
    const char *key;
    const char *group;    /* no '|' */
    const char *identity; /* the event's */
    const char *payload;
    size_t payload_len;
    int64_t time_ms;
    int64_t timespan_ms; /* > 0 */
    int64_t ttl_ms;      /* > 0 */
} kx_close_touch;

typedef struct kx_close_due {
    const char *key;
    int64_t watermark_ms;
    int64_t timespan_ms;
    int64_t ttl_ms;
    const kx_cmp_term *cond;
    size_t ncond; /* 1..KX_CMP_MAX_TERMS */
    size_t limit; /* 1..KX_STORE_ABSENCE_DUE_MAX */
    uint64_t token;
} kx_close_due;

int kx_store_close_touch(kx_store *s, const kx_close_touch *op, kx_absence_cb cb, void *ud);
/* Several closing touches of one key as one store operation, as kx_store_absence_touch_many
 * (shared: key, timespan_ms, ttl_ms); res[i].late for ops[i]. */
int kx_store_close_touch_many(kx_store *s, const kx_close_touch *ops, size_t n,
                              kx_absence_many_cb cb, void *ud);
int kx_store_close_due(kx_store *s, const kx_close_due *op, kx_absence_cb cb, void *ud);

/*
 * A watermark shared by every process on the store: the newest event time of each input
 * partition, whoever reads it, and the minimum over the partitions. A process publishes the
 * newest event time of each partition it has read (an entry only moves forward: a partition's
 * new owner re-reading uncommitted events does not move it back) with the wall clock of when
 * it last moved (or was live). A partition that has not moved for quiet_ms counts as quiet:
 * its time is taken to be max(newest + (now - moved - quiet), now - quiet), so a quiet or
 * abandoned partition does not hold every judgement back; one that has not moved for ttl_ms
 * is forgotten. The answer: the minimum over the entries
 * (known = false when there are none).
 */
typedef struct kx_watermark_entry {
    const char *name; /* "topic/partition"; no space */
    int64_t max_ms;
    /* Events arrived from it since the last publish (even if none was newer), or the process
     * is reading it again after a pause: it counts as having just moved. */
    bool live;
} kx_watermark_entry;

typedef struct kx_watermark_op {
    const char *key;
    const kx_watermark_entry *mine;
    size_t n; /* 0..KX_STORE_ABSENCE_DUE_MAX */
    int64_t now_ms;
    int64_t quiet_ms; /* > 0 */
    int64_t ttl_ms;   /* > 0 */
} kx_watermark_op;

typedef void (*kx_watermark_cb)(void *ud, int status, bool known, int64_t watermark_ms);
int kx_store_watermark(kx_store *s, const kx_watermark_op *op, kx_watermark_cb cb, void *ud);

/*
 * Claims: one holder at a time for a named piece of work, and "done" once it is done, shared
 * by every process on the store. The alert stage claims (incident, sink) before it sends a
 * page, so that one incident is paged once across processes and restarts, and still paged
 * when the first holder dies (docs/internals/alert.md, "Claims").
 *
 * A claim key holds nothing, one holder's lease, or "done". kx_store_claim with mode
 *   KX_CLAIM_TAKE     takes the claim for holder for lease_ms, or renews it when holder has
 *                     it; refused while another holder's lease runs;
 *   KX_CLAIM_DONE     marks it done (whoever holds it), remembered for keep_ms;
 *   KX_CLAIM_RELEASE  ends holder's lease (it gave up: another may take it at once);
 * and cb hears the state after the call: KX_CLAIM_MINE (taken, renewed, or released),
 * KX_CLAIM_HELD (another holder; ttl_ms = what is left of its lease) or KX_CLAIM_DONE_STATE
 * (done; ttl_ms = how long that is remembered). Every mode is idempotent: a retry after a
 * lost reply gives the same state.
 */
typedef enum { KX_CLAIM_TAKE = 0, KX_CLAIM_DONE, KX_CLAIM_RELEASE } kx_claim_mode;
typedef enum { KX_CLAIM_MINE = 0, KX_CLAIM_HELD, KX_CLAIM_DONE_STATE } kx_claim_state;

typedef struct kx_claim_op {
    const char *key;
    const char *holder; /* non-empty, at most 256 bytes, not "d" */
    kx_claim_mode mode;
    int64_t lease_ms; /* TAKE: > 0 */
    int64_t keep_ms;  /* DONE: > 0 */
} kx_claim_op;

typedef void (*kx_claim_cb)(void *ud, int status, kx_claim_state state, int64_t ttl_ms);
int kx_store_claim(kx_store *s, const kx_claim_op *op, kx_claim_cb cb, void *ud);

/*
 * Several adds to one key as one store operation (on Redis: one script call, atomic), applied
 * in order with exactly the results of the same adds made one by one — except count,
 * first_ms and last_ms, which are 0 (computing them costs three commands per member and the
 * pipeline does not use them). The ops share every field but member, time_ms and evidence;
 * any aggregate (BASELINE: history and deviations shared too). cb runs once with res[i] for
 * ops[i] (evidence borrowed for the callback), or with a failure status and no results.
 */
#define KX_STORE_MANY_MAX 1024
typedef void (*kx_store_many_cb)(void *ud, int status, const kx_window_result *res, size_t n);
int kx_store_window_add_many(kx_store *s, const kx_window_add *ops, size_t n, kx_store_many_cb cb,
                             void *ud);

#define KX_STORE_CROSS_SCAN 64
/* Largest evidence blob a store keeps; a larger one is refused with -EMSGSIZE. */
#define KX_STORE_MAX_EVIDENCE_BYTES (64 * 1024)

int kx_store_window_add(kx_store *s, const kx_window_add *op, kx_store_cb cb, void *ud);

/* Memory backend. max_keys caps live keys (0 = 1,000,000); an add to a new key past the cap
 * fails with status -ENOSPC (counted in KX_M_STATE_KEYS_CAPPED and logged). */
int kx_store_memory_create(struct ev_loop *loop, size_t max_keys, kx_store **out);
/* Redis backend: connects asynchronously (kx_store_is_up tells when ready); prefix is put
 * in front of every key ("klaxon:"). When the server is a Redis Cluster master, the store
 * uses the whole cluster (every master, by slot; docs/scaling.md). */
int kx_store_redis_create(struct ev_loop *loop, const char *host, int port, const char *prefix,
                          kx_store **out);
/* The same with AUTH on every connection: password alone (the default user, requirepass) or
 * an ACL username and password. Both are copied; the password is never logged. */
int kx_store_redis_create_auth(struct ev_loop *loop, const char *host, int port, const char *prefix,
                               const char *username, const char *password, kx_store **out);

/* Sliding windows (COUNT .. ORDERED) on a Redis store kept as a log of adds in Redis that
 * klaxon replays into a local memory store, instead of one script call per add: a few plain
 * commands per call instead of a script (docs/internals/state.md, "Window log"). Every
 * process sharing the windows must use it (the two keep different keys). Call before the
 * first add; -EINVAL for a store that is not Redis. */
int kx_store_redis_use_log(kx_store *s);

/* What kx_store_create_from_url takes besides the URL (all optional). */
typedef struct kx_store_opts {
    size_t max_keys;      /* memory: the live key cap (0 = 1,000,000) */
    const char *username; /* redis: the ACL user when the URL names none */
    const char *password; /* redis: AUTH when the URL has none; NULL = no AUTH */
    bool log_windows;     /* redis: sliding windows through the window log */
} kx_store_opts;

/* Parses "memory" or "redis://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]" (user and password
 * percent-encoded) and creates the matching store. opts may be NULL. Errors show the URL
 * with its password replaced by "***". */
int kx_store_create_from_url(struct ev_loop *loop, const char *url, const kx_store_opts *opts,
                             kx_store **out, kx_err *err);
/* The same parse without creating anything (config checks): 0 or -EINVAL with err set. */
int kx_store_url_check(const char *url, kx_err *err);

/* Drops a window key's state at once (a group evicted by a group cap), no answer; best
 * effort: a store that is down leaves it to its TTL (-EAGAIN). Window keys only (the ones
 * kx_store_window_add takes), not absence or closing-window keys. */
int kx_store_forget(kx_store *s, const char *key);

/* One page of the members of the Redis set `key` (SSCAN key cursor COUNT 1000), for live
 * lists (app/livelists.c). The key is used as written, without the store's prefix: the set
 * belongs to whatever system fills it. Start with cursor "0"; the callback gets the next
 * cursor ("0" when the scan is complete) and the page's members, borrowed for the callback
 * (a member may be given twice across pages, as SSCAN does). Returns 0 (the callback will
 * run, with a status < 0 on failure), -ENOTSUP (the memory store), -EAGAIN (down),
 * -ENOBUFS. */
typedef void (*kx_set_scan_cb)(void *ud, int status, const char *cursor, const char *const *members,
                               const size_t *lens, size_t n);
int kx_store_set_scan(kx_store *s, const char *key, const char *cursor, kx_set_scan_cb cb,
                      void *ud);

bool kx_store_is_up(const kx_store *s);
/* Called on every up/down transition (redis); memory is always up. */
void kx_store_set_state_cb(kx_store *s, kx_store_state_cb cb, void *ud);
/* Operations issued and not yet answered. */
size_t kx_store_pending(const kx_store *s);
/* Outstanding callbacks run with -ECANCELED; frees everything. */
void kx_store_destroy(kx_store *s);
const char *kx_store_kind(const kx_store *s); /* "memory" or "redis" */

#endif
