/*
 * Field extractors: a PCRE2 pattern with named groups run over one field (default
 * "message"), optionally only for events of one syslog program. Each named group that took
 * part in a match becomes a field named after the group.
 *
 * Everything a match needs is made at create time: the pattern is compiled and JIT-compiled
 * once, each extractor owns one pcre2_match_data, and the group names are read out of the
 * name table once. A match context shared by the decoder caps the work per match
 * (KX_DECODE_MATCH_LIMIT, KX_DECODE_DEPTH_LIMIT) so a hostile line cannot stall the loop;
 * a match that hits a limit is skipped for that event and logged (rate-limited).
 *
 * Patterns match bytes, not UTF-8 characters (no PCRE2_UTF): log text is often not valid
 * UTF-8 (Latin-1 from old daemons, or bytes an attacker chose), and an extractor must still
 * pull src_ip out of "Failed password for invalid user \xff from 203.0.113.7". In UTF mode
 * an invalid byte would fail the match, or stop \S+ short, and so hide the line from rules.
 * The price: "." and classes see one byte of a multi-byte character. A pattern may opt in
 * with "(*UTF)"; then a line that is not valid UTF-8 is skipped by that extractor (logged).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "decode/decode_int.h"

static int group_cmp(const void *a, const void *b)
{
    uint32_t x = ((const kx__group *)a)->num, y = ((const kx__group *)b)->num;
    return x < y ? -1 : x > y;
}

static int read_groups(kx__extractor *x, const kx_yaml_node *pat, const char *file, kx_err *err)
{
    uint32_t count, entry;
    PCRE2_SPTR table;

    pcre2_pattern_info(x->code, PCRE2_INFO_NAMECOUNT, &count);
    if (count == 0)
        return kx_yaml_err(err, file, pat, "pattern has no named groups (?<name>...)");
    pcre2_pattern_info(x->code, PCRE2_INFO_NAMEENTRYSIZE, &entry);
    pcre2_pattern_info(x->code, PCRE2_INFO_NAMETABLE, &table);
    x->groups = calloc(count, sizeof(*x->groups));
    if (!x->groups)
        return -ENOMEM;
    for (uint32_t k = 0; k < count; k++) {
        PCRE2_SPTR e = table + (size_t)k * entry;
        kx__group *g = &x->groups[x->ngroups];
        /* Name table entries: 2-byte big-endian group number, then the NUL-terminated name. */
        g->num = ((uint32_t)e[0] << 8) | e[1];
        g->name_len = strlen((const char *)e + 2);
        g->name = strndup((const char *)e + 2, g->name_len);
        if (!g->name)
            return -ENOMEM;
        x->ngroups++;
    }
    /* The name table is sorted by name; fields come out in the pattern's group order. */
    qsort(x->groups, x->ngroups, sizeof(*x->groups), group_cmp);
    return 0;
}

