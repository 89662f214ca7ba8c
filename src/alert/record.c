/*
 * The alert record: severity, dedup_key, category and the JSON rendering that
 * docs/alerts.md specifies key by key. Other tools read these bytes, so the key order and
 * number formats here are a contract; change docs/alerts.md and the exact-output tests with
 * them.
 *
 * Everything here is deterministic: the dedup_key and id are hashes of the alert's own
 * fields (never of time or addresses), so rendering the same alert twice, in this process or
 * after a restart and replay, gives the same bytes. Rendering writes only into the caller's
 * kx_buf (no jansson, no allocation besides the buffer's growth).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alert_int.h"
#include "klaxon/alert.h"

/* Seeds of the two 64-bit halves of the dedup_key and of the id. Changing any of them
 * changes every key ever issued (and so breaks downstream deduplication): don't. */
#define SEED_KEY_A 0x6b6c61786f6e0001ULL
#define SEED_KEY_B 0x6b6c61786f6e0002ULL
#define SEED_ID_A 0x6b6c61786f6e0003ULL
#define SEED_ID_B 0x6b6c61786f6e0004ULL

const char *kx_alert_severity(const char *level)
{
    /* Sigma's default level is medium (detect fills it in); an unknown level is treated the
     * same rather than dropped, so a typo never silences an alert. */
    if (!level)
        return "warning";
    if (!strcasecmp(level, "critical"))
        return "critical";
    if (!strcasecmp(level, "high"))
        return "error";
    if (!strcasecmp(level, "low") || !strcasecmp(level, "informational"))
        return "info";
    return "warning";
}

/* Hashes one length-prefixed string into h, so ("ab","c") and ("a","bc") differ. NULL is
 * hashed as a distinct marker length. */
static uint64_t hash_str(uint64_t h, const char *s)
{
    unsigned char len[8];
    uint64_t n = s ? (uint64_t)strlen(s) : UINT64_MAX;
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(n >> (8 * i));
    h = kx_hash64(len, sizeof(len), h);
    if (s)
        h = kx_hash64(s, (size_t)n, h);
    return h;
}

static uint64_t hash_i64(uint64_t h, int64_t v)
{
    unsigned char b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(u >> (8 * i));
    return kx_hash64(b, sizeof(b), h);
}

static uint64_t dedup_half(const kx_alert *a, uint64_t seed)
{
    uint64_t h = hash_str(seed, a->rule_id);
    h = hash_str(h, a->tenant);
    h = hash_i64(h, (int64_t)a->ngroup);
    for (size_t i = 0; i < a->ngroup; i++) {
        h = hash_str(h, a->group[i].key);
        h = hash_str(h, a->group[i].value);
    }
    /* A single-event alert is about one event: two events of the same second (another
     * host, another user) are two alerts. */
    if (a->event_id)
        h = hash_str(h, a->event_id);
    return hash_i64(h, a->first_seen_ms);
}

void kx__alert_dedup_hash(const kx_alert *a, uint64_t *h1, uint64_t *h2)
{
    *h1 = dedup_half(a, SEED_KEY_A);
    *h2 = dedup_half(a, SEED_KEY_B);
}

void kx_alert_dedup_key(const kx_alert *a, char *out, size_t outlen)
{
    uint64_t h1, h2;
    kx__alert_dedup_hash(a, &h1, &h2);
    snprintf(out, outlen, "%016" PRIx64 "%016" PRIx64, h1, h2);
}

/* id = hex(hash(dedup_key, count, seed A)) + hex(hash(dedup_key, count, seed B)). */
static void alert_id(const char *key, int64_t count, char *out, size_t outlen)
{
    uint64_t a = hash_i64(kx_hash64(key, strlen(key), SEED_ID_A), count);
    uint64_t b = hash_i64(kx_hash64(key, strlen(key), SEED_ID_B), count);
    snprintf(out, outlen, "%016" PRIx64 "%016" PRIx64, a, b);
}

/* MITRE ATT&CK enterprise tactics, as Sigma writes them in tags (attack.<tactic>). Techniques
 * (attack.t1110), groups (attack.g0016) and software (attack.s0002) are not categories. */
