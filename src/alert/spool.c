/*
 * The alert spool (include/klaxon/spool.h): segment files of length-prefixed, checksummed
 * records, and in memory one small entry per live alert.
 *
 * In memory: entries[] indexed by seq - base, for every sequence number from the oldest live
 * segment's first alert on: the alert's segment, its size and a bit per sink still to
 * acknowledge (an alert is routed to at most KX_SPOOL_MAX_SINKS sinks, so a u32). Acks name
 * the sink by its position in the alert's list, so reading back needs no name lookup: the
 * first pass over the segments sets and clears bits, the second hands out the alerts whose
 * bits are not all clear.
 *
 * Why segments are deleted oldest first only: an ack is written to the newest segment, which
 * may be younger than the alert it acknowledges. Deleting a segment while an older one lives
 * could delete acks the older one's alerts still need, and they would be sent again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "klaxon/spool.h"

#define SEG_MAGIC "KXSPOOL1"
#define SEG_MAGIC_LEN 8
#define REC_MAGIC 0x4b585243u /* "KXRC" little-endian on disk */
#define REC_HDR 12
#define T_ALERT 1
#define T_ACK 2
#define T_MOVED 3 /* an alert copied forward by a compaction: T_ALERT's body */
#define KEY_LEN 32
#define DEFAULT_MAX_BYTES (256ull << 20)
#define DEFAULT_SEGMENT_BYTES (8ull << 20)

typedef struct entry {
    uint64_t seg;  /* segment id (durable spool) */
    uint32_t size; /* record bytes */
    uint32_t mask; /* sinks still to acknowledge */
} entry;

/* An alert moved forward by compaction: older than the dense entries' base, kept aside so the
 * dense array can still be trimmed past it (a slow sink's few alerts must not make it grow
 * with every alert appended after them). */
typedef struct straggler {
    uint64_t seq;
    entry e;
} straggler;

typedef struct seg {
    uint64_t id;
    uint64_t bytes;
    uint64_t live;   /* alerts in it with a bit still set */
    uint64_t alerts; /* alert records in it */
} seg;

struct kx_spool {
    char *dir;
    int lockfd;
    int fd; /* the newest segment, appended to */
    seg *segs;
    size_t nsegs, segs_cap;
    uint64_t next_id;

    entry *ents;
    size_t nents, ents_cap;
    straggler *strag;
    size_t nstrag, strag_cap;
    uint64_t base; /* seq of ents[0] */
    uint64_t next_seq;

    uint64_t max_bytes, segment_bytes;
    uint64_t bytes; /* live segments (durable), live alerts' records (memory) */
    uint64_t pending;
    uint64_t skipped, recovered;
    bool dirty;
    bool read_only;
    kx_buf rec;
};

/* ---- little-endian fields ---- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* ---- entries ---- */

static entry *strag_find(kx_spool *sp, uint64_t seq)
{
    for (size_t i = 0; i < sp->nstrag; i++)
        if (sp->strag[i].seq == seq)
            return &sp->strag[i].e;
    return NULL;
}

/* A dense entry that belongs to a segment is the alert's; one that does not may have moved
 * aside (a straggler). */
static entry *ent(kx_spool *sp, uint64_t seq)
{
    entry *d = seq >= sp->base && seq - sp->base < sp->nents ? &sp->ents[seq - sp->base] : NULL;
    if (d && (d->seg || d->mask))
        return d;
    entry *st = sp->nstrag ? strag_find(sp, seq) : NULL;
    return st ? st : d;
}

/* seq's entry moved aside (see straggler); the dense slot is emptied. */
static entry *strag_add(kx_spool *sp, uint64_t seq, const entry *from)
{
    if (sp->nstrag == sp->strag_cap) {
        size_t cap = sp->strag_cap ? sp->strag_cap * 2 : 8;
        straggler *p = realloc(sp->strag, cap * sizeof(*p));
        if (!p)
            return NULL;
        sp->strag = p;
        sp->strag_cap = cap;
    }
    straggler *st = &sp->strag[sp->nstrag++];
    st->seq = seq;
    st->e = from ? *from : (entry){0};
    return &st->e;
}

static void strag_drop(kx_spool *sp, const entry *e)
{
    for (size_t i = 0; i < sp->nstrag; i++)
        if (&sp->strag[i].e == e) {
            sp->strag[i] = sp->strag[--sp->nstrag];
            return;
        }
}

