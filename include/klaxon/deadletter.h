/*
 * Dead letters: the alerts a sink gave up on (retry_for spent, refused with a 4xx, its sink
 * removed), one JSON line each, so that nothing is ever final by accident:
 *
 *   {"time":"2026-12-02T15:00:00.000Z","sink":"pager","reason":"retry_for spent",
 *    "attempts":9,"status":503,"error":"HTTP 503","key":"<dedup_key>","alert":{...}}
 *
 * "alert" is last and holds the alert's JSON byte for byte as it was sent. The file is
 * DIR/dead.jsonl of the spool directory (or alerting.dead_letter). Writers and the
 * `klaxon alerts retry` command coordinate with an flock on the file itself: a line is
 * appended whole under the lock; retry takes the lock, moves the chosen lines into
 * DIR/requeue/ (a new file, renamed into place) and rewrites the file without them. A running
 * klaxon picks requeued alerts up within seconds (router.c), a stopped one at its next start.
 *
 * Ownership: kx_dead_letter fields are copies owned by the struct (kx_dead_letter_free).
 */
#ifndef KLAXON_DEADLETTER_H
#define KLAXON_DEADLETTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"

typedef struct kx_dead_letter {
    char *time, *sink, *reason, *error, *key;
    long long attempts, status;
    char *rule_id; /* from the alert, "" when it has none */
    char *alert;   /* the alert JSON, NUL-terminated */
    size_t alert_len;
} kx_dead_letter;

/* Appends one dead letter to path under its lock; sync: fdatasync before returning.
 * 0 or -errno. */
int kx_dead_letter_append(const char *path, const char *sink, const char *reason, unsigned attempts,
                          long status, const char *error, const char *key, const char *alert,
                          size_t alert_len, bool sync, kx_buf *scratch);

/* Parses one line (without its newline). -EINVAL when it is not a dead letter. */
int kx_dead_letter_parse(const char *line, size_t len, kx_dead_letter *out);
void kx_dead_letter_free(kx_dead_letter *d);

/* Calls cb for every dead letter in path, in order; lines that do not parse are counted in
 * *bad (may be NULL) and skipped. A missing file has none. 0 or -errno (err set). */
int kx_dead_letters_read(const char *path, void (*cb)(void *ud, const kx_dead_letter *d), void *ud,
                         size_t *bad, kx_err *err);

/* Moves the dead letters select() accepts from path into a new file in requeue_dir (created
 * if needed), atomically, and rewrites path without them. *moved receives their count. */
int kx_dead_letters_requeue(const char *path, const char *requeue_dir,
                            bool (*select)(void *ud, const kx_dead_letter *d), void *ud,
                            size_t *moved, kx_err *err);

#endif