static const char *const tactics[] = {
    "reconnaissance",  "resource-development",
    "initial-access",  "execution",
    "persistence",     "privilege-escalation",
    "defense-evasion", "credential-access",
    "discovery",       "lateral-movement",
    "collection",      "command-and-control",
    "exfiltration",    "impact",
};

const char *kx__alert_category(const kx_alert *a, char *buf, size_t buflen)
{
    if (a->category && a->category[0])
        return a->category;
    for (size_t i = 0; i < a->ntags; i++) {
        const char *t = a->tags[i];
        if (!t || strncasecmp(t, "attack.", 7) != 0)
            continue;
        t += 7;
        size_t n = strlen(t);
        if (n == 0 || n >= buflen)
            continue;
        /* Older Sigma rules write attack.credential_access; both spell the same tactic. */
        for (size_t j = 0; j < n; j++) {
            char c = t[j];
            if (c == '_')
                c = '-';
            else if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            buf[j] = c;
        }
        buf[n] = '\0';
        for (size_t k = 0; k < KX_ARRAY_LEN(tactics); k++)
            if (!strcmp(buf, tactics[k]))
                return buf;
    }
    return "uncategorized";
}

/* A JSON string, or null for NULL. */
static int put_str(kx_buf *out, const char *s)
{
    if (!s)
        return kx_buf_puts(out, "null");
    return kx_buf_json_str(out, s, strlen(s));
}

/* `"key":` followed by a string value. */
static int put_kv(kx_buf *out, const char *key, const char *val)
{
    int rc = kx_buf_printf(out, "\"%s\":", key);
    return rc ? rc : put_str(out, val);
}

void kx__alert_group_text(kx_buf *b, json_t *group)
{
    const char *k;
    json_t *v;
    size_t i = 0;
    json_object_foreach(group, k, v)
    {
        kx_buf_printf(b, "%s%s=", i++ ? ", " : "", k);
        if (json_is_string(v)) {
            kx_buf_puts(b, json_string_value(v));
        } else {
            char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            kx_buf_puts(b, t ? t : "?");
            free(t);
        }
    }
}

bool kx__alert_json_resolved(const char *json)
{
    /* The group ends at the first `},"count":` (inside a JSON string `"` is escaped); between
     * it and status come only numbers and timestamps. */
    const char *p = strstr(json, "},\"count\":");
    p = p ? strstr(p, ",\"status\":\"") : NULL;
    return p && !strncmp(p + 11, "resolved\"", 9);
}