static bool is_strag(const kx_spool *sp, const entry *e)
{
    uintptr_t p = (uintptr_t)e, lo = (uintptr_t)sp->strag;
    return sp->nstrag && p >= lo && p < lo + sp->nstrag * sizeof(straggler);
}

/* Makes room for seq (>= base) and returns its entry, zeroed if new. */
static entry *ent_add(kx_spool *sp, uint64_t seq)
{
    if (sp->nents == 0)
        sp->base = seq;
    if (seq < sp->base) {
        /* Moved forward by a compaction, read back (maybe twice: a crash before the old
         * segment was deleted leaves both copies; the later one wins, acks after it apply). */
        entry *o = strag_find(sp, seq);
        return o ? o : strag_add(sp, seq, NULL);
    }
    size_t need = (size_t)(seq - sp->base) + 1;
    if (need > sp->ents_cap) {
        size_t cap = sp->ents_cap ? sp->ents_cap : 256;
        while (cap < need)
            cap *= 2;
        entry *e = realloc(sp->ents, cap * sizeof(*e));
        if (!e)
            return NULL;
        sp->ents = e;
        sp->ents_cap = cap;
    }
    if (need > sp->nents) {
        memset(&sp->ents[sp->nents], 0, (need - sp->nents) * sizeof(entry));
        sp->nents = need;
    }
    return &sp->ents[seq - sp->base];
}

/* Drops leading entries below seq (complete alerts of deleted segments). */
static void ents_trim(kx_spool *sp, uint64_t seq)
{
    if (seq <= sp->base)
        return;
    size_t drop = (size_t)(seq - sp->base);
    if (drop >= sp->nents) {
        sp->nents = 0;
        sp->base = seq;
        return;
    }
    memmove(sp->ents, sp->ents + drop, (sp->nents - drop) * sizeof(entry));
    sp->nents -= drop;
    sp->base = seq;
    if (sp->ents_cap > 4096 && sp->nents < sp->ents_cap / 4) {
        entry *p = realloc(sp->ents, sp->ents_cap / 2 * sizeof(*p));
        if (p) {
            sp->ents = p;
            sp->ents_cap /= 2;
        }
    }
}

/* ---- segments ---- */

static seg *seg_find(kx_spool *sp, uint64_t id)
{
    for (size_t i = 0; i < sp->nsegs; i++)
        if (sp->segs[i].id == id)
            return &sp->segs[i];
    return NULL;
}

