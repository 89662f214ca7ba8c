/*
 * JSON object -> flat fields. jansson parses (it validates UTF-8 and rejects "\u0000"; such
 * input is decoded again from a sanitized copy, see sanitize()), then
 * one recursive walk emits a field per scalar: nested object keys are joined with dots
 * ("userIdentity.arn"), array elements repeat their parent's name once per element (objects
 * inside arrays flatten the same way: "resources.ARN" once per resource). Object members
 * come out in document order (jansson keeps insertion order); a duplicated key keeps its
 * last value, as jansson does without JSON_REJECT_DUPLICATES.
 *
 * Field names are built in one stack buffer, so the walk itself allocates nothing; the
 * strings are copied into the event's arena. jansson's tree is allocated in the event's arena
 * too (json_set_alloc_funcs around the parse, restored after): it is never freed piece by
 * piece, kx_event_reset drops it with everything else, so decoding allocates nothing in
 * steady state and skips jansson's teardown.
 *
 * Numbers: integers print as %lld. Reals print in the shortest of %.15g/%.16g/%.17g that
 * reads back to the same double, with ".0" added when that looks like an integer and the
 * exponent's leading zeros dropped, the way jansson itself prints them. jansson keeps no
 * source text, so "1e3" comes out as "1000.0"; integers beyond 64 bits are malformed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "decode/decode_int.h"
#include "klaxon/metrics.h"

typedef struct walk {
    kx_event *ev;
    size_t nfields;
    const char *why;
    char name[KX_DECODE_NAME_MAX];
} walk;

static void format_real(double v, char *buf, size_t n)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    char *e = strchr(buf, 'e');
    if (e) {
        /* "1.5e-07" -> "1.5e-7" */
        char *d = e + 1;
        if (*d == '-' || *d == '+')
            d++;
        char *z = d;
        while (*z == '0' && z[1] != '\0')
            z++;
        memmove(d, z, strlen(z) + 1);
    } else if (!strchr(buf, '.')) {
        size_t l = strlen(buf);
        if (l + 3 <= n)
            memcpy(buf + l, ".0", 3);
    }
}

static int emit(walk *w, size_t name_len, const char *value, size_t value_len, kx_val_type type)
{
    if (w->nfields >= KX_DECODE_MAX_FIELDS) {
        w->why = "too many fields";
        return -EINVAL;
    }
    w->nfields++;
    return kx_event_add(w->ev, w->name, name_len, value, value_len, type);
}