int kx_alert_render(const kx_alert *a, const char *team_name, kx_buf *out)
{
    char key[33], id[33], first[32], last[32], catbuf[64];
    size_t start = out->len;
    int rc = 0;

    kx_alert_dedup_key(a, key, sizeof(key));
    /* A resolve shares its firing alert's dedup_key and count; its id must differ. */
    alert_id(key, a->status && !strcmp(a->status, "resolved") ? -1 - a->count : a->count, id,
             sizeof(id));
    kx_time_format(a->first_seen_ms, first, sizeof(first));
    kx_time_format(a->last_seen_ms, last, sizeof(last));
    const char *team = team_name ? team_name : (a->team ? a->team : "default");
    const char *tenant = a->tenant ? a->tenant : "default";

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) != 0)                                                                       \
            goto fail;                                                                             \
    } while (0)
    TRY(kx_buf_printf(out, "{\"id\":\"%s\",\"dedup_key\":\"%s\",\"rule\":{", id, key));
    TRY(put_kv(out, "id", a->rule_id));
    TRY(kx_buf_putc(out, ','));
    TRY(put_kv(out, "title", a->rule_title));
    TRY(kx_buf_putc(out, ','));
    TRY(put_kv(out, "level", a->rule_level));
    TRY(kx_buf_puts(out, "},"));
    TRY(put_kv(out, "severity", kx_alert_severity(a->rule_level)));
    TRY(kx_buf_putc(out, ','));
    TRY(put_kv(out, "team", team));
    TRY(kx_buf_putc(out, ','));
    TRY(put_kv(out, "tenant", tenant));
    TRY(kx_buf_putc(out, ','));
    TRY(put_kv(out, "category", kx__alert_category(a, catbuf, sizeof(catbuf))));
    TRY(kx_buf_puts(out, ",\"group\":{"));
    for (size_t i = 0; i < a->ngroup; i++) {
        if (i)
            TRY(kx_buf_putc(out, ','));
        TRY(put_str(out, a->group[i].key ? a->group[i].key : ""));
        TRY(kx_buf_putc(out, ':'));
        TRY(put_str(out, a->group[i].value));
    }
    TRY(kx_buf_printf(out, "},\"count\":%" PRId64, a->count));
    /* %.17g round-trips; a whole number prints without a fraction, as JSON readers expect. */
    if (a->has_value)
        TRY(kx_buf_printf(out, ",\"value\":%.17g", isfinite(a->value) ? a->value : 0.0));
    TRY(kx_buf_printf(out, ",\"window\":%" PRId64 ",\"first_seen\":\"%s\",\"last_seen\":\"%s\"",
                      a->window_s, first, last));
    TRY(kx_buf_puts(out, ",\"status\":"));
    TRY(put_str(out, a->status ? a->status : "firing"));
    if (a->backfill)
        TRY(kx_buf_puts(out, ",\"backfill\":true"));
    if (a->suppressed > 0)
        TRY(kx_buf_printf(out, ",\"suppressed\":%" PRId64, a->suppressed));
    if (a->local_time && a->timezone) {
        TRY(kx_buf_puts(out, ",\"local_time\":"));
        TRY(put_str(out, a->local_time));
        TRY(kx_buf_puts(out, ",\"timezone\":"));
        TRY(put_str(out, a->timezone));
    }
    if (a->degraded) {
        TRY(kx_buf_puts(out, ",\"degraded\":"));
        TRY(put_str(out, a->degraded));
    }
    TRY(kx_buf_puts(out, ",\"tags\":["));
    for (size_t i = 0; i < a->ntags; i++) {
        if (i)
            TRY(kx_buf_putc(out, ','));
        TRY(put_str(out, a->tags[i]));
    }
    TRY(kx_buf_putc(out, ']'));
    if (a->description) {
        TRY(kx_buf_puts(out, ",\"description\":"));
        TRY(put_str(out, a->description));
    }
    if (a->runbook) {
        TRY(kx_buf_puts(out, ",\"runbook\":"));
        TRY(put_str(out, a->runbook));
    }
    if (a->author) {
        TRY(kx_buf_puts(out, ",\"author\":"));
        TRY(put_str(out, a->author));
    }
    const char *const *lists[2] = {a->references, a->falsepositives};
    size_t nlists[2] = {a->nreferences, a->nfalsepositives};
    static const char *const lnames[2] = {"references", "falsepositives"};
    for (int l = 0; l < 2; l++) {
        if (!nlists[l])
            continue;
        TRY(kx_buf_printf(out, ",\"%s\":[", lnames[l]));
        for (size_t i = 0; i < nlists[l]; i++) {
            if (i)
                TRY(kx_buf_putc(out, ','));
            TRY(put_str(out, lists[l][i]));
        }
        TRY(kx_buf_putc(out, ']'));
    }
    if (a->nfields) {
        TRY(kx_buf_puts(out, ",\"fields\":{"));
        for (size_t i = 0; i < a->nfields; i++) {
            if (i)
                TRY(kx_buf_putc(out, ','));
            TRY(put_str(out, a->fields[i].key ? a->fields[i].key : ""));
            TRY(kx_buf_putc(out, ':'));
            TRY(put_str(out, a->fields[i].value));
        }
        TRY(kx_buf_putc(out, '}'));
    }
    TRY(kx_buf_puts(out, ",\"events\":["));
    for (size_t i = 0; i < a->nevents; i++) {
        /* Evidence is already JSON (kx_evidence_render); it is copied, not re-escaped. */
        size_t n = a->events_len ? a->events_len[i] : strlen(a->events[i]);
        if (i)
            TRY(kx_buf_putc(out, ','));
        TRY(kx_buf_append(out, a->events[i], n));
    }
    TRY(kx_buf_puts(out, "]}"));
    return 0;
fail:
    out->len = start;
    if (out->data)
        out->data[start] = '\0';
    return rc;
}

/* ---- evidence ---- */

/* True when s[0..n) is a number in RFC 8259 grammar. A decoder's KX_VAL_NUM is trusted only
 * this far: anything else would make the alert invalid JSON. */