static void seg_path(const kx_spool *sp, uint64_t id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%016" PRIx64 ".seg", sp->dir, id);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

/* Deletes the oldest segments while they hold no live alert (never the one appended to). */
static void segs_collect(kx_spool *sp)
{
    size_t drop = 0;
    while (drop + 1 < sp->nsegs && sp->segs[drop].live == 0) {
        char path[4096];
        seg_path(sp, sp->segs[drop].id, path, sizeof(path));
        if (unlink(path) && errno != ENOENT) {
            kx_log(KX_LOG_ERROR, "alert", "spool: cannot delete %s: %s", path, strerror(errno));
            break;
        }
        sp->bytes -= sp->segs[drop].bytes;
        drop++;
    }
    if (!drop)
        return;
    memmove(sp->segs, sp->segs + drop, (sp->nsegs - drop) * sizeof(seg));
    sp->nsegs -= drop;
    /* Entries of the deleted segments are all complete; the live ones start at the first
     * entry of a segment still here. */
    size_t k = 0;
    while (k < sp->nents && !seg_find(sp, sp->ents[k].seg) && sp->ents[k].mask == 0)
        k++;
    ents_trim(sp, sp->base + k);
}

static int seg_new(kx_spool *sp)
{
    char path[4096];
    uint64_t id = sp->next_id;
    seg_path(sp, id, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, SEG_MAGIC, SEG_MAGIC_LEN);
    if (n != SEG_MAGIC_LEN || fdatasync(fd) || fsync_dir(sp->dir)) {
        int rc = n < 0 ? -errno : -EIO;
        close(fd);
        unlink(path);
        return rc;
    }
    if (sp->nsegs == sp->segs_cap) {
        size_t cap = sp->segs_cap ? sp->segs_cap * 2 : 8;
        seg *s = realloc(sp->segs, cap * sizeof(*s));
        if (!s) {
            close(fd);
            unlink(path);
            return -ENOMEM;
        }
        sp->segs = s;
        sp->segs_cap = cap;
    }
    sp->segs[sp->nsegs++] = (seg){.id = id, .bytes = SEG_MAGIC_LEN, .live = 0};
    sp->bytes += SEG_MAGIC_LEN;
    sp->next_id = id + 1;
    if (sp->fd >= 0) {
        /* The old segment's appends must be durable before it is left: a failed sync fails
         * the switch (the append that needed it waits and is retried). */
        if (sp->dirty && fdatasync(sp->fd)) {
            int rc = -errno;
            sp->nsegs--;
            sp->bytes -= SEG_MAGIC_LEN;
            sp->next_id = id;
            close(fd);
            unlink(path);
            return rc;
        }
        close(sp->fd);
    }
    sp->fd = fd;
    sp->dirty = false;
    return 0;
}

/* Appends the record in sp->rec to the newest segment whole, or not at all. */
static int seg_write(kx_spool *sp)
{
    seg *s = &sp->segs[sp->nsegs - 1];
    const char *p = sp->rec.data;
    size_t left = sp->rec.len;
    while (left) {
        ssize_t n = write(sp->fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int rc = n < 0 ? -errno : -EIO;
            /* Cut the partial record off, so the next append does not follow garbage (the
             * reader would skip it, but also count it as corruption). */
            if (ftruncate(sp->fd, (off_t)s->bytes))
                kx_log(KX_LOG_ERROR, "alert", "spool: cannot cut a failed write back: %s",
                       strerror(errno));
            return rc;
        }
        p += n;
        left -= (size_t)n;
    }
    s->bytes += sp->rec.len;
    sp->bytes += sp->rec.len;
    sp->dirty = true;
    return 0;
}

/* ---- records ---- */

/* Starts a record of type t in sp->rec: header placeholder, then the type byte. */
static int rec_begin(kx_spool *sp, unsigned char t)
{
    kx_buf_reset(&sp->rec);
    unsigned char hdr[REC_HDR + 1] = {0};
    hdr[REC_HDR] = t;
    return kx_buf_append(&sp->rec, (const char *)hdr, sizeof(hdr));
}

static void rec_end(kx_spool *sp)
{
    unsigned char *p = (unsigned char *)sp->rec.data;
    size_t blen = sp->rec.len - REC_HDR;
    put32(p, REC_MAGIC);
    put32(p + 4, (uint32_t)blen);
    put32(p + 8, crc(p + REC_HDR, blen));
}

/* Parsed alert body (pointers into the record). */
typedef struct alert_rec {
    uint64_t seq;
    int64_t created_ms;
    const char *key;
    const char *sinks[KX_SPOOL_MAX_SINKS];
    uint8_t sink_len[KX_SPOOL_MAX_SINKS];
    size_t nsinks;
    const char *payload;
    size_t len;
} alert_rec;

/* body[0] is the type. False when the body is not a well-formed alert. */
static bool parse_alert(const unsigned char *b, size_t n, alert_rec *a)
{
    size_t off = 1;
    if (n < off + 8 + 8 + KEY_LEN + 1)
        return false;
    a->seq = get64(b + off);
    a->created_ms = (int64_t)get64(b + off + 8);
    a->key = (const char *)b + off + 16;
    off += 16 + KEY_LEN;
    a->nsinks = b[off++];
    if (a->nsinks == 0 || a->nsinks > KX_SPOOL_MAX_SINKS)
        return false;
    for (size_t i = 0; i < a->nsinks; i++) {
        if (off >= n)
            return false;
        size_t l = b[off++];
        if (l == 0 || off + l > n)
            return false;
        a->sinks[i] = (const char *)b + off;
        a->sink_len[i] = (uint8_t)l;
        off += l;
    }
    a->payload = (const char *)b + off;
    a->len = n - off;
    return true;
}

static uint64_t compact_oldest(kx_spool *sp);

int kx_spool_append(kx_spool *sp, const char *key, int64_t created_ms, const char *const *sinks,
                    size_t nsinks, const char *payload, size_t len, uint64_t *seq)
{
    if (sp->read_only)
        return -EROFS;
    if (nsinks == 0 || nsinks > KX_SPOOL_MAX_SINKS || strlen(key) != KEY_LEN)
        return -EINVAL;
    /* Past half the cap, move the few pending alerts out of the oldest segments: one slow
     * sink must not fill the spool (and pause the stream) while the others keep up. */
    for (int i = 0; i < 4 && sp->dir && sp->bytes >= sp->max_bytes / 2; i++)
        if (!compact_oldest(sp))
            break;
    if (sp->bytes >= sp->max_bytes)
        return -ENOSPC;
    int rc = rec_begin(sp, T_ALERT);
    unsigned char fix[16];
    put64(fix, sp->next_seq);
    put64(fix + 8, (uint64_t)created_ms);
    if (!rc)
        rc = kx_buf_append(&sp->rec, (const char *)fix, sizeof(fix));
    if (!rc)
        rc = kx_buf_append(&sp->rec, key, KEY_LEN);
    unsigned char nb = (unsigned char)nsinks;
    if (!rc)
        rc = kx_buf_append(&sp->rec, (const char *)&nb, 1);
    for (size_t i = 0; i < nsinks && !rc; i++) {
        size_t l = strlen(sinks[i]);
        if (l == 0 || l > 255)
            return -EINVAL;
        unsigned char lb = (unsigned char)l;
        rc = kx_buf_append(&sp->rec, (const char *)&lb, 1);
        if (!rc)
            rc = kx_buf_append(&sp->rec, sinks[i], l);
    }
    if (!rc)
        rc = kx_buf_append(&sp->rec, payload, len);
    if (rc)
        return rc;
    if (sp->rec.len - REC_HDR > KX_SPOOL_MAX_RECORD)
        return -E2BIG;
    rec_end(sp);
    entry *e = ent_add(sp, sp->next_seq);
    if (!e)
        return -ENOMEM;
    if (sp->dir) {
        if (sp->segs[sp->nsegs - 1].bytes >= sp->segment_bytes && (rc = seg_new(sp)))
            return rc;
        if ((rc = seg_write(sp)))
            return rc;
        e->seg = sp->segs[sp->nsegs - 1].id;
        sp->segs[sp->nsegs - 1].live++;
        sp->segs[sp->nsegs - 1].alerts++;
    } else {
        sp->bytes += sp->rec.len;
    }
    e->size = (uint32_t)sp->rec.len;
    e->mask = nsinks == 32 ? UINT32_MAX : (1u << nsinks) - 1;
    sp->pending++;
    *seq = sp->next_seq++;
    return 0;
}

/* Clears the sink's bit; when the alert is complete, frees what it held. */
static void ent_clear(kx_spool *sp, entry *e, unsigned sink)
{
    e->mask &= ~(1u << sink);
    if (e->mask)
        return;
    sp->pending--;
    if (sp->dir) {
        seg *s = seg_find(sp, e->seg);
        if (s && s->live)
            s->live--;
        if (is_strag(sp, e))
            strag_drop(sp, e);
    } else {
        sp->bytes -= e->size;
        size_t k = 0;
        while (k < sp->nents && sp->ents[k].mask == 0)
            k++;
        ents_trim(sp, sp->base + k);
    }
}

int kx_spool_ack(kx_spool *sp, uint64_t seq, unsigned sink, kx_spool_outcome outcome)
{
    if (sp->read_only)
        return -EROFS;
    entry *e = ent(sp, seq);
    if (!e || sink >= KX_SPOOL_MAX_SINKS || !(e->mask & (1u << sink)))
        return -ENOENT;
    if (sp->dir) {
        int rc = rec_begin(sp, T_ACK);
        unsigned char b[10];
        put64(b, seq);
        b[8] = (unsigned char)sink;
        b[9] = (unsigned char)outcome;
        if (!rc)
            rc = kx_buf_append(&sp->rec, (const char *)b, sizeof(b));
        if (rc)
            return rc;
        rec_end(sp);
        /* An ack is written even past max_bytes: it is what frees space. A new segment for
         * it only when the current one is full, like alerts. */
        if (sp->segs[sp->nsegs - 1].bytes >= sp->segment_bytes && (rc = seg_new(sp)))
            return rc;
        if ((rc = seg_write(sp))) {
            /* Not recorded on disk: after a crash the sink gets the alert again. It is done
             * in memory all the same, or it would pin its segment and every newer one. */
            ent_clear(sp, e, sink);
            segs_collect(sp);
            return rc;
        }
    }
    ent_clear(sp, e, sink);
    if (sp->dir)
        segs_collect(sp);
    return 0;
}

int kx_spool_sync(kx_spool *sp)
{
    if (!sp->dirty)
        return 0;
    if (fdatasync(sp->fd))
        return -errno;
    sp->dirty = false;
    return 0;
}

bool kx_spool_dirty(const kx_spool *sp)
{
    return sp->dirty;
}

bool kx_spool_durable(const kx_spool *sp)
{
    return sp->dir != NULL;
}

void kx_spool_stats_get(const kx_spool *sp, kx_spool_stats *st)
{
    st->bytes = sp->bytes;
    st->segments = sp->nsegs;
    st->pending = sp->pending;
    st->skipped_bytes = sp->skipped;
    st->recovered = sp->recovered;
    st->full = sp->bytes >= sp->max_bytes;
}

/* ---- reading back ---- */

typedef void (*rec_fn)(kx_spool *sp, uint64_t seg_id, const unsigned char *body, size_t n,
                       void *ud);

/* Walks the records of one segment file's bytes; counts and logs what it has to skip. */
static void walk(kx_spool *sp, uint64_t id, const unsigned char *d, size_t n, bool count, rec_fn fn,
                 void *ud)
{
    size_t off = SEG_MAGIC_LEN, skipped = 0, first_bad = 0;
    if (n < SEG_MAGIC_LEN || memcmp(d, SEG_MAGIC, SEG_MAGIC_LEN)) {
        skipped = n;
        off = n;
    }
    while (off < n) {
        bool ok = n - off >= REC_HDR && get32(d + off) == REC_MAGIC;
        uint32_t blen = ok ? get32(d + off + 4) : 0;
        ok = ok && blen >= 1 && blen <= KX_SPOOL_MAX_RECORD + 1 && blen <= n - off - REC_HDR &&
             crc(d + off + REC_HDR, blen) == get32(d + off + 8);
        if (ok) {
            fn(sp, id, d + off + REC_HDR, blen, ud);
            off += REC_HDR + blen;
            continue;
        }
        /* Look for the next record that checks out from the next byte on. */
        if (!skipped)
            first_bad = off;
        size_t next = off + 1;
        while (next + 4 <= n && get32(d + next) != REC_MAGIC)
            next++;
        if (next + 4 > n)
            next = n;
        skipped += next - off;
        off = next;
    }
    if (skipped && count && sp->read_only) {
        /* A reader beside a running klaxon may see the segment it is appending to
         * mid-write: counted, not reported. */
        sp->skipped += skipped;
    } else if (skipped && count) {
        sp->skipped += skipped;
        kx_metric_add(KX_M_SPOOL_CORRUPT_BYTES, skipped);
        kx_log(KX_LOG_ERROR, "alert",
               "spool: segment %016" PRIx64 ": %zu bytes from offset %zu are torn or corrupt "
               "and were skipped; the records around them are read",
               id, skipped, first_bad);
    }
}

static void pass1(kx_spool *sp, uint64_t id, const unsigned char *b, size_t n, void *ud)
{
    (void)ud;
    if (b[0] == T_ALERT || b[0] == T_MOVED) {
        alert_rec a;
        if (!parse_alert(b, n, &a))
            return;
        entry *e;
        if (b[0] == T_MOVED) {
            /* A moved alert never widens the dense table: it goes aside at once (and so does
             * its older copy's entry, when that segment was still there). */
            entry *d = a.seq >= sp->base && a.seq - sp->base < sp->nents
                           ? &sp->ents[a.seq - sp->base]
                           : NULL;
            e = strag_find(sp, a.seq);
            if (!e) {
                e = strag_add(sp, a.seq, d && (d->seg || d->mask) ? d : NULL);
                if (d && e)
                    memset(d, 0, sizeof(*d));
            }
        } else {
            e = ent_add(sp, a.seq);
        }
        if (!e)
            return; /* out of memory: it will not be sent again; logged by the caller */
        e->seg = id;
        seg *sg = seg_find(sp, id);
        if (sg)
            sg->alerts++;
        e->size = (uint32_t)(n + REC_HDR);
        e->mask = a.nsinks == 32 ? UINT32_MAX : (1u << a.nsinks) - 1;
        if (a.seq >= sp->next_seq)
            sp->next_seq = a.seq + 1;
    } else if (b[0] == T_ACK && n >= 11) {
        entry *e = ent(sp, get64(b + 1));
        if (e && b[9] < KX_SPOOL_MAX_SINKS)
            e->mask &= ~(1u << b[9]);
    }
}

typedef struct pass2_ud {
    kx_spool_recover_cb cb;
    void *ud;
    char *payload;
    size_t cap;
} pass2_ud;

static void pass2(kx_spool *sp, uint64_t id, const unsigned char *b, size_t n, void *vud)
{
    pass2_ud *u = vud;
    alert_rec a;
    if ((b[0] != T_ALERT && b[0] != T_MOVED) || !parse_alert(b, n, &a))
        return;
    entry *e = ent(sp, a.seq);
    if (!e || e->seg != id || e->mask == 0)
        return;
    seg *s = seg_find(sp, id);
    if (s)
        s->live++;
    sp->pending++;
    sp->recovered++;
    if (!u->cb)
        return;
    /* NUL-terminated copies: names and the payload are not, on disk. */
    size_t need = a.len + 1 + KEY_LEN + 1 + a.nsinks * 256;
    if (need > u->cap) {
        char *p = realloc(u->payload, need);
        if (!p)
            return;
        u->payload = p;
        u->cap = need;
    }
    char *o = u->payload;
    memcpy(o, a.payload, a.len);
    o[a.len] = '\0';
    char *key = o + a.len + 1;
    memcpy(key, a.key, KEY_LEN);
    key[KEY_LEN] = '\0';
    char *names = key + KEY_LEN + 1;
    const char *sinks[KX_SPOOL_MAX_SINKS];
    for (size_t i = 0; i < a.nsinks; i++) {
        memcpy(names, a.sinks[i], a.sink_len[i]);
        names[a.sink_len[i]] = '\0';
        sinks[i] = names;
        names += a.sink_len[i] + 1;
    }
    kx_spool_alert out = {.seq = a.seq,
                          .created_ms = a.created_ms,
                          .key = key,
                          .sinks = sinks,
                          .nsinks = a.nsinks,
                          .pending = e->mask,
                          .payload = o,
                          .len = a.len};
    u->cb(u->ud, &out);
}

static int read_file(const char *path, unsigned char **out, size_t *n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st)) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    size_t len = (size_t)st.st_size;
    unsigned char *d = malloc(len ? len : 1);
    size_t got = 0;
    while (d && got < len) {
        ssize_t r = read(fd, d + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!d)
        return -ENOMEM;
    *out = d;
    *n = got;
    return 0;
}