static int flatten(walk *w, json_t *v, size_t name_len, int depth)
{
    char num[64];
    int rc;

    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *child;
        if (depth >= KX_DECODE_MAX_DEPTH) {
            w->why = "too deep";
            return -EINVAL;
        }
        json_object_foreach(v, key, child)
        {
            size_t klen = strlen(key); /* jansson rejects NUL in keys */
            size_t sep = name_len ? 1 : 0;
            if (name_len + sep + klen >= sizeof(w->name)) {
                w->why = "field name too long";
                return -EINVAL;
            }
            if (sep)
                w->name[name_len] = '.';
            memcpy(w->name + name_len + sep, key, klen);
            rc = flatten(w, child, name_len + sep + klen, depth + 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *child;
        if (depth >= KX_DECODE_MAX_DEPTH) {
            w->why = "too deep";
            return -EINVAL;
        }
        json_array_foreach(v, i, child)
        {
            rc = flatten(w, child, name_len, depth + 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    case JSON_STRING:
        return emit(w, name_len, json_string_value(v), json_string_length(v), KX_VAL_STR);
    case JSON_INTEGER: {
        int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit(w, name_len, num, (size_t)n, KX_VAL_NUM);
    }
    case JSON_REAL:
        format_real(json_real_value(v), num, sizeof(num));
        return emit(w, name_len, num, strlen(num), KX_VAL_NUM);
    case JSON_TRUE:
        return emit(w, name_len, "true", 4, KX_VAL_BOOL);
    case JSON_FALSE:
        return emit(w, name_len, "false", 5, KX_VAL_BOOL);
    case JSON_NULL:
        return emit(w, name_len, "", 0, KX_VAL_NULL);
    }
    return 0;
}

static const char *load_error(const json_error_t *jerr)
{
    switch (json_error_code(jerr)) {
    case json_error_invalid_utf8:
        return "invalid UTF-8";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "NUL in string";
    case json_error_stack_overflow:
        return "too deep";
    case json_error_numeric_overflow:
        return "number out of range";
    default:
        return "bad JSON";
    }
}

/* The value of the 4 hex digits at p, or -1. */
static long hex4(const unsigned char *p, size_t avail)
{
    if (avail < 4)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/*
 * A copy of raw where invalid UTF-8 bytes become U+FFFD and "\u0000" and lone surrogate
 * escapes ("\ud800") become "\ufffd" (same length).
 * Dropping such an event would let whoever controls one field (a user agent, a user name)
 * hide the whole event from every rule; instead it is decoded with the damage visible.
 * Escapes are copied as pairs, so "\\u0000" (an escaped backslash) is left alone.
 */
/* jansson's allocator during one parse: the event's arena. free is a no-op (the arena is
 * reset per event). One thread, one parse at a time, so a static is enough. */
static kx_arena *g_json_arena;

static void *arena_malloc(size_t n)
{
    return kx_arena_alloc(g_json_arena, n);
}

static void arena_free(void *p)
{
    (void)p;
}

static json_t *load_in_arena(const char *raw, size_t len, kx_event *ev, json_error_t *jerr)
{
    json_malloc_t prev_malloc;
    json_free_t prev_free;
    json_get_alloc_funcs(&prev_malloc, &prev_free);
    g_json_arena = &ev->arena;
    json_set_alloc_funcs(arena_malloc, arena_free);
    json_t *root = json_loadb(raw, len, JSON_DECODE_ANY, jerr);
    json_set_alloc_funcs(prev_malloc, prev_free);
    g_json_arena = NULL;
    return root;
}

static char *sanitize(const char *raw, size_t len, kx_event *ev, size_t *out_len)
{
    char *o = kx_arena_alloc(&ev->arena, len * 3 + 1);
    if (!o)
        return NULL;
    const unsigned char *p = (const unsigned char *)raw;
    size_t i = 0, n = 0;
    while (i < len) {
        if (p[i] == '\\' && i + 1 < len) {
            long cp = p[i + 1] == 'u' ? hex4(p + i + 2, len - i - 2) : -1;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 11 < len && p[i + 6] == '\\' &&
                p[i + 7] == 'u' && hex4(p + i + 8, len - i - 8) >= 0xDC00 &&
                hex4(p + i + 8, len - i - 8) <= 0xDFFF) {
                memcpy(o + n, p + i, 12); /* a valid surrogate pair */
                n += 12;
                i += 12;
            } else if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
                /* NUL, or a lone surrogate (how Python's surrogateescape writes raw bytes) */
                memcpy(o + n, "\\ufffd", 6);
                n += 6;
                i += 6;
            } else {
                o[n++] = (char)p[i++];
                o[n++] = (char)p[i++];
            }
            continue;
        }
        size_t l = kx_utf8_seq_len(p + i, len - i);
        if (l == 0) {
            memcpy(o + n, "\xef\xbf\xbd", 3);
            n += 3;
            i++;
            continue;
        }
        memcpy(o + n, p + i, l);
        n += l;
        i += l;
    }
    o[n] = '\0';
    *out_len = n;
    return o;
}

int kx__json_decode(const char *raw, size_t len, kx_event *ev, const char **why)
{
    json_error_t jerr;
    walk w;
    int rc;

    /* No JSON_ALLOW_NUL: field values are C strings. JSON_DECODE_ANY only so that every
     * valid non-object gets the same, clear reason. */
    json_t *root = load_in_arena(raw, len, ev, &jerr);
    if (!root &&
        (json_error_code(&jerr) == json_error_invalid_utf8 ||
         json_error_code(&jerr) == json_error_null_character ||
         json_error_code(&jerr) == json_error_null_byte_in_key ||
         (json_error_code(&jerr) == json_error_invalid_syntax && strstr(jerr.text, "Unicode")))) {
        size_t clean_len;
        char *clean = sanitize(raw, len, ev, &clean_len);
        if (clean) {
            root = load_in_arena(clean, clean_len, ev, &jerr);
            if (root)
                kx_metric_inc(KX_M_EVENTS_SANITIZED);
        }
    }
    if (!root) {
        *why = load_error(&jerr);
        return -EINVAL;
    }
    /* No json_decref: the tree lives in the event's arena (see load_in_arena). */
    if (!json_is_object(root)) {
        *why = "not a JSON object";
        return -EINVAL;
    }
    w.ev = ev;
    w.nfields = 0;
    w.why = NULL;
    rc = flatten(&w, root, 0, 0);
    if (rc == -EINVAL) {
        *why = w.why;
        return rc;
    }
    if (rc) {
        *why = "out of memory";
        return rc;
    }
    return 0;
}