static bool json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return false;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    return i == n;
}

/* Renders one field value as its JSON type (numbers, booleans and null as written by the
 * decoder; everything else, and numbers out of common parsers' range, as a string). */
static int put_field_value(kx_buf *out, const kx_field *f)
{
    switch (f->type) {
    case KX_VAL_NUM:
        /* Out of range (an integer beyond int64, 1e400) is still a string: a strict reader
         * (jansson) would refuse the whole alert over one attacker-chosen number. */
        if (json_number(f->value, f->value_len) && kx_json_number_in_range(f->value, f->value_len))
            return kx_buf_append(out, f->value, f->value_len);
        break;
    case KX_VAL_BOOL:
        if (f->value_len == 4 && !memcmp(f->value, "true", 4))
            return kx_buf_puts(out, "true");
        if (f->value_len == 5 && !memcmp(f->value, "false", 5))
            return kx_buf_puts(out, "false");
        break;
    case KX_VAL_NULL:
        return kx_buf_puts(out, "null");
    case KX_VAL_STR:
        break;
    }
    return kx_buf_json_str(out, f->value, f->value_len);
}

static bool same_name(const kx_field *a, const kx_field *b)
{
    return a->name_len == b->name_len && !memcmp(a->name, b->name, a->name_len);
}

/* Renders the evidence object with raw cut to raw_len bytes and only the first nnames
 * distinct field names (in order of first appearance). */