/* ---- compaction ---- */

typedef struct compact_ctx {
    uint64_t from;
    int rc;
    size_t moved;
} compact_ctx;

/* One alert of the oldest segment still pending: its record again in the newest segment, then
 * an ack for each sink already done, so reading back gives the same pending sinks. */
static void copy_forward(kx_spool *sp, uint64_t id, const unsigned char *b, size_t n, void *ud)
{
    compact_ctx *cc = ud;
    alert_rec a;
    if (cc->rc || (b[0] != T_ALERT && b[0] != T_MOVED) || !parse_alert(b, n, &a))
        return;
    entry *e = ent(sp, a.seq);
    if (!e || e->seg != id || e->mask == 0)
        return;
    if (sp->segs[sp->nsegs - 1].bytes >= sp->segment_bytes && (cc->rc = seg_new(sp)))
        return;
    /* The moved record and the acks of the sinks already done, in one write: read back, the
     * copy counts every sink as pending until the acks after it say otherwise. */
    kx_buf_reset(&sp->rec);
    unsigned char hdr[REC_HDR] = {0}, t = T_MOVED;
    if ((cc->rc = kx_buf_append(&sp->rec, (const char *)hdr, REC_HDR)) ||
        (cc->rc = kx_buf_append(&sp->rec, (const char *)&t, 1)) ||
        (cc->rc = kx_buf_append(&sp->rec, (const char *)b + 1, n - 1)))
        return;
    rec_end(sp);
    uint32_t all = a.nsinks == 32 ? UINT32_MAX : (1u << a.nsinks) - 1;
    for (unsigned i = 0; i < a.nsinks; i++) {
        if (!(all & ~e->mask & (1u << i)))
            continue;
        unsigned char ab[REC_HDR + 11];
        ab[REC_HDR] = T_ACK;
        put64(ab + REC_HDR + 1, a.seq);
        ab[REC_HDR + 9] = (unsigned char)i;
        ab[REC_HDR + 10] = KX_SPOOL_DELIVERED;
        put32(ab, REC_MAGIC);
        put32(ab + 4, 11);
        put32(ab + 8, crc(ab + REC_HDR, 11));
        if ((cc->rc = kx_buf_append(&sp->rec, (const char *)ab, sizeof(ab))))
            return;
    }
    if ((cc->rc = seg_write(sp)))
        return;
    /* Written: now memory follows. Aside from now on, so the dense entries can be trimmed
     * past it. */
    uint64_t to_id = sp->segs[sp->nsegs - 1].id;
    if (!is_strag(sp, e)) {
        entry *ne = strag_add(sp, a.seq, e);
        if (!ne) {
            cc->rc = -ENOMEM;
            return;
        }
        memset(e, 0, sizeof(*e));
        e = ne;
    }
    seg *from = seg_find(sp, id), *to = seg_find(sp, to_id);
    if (from && from->live)
        from->live--;
    if (to) {
        to->live++;
        to->alerts++;
    }
    e->seg = to_id;
    cc->moved++;
}

