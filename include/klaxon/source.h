/*
 * source: where events come from. `kafka` is a librdkafka high-level consumer in a consumer
 * group, woken through rd_kafka_queue_io_event_enable (an fd the loop watches, no threads
 * of ours, no busy polling); `file` reads files or stdin line by line for `klaxon replay`.
 *
 * Flow control: a source hands the pipeline one batch at a time and delivers nothing more
 * until kx_source_batch_done. For Kafka, batch_done stores the batch's offsets
 * (enable.auto.offset.store=false; the auto-committer or the final commit sends them), so
 * an offset is stored only after everything its message caused is handed on.
 *
 * Ownership: messages in a batch (and their payloads) are owned by the source and valid
 * until kx_source_batch_done.
 */
#ifndef KLAXON_SOURCE_H
#define KLAXON_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/yaml.h"

struct ev_loop;

typedef struct kx_msg {
    const char *payload;
    size_t len;
    const char *topic; /* NULL for files */
    int32_t partition;
    int64_t offset;       /* Kafka offset; line number (1-based) for files */
    int64_t timestamp_ms; /* Kafka message timestamp; files: the file's mtime (stdin: read time) */
    bool oversize;        /* file line longer than the cap: payload truncated, treat as malformed */
} kx_msg;

typedef struct kx_source kx_source;
typedef void (*kx_batch_cb)(void *ud, const kx_msg *msgs, size_t n);
typedef void (*kx_source_end_cb)(void *ud); /* file source: all input read; kafka: closed */

/*
 * Kafka consumer. cfg: the config's `kafka:` map (keys: brokers, group, batch, properties
 * {librdkafka name: value}); topics: the topic names to subscribe to.
 */
int kx_kafka_source_create(struct ev_loop *loop, const kx_yaml_node *cfg, const char *file,
                           const char *const *topics, size_t ntopics, kx_batch_cb cb, void *ud,
                           kx_source **out, kx_err *err);
/* Validates the `kafka:` map as kx_kafka_source_create would (librdkafka checks each
 * setting), without creating a consumer: `klaxon config check`. */
int kx_kafka_config_check(const kx_yaml_node *cfg, const char *file, kx_err *err);
/*
 * Files ("-" = stdin), read in order. Lines longer than max_line bytes are delivered
 * truncated with oversize set (and the rest of the line skipped). Reading is blocking:
 * this source is for replay, not for the daemon.
 */
int kx_file_source_create(struct ev_loop *loop, const char *const *paths, size_t npaths,
                          size_t max_line, size_t batch, kx_batch_cb cb, void *ud,
                          kx_source_end_cb end, void *end_ud, kx_source **out, kx_err *err);

void kx_source_start(kx_source *s);
void kx_source_batch_done(kx_source *s);
/* Stop/restart delivery (Redis down): kafka pauses the assigned partitions. */
void kx_source_pause(kx_source *s);
void kx_source_resume(kx_source *s);
/* Graceful stop: no new batches; kafka commits the stored offsets and closes the consumer,
 * blocking (only at shutdown) for 10 s at most, even with the brokers gone; the file source
 * calls its end callback. */
void kx_source_stop(kx_source *s);
void kx_source_destroy(kx_source *s);
/* false with a one-line reason appended when the source cannot make progress (kafka: no
 * broker reachable; no partition assigned for 30 s). Always true for files. */
bool kx_source_healthy(const kx_source *s, kx_buf *reason);
/* Appends the source's own Prometheus lines (kafka: klaxon_kafka_consumer_lag per
 * partition, from librdkafka's statistics every 5 s). 0 or -errno. */
int kx_source_render_metrics(const kx_source *s, kx_buf *out);
/* Offsets stored so far (tests, metrics). */
uint64_t kx_source_offsets_stored(const kx_source *s);

#endif