static int evidence_once(const kx_event *ev, const char *degraded, size_t raw_len, size_t nnames,
                         bool truncated, kx_buf *out)
{
    char t[32];
    int rc;
    kx_time_format(ev->time_ms, t, sizeof(t));
    if ((rc = kx_buf_puts(out, "{\"time\":\"")) || (rc = kx_buf_puts(out, t)) ||
        (rc = kx_buf_puts(out, "\",\"raw\":")))
        return rc;
    if ((rc = kx_buf_json_str(out, ev->raw ? ev->raw : "", raw_len)))
        return rc;
    if ((rc = kx_buf_puts(out, ",\"fields\":{")))
        return rc;
    size_t names = 0;
    for (size_t i = 0; i < ev->nfields && names < nnames; i++) {
        const kx_field *f = &ev->fields[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = same_name(&ev->fields[j], f);
        if (seen)
            continue;
        size_t reps = 1;
        for (size_t j = i + 1; j < ev->nfields; j++)
            reps += same_name(&ev->fields[j], f);
        if (names++ && (rc = kx_buf_putc(out, ',')))
            return rc;
        if ((rc = kx_buf_json_str(out, f->name, f->name_len)) || (rc = kx_buf_putc(out, ':')))
            return rc;
        if (reps == 1) {
            if ((rc = put_field_value(out, f)))
                return rc;
            continue;
        }
        /* Repeated names (array elements, see event.h) become one JSON array, in order. */
        if ((rc = kx_buf_putc(out, '[')))
            return rc;
        for (size_t j = i, k = 0; j < ev->nfields; j++) {
            if (!same_name(&ev->fields[j], f))
                continue;
            if (k++ && (rc = kx_buf_putc(out, ',')))
                return rc;
            if ((rc = put_field_value(out, &ev->fields[j])))
                return rc;
        }
        if ((rc = kx_buf_putc(out, ']')))
            return rc;
    }
    if ((rc = kx_buf_putc(out, '}')))
        return rc;
    /* What the decoder had to cut (event.h): whoever reads the alert must know the fields
     * may not be the whole event. Only when there is something to say, so that ordinary
     * evidence keeps its bytes. */
    if (ev->limits) {
        if ((rc = kx_buf_puts(out, ",\"decode_limits\":[")))
            return rc;
        for (unsigned i = 0, k = 0; i < KX_EV_LIMIT__COUNT; i++) {
            if (!(ev->limits & (1u << i)))
                continue;
            if ((rc = kx_buf_printf(out, "%s\"%s\"", k++ ? "," : "", kx_event_limit_name(i))))
                return rc;
        }
        if ((rc = kx_buf_putc(out, ']')))
            return rc;
    }
    /* The rule matched this event without one of its regexes (a limit or the event's regex
     * budget): a correlation alert built from it says so per event. */
    if (degraded) {
        if ((rc = kx_buf_puts(out, ",\"degraded\":")) || (rc = put_str(out, degraded)))
            return rc;
    }
    if ((rc = kx_buf_puts(out, truncated ? ",\"truncated\":true}" : "}")))
        return rc;
    return 0;
}

static void buf_cut(kx_buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

/* Backs a cut at n off to the start of the UTF-8 character it would split, so truncation
 * never turns the last character into U+FFFD. Only a lead byte in the 3 bytes before n whose
 * sequence would reach past n moves the cut; invalid bytes are cut anywhere. */
static size_t utf8_floor(const char *s, size_t n, size_t len)
{
    if (n >= len || ((unsigned char)s[n] & 0xC0) != 0x80)
        return n;
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t seq = (c >= 0xC2 && c <= 0xDF)   ? 2
                     : (c >= 0xE0 && c <= 0xEF) ? 3
                     : (c >= 0xF0 && c <= 0xF4) ? 4
                                                : 1;
        return seq > k ? n - k : n;
    }
    return n;
}

int kx_evidence_render(const kx_event *ev, size_t max_bytes, kx_buf *out)
{
    return kx_evidence_render_degraded(ev, NULL, max_bytes, out);
}

int kx_evidence_render_degraded(const kx_event *ev, const char *degraded, size_t max_bytes,
                                kx_buf *out)
{
    size_t start = out->len;
    size_t raw_len = ev->raw ? ev->raw_len : 0;
    int rc = evidence_once(ev, degraded, raw_len, SIZE_MAX, false, out);
    if (rc == 0 && (max_bytes == 0 || out->len - start <= max_bytes))
        return 0;
    if (rc != 0 && rc != -E2BIG)
        goto fail;

    /* Too big: keep every field and find the longest raw prefix that fits (binary search;
     * escaping makes the rendered size of a prefix unpredictable). Only if the fields alone
     * do not fit are trailing field names dropped too. */
    size_t nnames = SIZE_MAX;
    buf_cut(out, start);
    rc = evidence_once(ev, degraded, 0, nnames, true, out);
    if (rc != 0 && rc != -E2BIG)
        goto fail;
    if (rc != 0 || out->len - start > max_bytes) {
        /* The fields alone do not fit: find the most leading names that do. A binary search
         * (fewer names never render longer) keeps a hostile event with thousands of fields
         * to a few renders instead of one per dropped name. lo always fits or is 0. */
        size_t names = 0;
        for (size_t i = 0; i < ev->nfields; i++) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                seen = same_name(&ev->fields[j], &ev->fields[i]);
            names += !seen;
        }
        size_t lo = 0, hi = names;
        while (lo < hi) {
            size_t mid = lo + (hi - lo + 1) / 2;
            buf_cut(out, start);
            rc = evidence_once(ev, degraded, 0, mid, true, out);
            if (rc != 0 && rc != -E2BIG)
                goto fail;
            if (rc == 0 && out->len - start <= max_bytes)
                lo = mid;
            else
                hi = mid - 1;
        }
        nnames = lo;
        buf_cut(out, start);
        rc = evidence_once(ev, degraded, 0, nnames, true, out);
        if (rc != 0 || out->len - start > max_bytes) {
            rc = rc ? rc : -E2BIG;
            goto fail;
        }
    }
    /* Binary search over cut points moved to character boundaries: at those the rendered
     * size grows with the cut (a split character would render as a longer U+FFFD run and
     * break that order). lo always fits. */
    const char *raw = ev->raw ? ev->raw : "";
    size_t lo = 0, hi = raw_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        buf_cut(out, start);
        rc = evidence_once(ev, degraded, utf8_floor(raw, mid, raw_len), nnames, true, out);
        if (rc == 0 && out->len - start <= max_bytes)
            lo = mid;
        else if (rc == 0 || rc == -E2BIG)
            hi = mid - 1;
        else
            goto fail;
    }
    lo = utf8_floor(raw, lo, raw_len);
    buf_cut(out, start);
    rc = evidence_once(ev, degraded, lo, nnames, true, out);
    if (rc == 0)
        return 0;
fail:
    buf_cut(out, start);
    return rc;
}