int kx__extractor_init(kx__extractor *x, const kx_yaml_node *n, const char *file, kx_err *err)
{
    const kx_yaml_node *pat = NULL;
    const char *unused;
    int rc = 0, ecode;
    PCRE2_SIZE eoff;

    memset(x, 0, sizeof(*x));
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "extractor must be a map {program, field, pattern}");
    for (size_t k = 0; k < n->n; k++) {
        const kx_yaml_node *key = n->keys[k], *val = n->vals[k];
        if (kx_yaml_is(key, "program"))
            rc = kx__dup_nonempty(val, file, &x->program, err);
        else if (kx_yaml_is(key, "field"))
            rc = kx__dup_nonempty(val, file, &x->field, err);
        else if (kx_yaml_is(key, "pattern"))
            rc = kx_yaml_str(val, file, &unused, err) == 0 ? (pat = val, 0) : -EINVAL;
        else if (key->type == KX_YAML_SCALAR)
            rc = kx_yaml_err(err, file, key, "unknown key \"%.*s\"", (int)key->len, key->str);
        else
            rc = kx_yaml_err(err, file, key, "expected a key");
        if (rc)
            goto fail;
    }
    if (!pat) {
        rc = kx_yaml_err(err, file, n, "extractor needs a pattern");
        goto fail;
    }
    if (!x->field && !(x->field = strdup("message"))) {
        rc = -ENOMEM;
        goto fail;
    }
    x->code = pcre2_compile((PCRE2_SPTR)pat->str, pat->len, 0, &ecode, &eoff, NULL);
    if (!x->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof(msg));
        rc = kx_yaml_err(err, file, pat, "bad pattern: %s at offset %zu", (const char *)msg,
                         (size_t)eoff);
        goto fail;
    }
    /* A JIT failure (no JIT on this CPU, out of executable memory) is not fatal: the
     * interpreter gives the same results, bounded by the same limits. */
    (void)pcre2_jit_compile(x->code, PCRE2_JIT_COMPLETE);
    if ((rc = read_groups(x, pat, file, err)))
        goto fail;
    x->md = pcre2_match_data_create_from_pattern(x->code, NULL);
    if (!x->md) {
        rc = -ENOMEM;
        goto fail;
    }
    return 0;
fail:
    kx__extractor_fini(x);
    return rc;
}

void kx__extractor_fini(kx__extractor *x)
{
    for (size_t k = 0; k < x->ngroups; k++)
        free(x->groups[k].name);
    free(x->groups);
    pcre2_match_data_free(x->md);
    pcre2_code_free(x->code);
    free(x->field);
    free(x->program);
    memset(x, 0, sizeof(*x));
}

static bool field_is(const kx_field *f, const char *name, size_t len)
{
    return f->name_len == len && memcmp(f->name, name, len) == 0;
}

static int run_one(kx__extractor *x, pcre2_match_context *mctx, kx_ratelimit *rl, kx_event *ev)
{
    size_t flen = strlen(x->field);
    /* Fields added by this extractor are not its own input: stop at the count on entry.
     * Index, not pointer: adding a field may move ev->fields. */
    size_t n0 = ev->nfields;
    for (size_t k = 0; k < n0; k++) {
        if (!field_is(&ev->fields[k], x->field, flen))
            continue;
        const char *subj = ev->fields[k].value;
        size_t slen = ev->fields[k].value_len;
        int m = pcre2_match(x->code, (PCRE2_SPTR)subj, slen, 0, 0, x->md, mctx);
        if (m == PCRE2_ERROR_NOMATCH)
            continue;
        if (m < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(m, msg, sizeof(msg));
            kx_log_limited(rl, KX_LOG_WARN, "decode", "extractor on \"%s\" skipped: %s", x->field,
                           (const char *)msg);
            continue;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->md);
        uint32_t npairs = pcre2_get_ovector_count(x->md);
        for (size_t g = 0; g < x->ngroups; g++) {
            uint32_t num = x->groups[g].num;
            if (num >= npairs || ov[2 * num] == PCRE2_UNSET)
                continue;
            int rc = kx_event_add(ev, x->groups[g].name, x->groups[g].name_len, subj + ov[2 * num],
                                  ov[2 * num + 1] - ov[2 * num], KX_VAL_STR);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int kx__extract_run(kx__extractor *xs, size_t n, pcre2_match_context *mctx, kx_ratelimit *rl,
                    kx_event *ev)
{
    /* The value, not the kx_field: fields may move as extractors add more. */
    const char *prog = NULL;
    bool prog_done = false;

    for (size_t k = 0; k < n; k++) {
        kx__extractor *x = &xs[k];
        if (x->program) {
            if (!prog_done) {
                const kx_field *f = kx_event_get(ev, "program");
                prog = f ? f->value : NULL;
                prog_done = true;
            }
            if (!prog || strcmp(prog, x->program) != 0)
                continue;
        }
        int rc = run_one(x, mctx, rl, ev);
        if (rc)
            return rc;
    }
    return 0;
}