/* The oldest segment, pinned by a few alerts some slow sink still has not taken, would keep
 * every newer segment (deletion is oldest first) and fill the spool while every other sink
 * is up to date. Its pending alerts move to the newest segment, which is synced, and the
 * oldest is deleted. Returns bytes freed (0: nothing done). */
static uint64_t compact_oldest(kx_spool *sp)
{
    if (!sp->dir || sp->read_only || sp->nsegs < 2)
        return 0;
    /* Only a mostly dead segment: copying one that is still mostly pending frees nothing (all
     * sinks are behind, and back-pressure is the right answer). */
    if (sp->segs[0].live * 4 > sp->segs[0].alerts)
        return 0;
    uint64_t before = sp->bytes, id = sp->segs[0].id;
    if (sp->segs[0].live) {
        char path[4096];
        unsigned char *d = NULL;
        size_t n = 0;
        seg_path(sp, id, path, sizeof(path));
        if (read_file(path, &d, &n))
            return 0;
        compact_ctx cc = {.from = id};
        walk(sp, id, d, n, false, copy_forward, &cc);
        free(d);
        if (cc.rc || kx_spool_sync(sp)) {
            kx_log(KX_LOG_ERROR, "alert", "spool: compaction of segment %016" PRIx64 " failed: %s",
                   id, strerror(cc.rc ? -cc.rc : errno));
            return 0;
        }
        kx_log(KX_LOG_INFO, "alert",
               "spool: %zu alert(s) still pending moved out of segment %016" PRIx64 " so it can go",
               cc.moved, id);
    }
    segs_collect(sp);
    return before > sp->bytes ? before - sp->bytes : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The ids of the directory's segment files, sorted. */
static int list_segments(const char *dir, uint64_t **out, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    size_t cap = 16;
    uint64_t *ids = malloc(cap * sizeof(*ids));
    int rc = ids ? 0 : -ENOMEM;
    *n = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        const char *nm = de->d_name;
        if (strlen(nm) != 20 || strcmp(nm + 16, ".seg") || strspn(nm, "0123456789abcdef") != 16)
            continue;
        if (*n == cap) {
            uint64_t *p = realloc(ids, cap * 2 * sizeof(*ids));
            if (!p) {
                rc = -ENOMEM;
                break;
            }
            ids = p;
            cap *= 2;
        }
        ids[(*n)++] = strtoull(nm, NULL, 16);
    }
    closedir(d);
    if (rc) {
        free(ids);
        return rc;
    }
    qsort(ids, *n, sizeof(*ids), cmp_u64);
    *out = ids;
    return 0;
}

