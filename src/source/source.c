/*
 * The public kx_source_* calls, dispatched to the Kafka or file implementation. NULL is
 * accepted everywhere so shutdown paths need no checks.
 */
#include "source_int.h"

#include <stddef.h>

void kx_source_start(kx_source *s)
{
    if (s)
        s->ops->start(s);
}

void kx_source_batch_done(kx_source *s)
{
    if (s)
        s->ops->batch_done(s);
}

void kx_source_pause(kx_source *s)
{
    if (s)
        s->ops->pause(s);
}

void kx_source_resume(kx_source *s)
{
    if (s)
        s->ops->resume(s);
}

void kx_source_stop(kx_source *s)
{
    if (s)
        s->ops->stop(s);
}

void kx_source_destroy(kx_source *s)
{
    if (s)
        s->ops->destroy(s);
}

uint64_t kx_source_offsets_stored(const kx_source *s)
{
    return s ? s->offsets_stored : 0;
}

bool kx_source_healthy(const kx_source *s, kx_buf *reason)
{
    return !s || !s->ops->healthy || s->ops->healthy(s, reason);
}

int kx_source_render_metrics(const kx_source *s, kx_buf *out)
{
    return s && s->ops->render_metrics ? s->ops->render_metrics(s, out) : 0;
}
