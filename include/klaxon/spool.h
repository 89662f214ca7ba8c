/*
 * spool: the alert stage's durable queue. Every routed alert is appended here, and made
 * durable (fdatasync, once per group of appends), before the Kafka offsets that caused it
 * are stored; it leaves only when every sink it was routed to has acknowledged it (or given
 * up, and it went to the dead letters). A restart reads the spool back and delivers what is
 * left. docs/internals/alert.md has the design; this header is the storage only, the router
 * (router.c) decides what to append and when to acknowledge.
 *
 * On disk: a directory of append-only segment files, "<first seq, 16 hex digits>.seg", each
 * starting with an 8-byte magic, then records: magic u32, body length u32, CRC-32 (zlib) of
 * the body u32, body (first byte: the record's type). An alert record holds its sequence
 * number, creation time, dedup_key, the names of the sinks it was routed to and the alert
 * JSON; an ack record holds a sequence number, the sink's position in that alert's list and
 * the outcome; a moved record is an alert copied forward by compaction (its acks follow it in
 * the same write), so the oldest segment can go while one slow sink still owes an alert. A process
 * owns the directory (an flock on "lock"): a second klaxon on the same spool is refused. Each start
 * writes a new segment; older ones are only read. Segments are deleted oldest first, once every
 * alert in them and in every older one is acknowledged by all its sinks (so an ack record is never
 * lost while the alert it acknowledges is still on disk).
 *
 * A record that fails its checks (a torn tail after a crash mid-write, a flipped bit) is
 * skipped: the reader looks for the next record whose magic and CRC are right, and the
 * skipped bytes are counted (kx_spool_stats.skipped_bytes, KX_M_SPOOL_CORRUPT_BYTES) and logged.
 *
 * Without a directory (dir NULL) the spool keeps nothing on disk: the same accounting, for
 * `replay` and for configurations without `alerting.spool`, where alerts are in memory only.
 *
 * Bounded: appends are refused with -ENOSPC while the live segments hold max_bytes or more
 * (acks are always written: they free space). The caller then waits (back-pressure).
 *
 * Ownership: the caller owns the kx_spool (open/close). Strings passed in are copied to disk
 * and not kept; strings handed to the recover callback are valid during the call only.
 * Single-threaded: the loop thread only.
 */
#ifndef KLAXON_SPOOL_H
#define KLAXON_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"

#define KX_SPOOL_MAX_SINKS 32 /* sinks one alert may be routed to */
#define KX_SPOOL_MAX_RECORD (16u << 20)

typedef enum {
    KX_SPOOL_DELIVERED = 1, /* the sink acknowledged it */
    KX_SPOOL_DEAD = 2,      /* the sink gave up; the alert went to the dead letters */
} kx_spool_outcome;

typedef struct kx_spool kx_spool;

typedef struct kx_spool_opts {
    const char *dir;        /* NULL: memory only */
    uint64_t max_bytes;     /* live segment bytes beyond which appends wait; 0 = 256 MiB */
    uint64_t segment_bytes; /* a segment is closed past this size; 0 = 8 MiB */
    /* Only read back (`klaxon alerts list` beside a running klaxon): no lock, nothing
     * created, written or deleted; append and ack fail with -EROFS. */
    bool read_only;
} kx_spool_opts;

/* One alert read back by kx_spool_open: the sinks that have not acknowledged it yet. */
typedef struct kx_spool_alert {
    uint64_t seq;
    int64_t created_ms;
    const char *key;          /* dedup_key, 32 hex digits */
    const char *const *sinks; /* every sink it was routed to, as appended */
    size_t nsinks;
    uint32_t pending;    /* bit i: sinks[i] has not acknowledged it */
    const char *payload; /* alert JSON, NUL-terminated */
    size_t len;
} kx_spool_alert;

typedef struct kx_spool_stats {
    uint64_t bytes;         /* of the live segments */
    uint64_t segments;      /* live segment files */
    uint64_t pending;       /* alerts some sink has not acknowledged */
    uint64_t skipped_bytes; /* corrupt or torn bytes skipped when reading back */
    uint64_t recovered;     /* alerts read back at open */
    bool full;              /* bytes >= max_bytes: appends wait */
} kx_spool_stats;

typedef void (*kx_spool_recover_cb)(void *ud, const kx_spool_alert *a);

/* Opens (creates) the spool and reads back every alert not acknowledged by all its sinks,
 * oldest first, through cb (may be NULL). Errors: file:0:0 messages in err naming the
 * directory; -EBUSY when another process holds it. */
int kx_spool_open(const kx_spool_opts *opts, kx_spool_recover_cb cb, void *ud, kx_spool **out,
                  kx_err *err);
void kx_spool_close(kx_spool *sp);

/* Appends an alert routed to nsinks sinks (1..KX_SPOOL_MAX_SINKS). Not durable until the
 * next kx_spool_sync. *seq receives its sequence number. -ENOSPC: full (nothing written);
 * -EIO/-ENOSPC from the disk: nothing usable was written (the segment is cut back). */
int kx_spool_append(kx_spool *sp, const char *key, int64_t created_ms, const char *const *sinks,
                    size_t nsinks, const char *payload, size_t len, uint64_t *seq);
/* Records that the sink at position `sink` of alert seq's list (as appended) is done with
 * it. When it was the alert's last sink, the alert leaves the spool (its segment is deleted
 * once it and all older ones are empty). -ENOENT: no such pending alert and sink. */
int kx_spool_ack(kx_spool *sp, uint64_t seq, unsigned sink, kx_spool_outcome outcome);
/* Makes every append so far durable (fdatasync). 0 when nothing was pending. */
int kx_spool_sync(kx_spool *sp);
/* Appends not yet made durable by kx_spool_sync. */
bool kx_spool_dirty(const kx_spool *sp);
bool kx_spool_durable(const kx_spool *sp); /* has a directory */
void kx_spool_stats_get(const kx_spool *sp, kx_spool_stats *st);

#endif