static int recover(kx_spool *sp, kx_spool_recover_cb cb, void *ud, kx_err *err)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    int rc = list_segments(sp->dir, &ids, &n);
    if (rc) {
        kx_err_set(err, sp->dir, 0, 0, "spool: cannot list the directory: %s", strerror(-rc));
        return rc;
    }
    for (int pass = 1; pass <= 2 && !rc; pass++) {
        pass2_ud u = {.cb = cb, .ud = ud};
        for (size_t i = 0; i < n; i++) {
            char path[4096];
            unsigned char *d = NULL;
            size_t len = 0;
            seg_path(sp, ids[i], path, sizeof(path));
            if ((rc = read_file(path, &d, &len))) {
                kx_err_set(err, path, 0, 0, "spool: cannot read: %s", strerror(-rc));
                break;
            }
            if (pass == 1) {
                if (sp->nsegs == sp->segs_cap) {
                    size_t cap = sp->segs_cap ? sp->segs_cap * 2 : 8;
                    seg *s = realloc(sp->segs, cap * sizeof(*s));
                    if (!s) {
                        free(d);
                        rc = -ENOMEM;
                        break;
                    }
                    sp->segs = s;
                    sp->segs_cap = cap;
                }
                sp->segs[sp->nsegs++] = (seg){.id = ids[i], .bytes = len};
                sp->bytes += len;
                walk(sp, ids[i], d, len, true, pass1, NULL);
            } else {
                walk(sp, ids[i], d, len, false, pass2, &u);
            }
            free(d);
            if (ids[i] >= sp->next_id)
                sp->next_id = ids[i] + 1;
        }
        free(u.payload);
    }
    free(ids);
    return rc;
}

