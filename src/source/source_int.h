/*
 * Inside the source stage: kx_source is a small vtable so the public kx_source_* calls work
 * on both the Kafka consumer and the file reader. Each implementation embeds kx_source as
 * its first member and frees itself in destroy.
 */
#ifndef KX_SOURCE_INT_H
#define KX_SOURCE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "klaxon/source.h"

typedef struct kx__source_ops {
    void (*start)(kx_source *s);
    void (*batch_done)(kx_source *s);
    void (*pause)(kx_source *s);
    void (*resume)(kx_source *s);
    void (*stop)(kx_source *s);
    void (*destroy)(kx_source *s);
    /* Optional: false with a reason when the source cannot make progress. */
    bool (*healthy)(const kx_source *s, kx_buf *reason);
    /* Optional: Prometheus lines of its own (consumer lag). */
    int (*render_metrics)(const kx_source *s, kx_buf *out);
} kx__source_ops;

struct kx_source {
    const kx__source_ops *ops;
    uint64_t offsets_stored;
};

#endif
