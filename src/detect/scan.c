/*
 * The per-event scan: which atoms hit in this event, and so which rules are candidates.
 *
 * Each field of the route's scan list is scanned once per value with the route's Hyperscan
 * literal database for that field. Literals are registered unanchored, so the callback checks the
 * anchors of the atom's kind (startswith: the hit ends at the literal's length; endswith: at the
 * value's end; equals: both) before it counts. An atom's first hit in the event marks the
 * rules it is a trigger of in cs->cand.
 *
 * Memo. Logs repeat themselves: the same Image, ParentImage, User, IntegrityLevel, Company
 * come back event after event. A value's hits depend on nothing but its bytes and the
 * database, so per route and field a small direct-mapped table keeps the verified hits of recent
 * values (up to KX__MEMO_VAL bytes and KX__MEMO_HITS hits); a value found there with identical
 * bytes replays its hits instead of being scanned. Exact, never approximate: the bytes are
 * compared, not only the hash. The keyword database has one memo for all field values; the
 * raw text, different in every event, is always scanned. A memo that recalls too little is
 * turned off (memo_judge, detect_set.h): on unique values it only costs cache misses.
 */
#include <stdlib.h>
#include <string.h>

#include "detect_set.h"

typedef struct scan_ctx {
    kx__cset *cs;
    uint32_t gen;
    unsigned long long len; /* of the value being scanned */
    kx__memo_slot *rec;     /* the memo slot being filled, or NULL */
} scan_ctx;

static void hit(kx__cset *cs, uint32_t gen, uint32_t id)
{
    kx__prefilter *pf = &cs->pf;
    if (pf->atom_gen[id] == gen)
        return;
    pf->atom_gen[id] = gen;
    const kx__atom *a = &pf->atoms[id];
    for (uint32_t i = 0; i < a->nrules; i++)
        cs->cand[a->rules[i] / 64] |= 1ull << (a->rules[i] % 64);
}

/* Atom id hit in the value being scanned. Recorded before the per-event dedup: the memo keeps
 * what this value hits, whatever another value of the event hit already. */
static void value_hit(scan_ctx *sc, uint32_t id)
{
    if (sc->rec) {
        if (sc->rec->nhits < KX__MEMO_HITS)
            sc->rec->hits[sc->rec->nhits++] = id;
        else
            sc->rec = NULL; /* too many to keep: the slot stays empty */
    }
    hit(sc->cs, sc->gen, id);
}

static int on_atom(unsigned int id, unsigned long long from, unsigned long long to,
                   unsigned int flags, void *ud)
{
    (void)from, (void)flags;
    scan_ctx *sc = ud;
    const kx__atom *a = &sc->cs->pf.atoms[id];
    if (((a->kind == KX__PAT_EQ || a->kind == KX__PAT_STARTS) && to != a->len) ||
        ((a->kind == KX__PAT_EQ || a->kind == KX__PAT_ENDS) && to != sc->len))
        return 0;
    value_hit(sc, id);
    return 0;
}

static void scan_one(kx__cset *cs, const hs_database_t *db, const char *s, size_t n, scan_ctx *sc)
{
    /* No literal atom is empty, so an empty value cannot hit; Hyperscan takes unsigned
     * lengths. */
    if (!db || n == 0 || n > UINT32_MAX)
        return;
    sc->len = n;
    hs_scan(db, s, (unsigned)n, 0, cs->pf.scratch, on_atom, sc);
}

/* The route's k-th field's value: its literal atoms, then its regex atoms. The regex database
 * is in byte mode, PCRE2's answer on ASCII only; any other value (and the empty one, which a
 * regex may match) counts as a hit of every regex atom of the field: they are necessary
 * conditions, so too many hits only cost an evaluation. */