int kx_spool_open(const kx_spool_opts *opts, kx_spool_recover_cb cb, void *ud, kx_spool **out,
                  kx_err *err)
{
    kx_spool *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return -ENOMEM;
    sp->fd = sp->lockfd = -1;
    sp->next_seq = sp->next_id = 1;
    sp->max_bytes = opts && opts->max_bytes ? opts->max_bytes : DEFAULT_MAX_BYTES;
    sp->segment_bytes = opts && opts->segment_bytes ? opts->segment_bytes : DEFAULT_SEGMENT_BYTES;
    kx_buf_init(&sp->rec, KX_SPOOL_MAX_RECORD + 4096);
    int rc = 0;
    sp->read_only = opts && opts->read_only;
    if (sp->read_only) {
        if (!opts->dir || !(sp->dir = strdup(opts->dir))) {
            rc = opts->dir ? -ENOMEM : -EINVAL;
            goto fail;
        }
        if ((rc = recover(sp, cb, ud, err)))
            goto fail;
    } else if (opts && opts->dir) {
        if (!(sp->dir = strdup(opts->dir))) {
            rc = -ENOMEM;
            goto fail;
        }
        if (mkdir(sp->dir, 0700) && errno != EEXIST) {
            rc = -errno;
            kx_err_set(err, sp->dir, 0, 0, "spool: cannot create the directory: %s",
                       strerror(errno));
            goto fail;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/lock", sp->dir);
        sp->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (sp->lockfd < 0) {
            rc = -errno;
            kx_err_set(err, path, 0, 0, "spool: cannot open: %s", strerror(errno));
            goto fail;
        }
        if (flock(sp->lockfd, LOCK_EX | LOCK_NB)) {
            rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
            kx_err_set(err, sp->dir, 0, 0,
                       "spool: the directory is in use by another klaxon process (each "
                       "process needs a spool of its own)");
            goto fail;
        }
        if ((rc = recover(sp, cb, ud, err)))
            goto fail;
        if ((rc = seg_new(sp))) {
            kx_err_set(err, sp->dir, 0, 0, "spool: cannot create a segment: %s", strerror(-rc));
            goto fail;
        }
        segs_collect(sp);
    }
    *out = sp;
    return 0;
fail:
    kx_spool_close(sp);
    return rc;
}

void kx_spool_close(kx_spool *sp)
{
    if (!sp)
        return;
    if (sp->fd >= 0) {
        if (sp->dirty)
            (void)fdatasync(sp->fd);
        close(sp->fd);
    }
    /* A spool left with nothing pending leaves no segment behind. */
    if (sp->dir && sp->pending == 0 && !sp->read_only)
        for (size_t i = 0; i < sp->nsegs; i++) {
            char path[4096];
            seg_path(sp, sp->segs[i].id, path, sizeof(path));
            (void)unlink(path);
        }
    if (sp->lockfd >= 0)
        close(sp->lockfd);
    free(sp->segs);
    free(sp->ents);
    free(sp->strag);
    free(sp->dir);
    kx_buf_fini(&sp->rec);
    free(sp);
}