static void scan_field(kx__cset *cs, kx__route *r, uint32_t k, const char *s, size_t n,
                       scan_ctx *sc)
{
    scan_one(cs, r->db[k], s, n, sc);
    if (!r->nrx[k])
        return;
    if (r->rdb[k] && n > 0 && n <= UINT32_MAX && kx__is_ascii(s, n)) {
        sc->len = n;
        hs_scan(r->rdb[k], s, (unsigned)n, 0, cs->pf.scratch, on_atom, sc);
        return;
    }
    for (uint32_t i = 0; i < r->nrx[k]; i++)
        value_hit(sc, r->rx_atoms[k][i]);
}

/* Scans value s for the route's table mt: field mt, or (mt == r->nscan) the keywords. */
static void scan_any(kx__cset *cs, kx__route *r, uint32_t mt, const char *s, size_t n, scan_ctx *sc)
{
    if (mt < r->nscan)
        scan_field(cs, r, mt, s, n, sc);
    else
        scan_one(cs, r->kwdb, s, n, sc);
}

/* The memo of the route's k-th scanned field, or (k == r->nscan) of its keyword database;
 * NULL when memos are off or this one was turned off. */
static kx__memo *memo_table(kx__cset *cs, kx__route *r, uint32_t k)
{
    kx__memo *m = &r->memo[k];
    if (!cs->memo_on || m->off)
        return NULL;
    if (!m->slots) {
        m->slots = calloc(KX__MEMO_SLOTS, sizeof(kx__memo_slot)); /* once per field */
        if (!m->slots)
            return NULL;
    }
    return m;
}

/* End of a window of lookups: keep the memo if it recalled enough, else free it. */
static void memo_judge(kx__cset *cs, kx__memo *m)
{
    if (m->hits * KX__MEMO_MIN_RATIO < m->looks) {
        free(m->slots);
        m->slots = NULL;
        m->off = true;
        cs->stats.memos_off++;
    }
    m->looks = m->hits = 0;
}

/* Scans value s for table mt (scan_any), or replays its hits from that table's memo. */
static void scan_value(kx__cset *cs, kx__route *r, uint32_t mt, const char *s, size_t n,
                       scan_ctx *sc)
{
    kx__memo *m = n && n <= KX__MEMO_VAL ? memo_table(cs, r, mt) : NULL;
    if (m && m->looks == KX__MEMO_WINDOW && (memo_judge(cs, m), m->off))
        m = NULL;
    if (!m) {
        sc->rec = NULL;
        scan_any(cs, r, mt, s, n, sc);
        return;
    }
    m->looks++;
    uint64_t h = kx__hash_bytes(s, n, mt + 1);
    kx__memo_slot *slot = &m->slots[(h >> 32) % KX__MEMO_SLOTS];
    if (slot->len == n && slot->hash == h && memcmp(slot->val, s, n) == 0) {
        cs->stats.memo_hits++;
        m->hits++;
        for (uint16_t i = 0; i < slot->nhits; i++)
            hit(cs, sc->gen, slot->hits[i]);
        return;
    }
    slot->len = 0;
    slot->nhits = 0;
    sc->rec = slot;
    scan_any(cs, r, mt, s, n, sc);
    if (sc->rec) {
        slot->hash = h;
        memcpy(slot->val, s, n);
        slot->len = (uint16_t)n;
    }
    sc->rec = NULL;
}

void kx__scan(kx__cset *cs, kx__route *r, const kx__eval *x)
{
    scan_ctx sc = {cs, x->gen, 0, NULL};
    for (uint32_t k = 0; k < r->nscan; k++) {
        uint32_t fid = r->scan[k];
        const char *name = cs->fx.names[fid];
        for (const kx_field *f = kx__field_first(x, fid, name); f; f = kx__field_next(x, f, name))
            scan_value(cs, r, k, f->value, f->value_len, &sc);
    }
    if (r->kwdb) {
        const kx_event *ev = x->ev;
        if (ev->raw)
            scan_one(cs, r->kwdb, ev->raw, ev->raw_len, &sc);
        for (size_t i = 0; i < ev->nfields; i++)
            scan_value(cs, r, r->nscan, ev->fields[i].value, ev->fields[i].value_len, &sc);
    }
}
