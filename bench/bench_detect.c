/*
 * bench-detect: the in-memory rows of `make bench` (no Kafka, no sockets).
 *
 *   bench-detect -c CONFIG -e EVENTS_TSV [-r RUNS] [-m MODE[,MODE...]] [-n NAIVE_EVENTS]
 *
 * EVENTS_TSV holds "TOPIC<TAB>LINE" per event (bench/gen_events.py); the whole file is read
 * into memory first. Each event is decoded with the decoder `klaxon run` would use for its
 * topic (the config's inputs and decode section). Modes, each timed RUNS times over all events
 * (the median rate is reported with min and max, and the median CPU time per event):
 *
 *   decode      kx_decode only (decode-topics: each input alone, rows decode-TOPIC)
 *   detect      kx_decode + kx_ruleset_match: klaxon's detect path
 *   naive       the "one regex after another" baseline: every shipped rule's values turned
 *               into PCRE2 regexes (a literal -> escaped, case-insensitive; Sigma wildcards
 *               -> .* and .; |re taken as is), tried on each raw line in turn; a rule
 *               matches when all its regexes do (stops at the first miss). JIT-compiled.
 *   naive-nojit the same without the JIT (PCRE2_NO_JIT at match time)
 *               (-n N: the naive rows run over the first N events only, for rule sets whose
 *               naive loop would take minutes over the whole stream; per-event figures.)
 *   pipeline    kx_pipeline_process in batches of the config's kafka.batch, with a memory
 *               store and the config's alerting (the bench uses a file sink): decode, detect,
 *               state, alert exactly as `klaxon run` minus the Kafka source. A fresh
 *               pipeline, store and router per run, so every run sees the same windows.
 *
 * Allocations: this program interposes malloc/calloc/realloc (defined here, forwarding to
 * glibc's __libc_* functions), so every allocation in the process is counted, including
 * those made inside jansson and PCRE2 (shared libraries); jansson's own are also counted
 * apart through json_set_alloc_funcs. After the timed runs (steady state: every buffer has
 * grown to its working size) one more decode+match pass and one more pipeline run are
 * counted, per event and split by input format.
 *
 * Rule-set load: the "info" line gives the time kx_ruleset_load took (wall and CPU) and the
 * process' resident set before and after it (/proc/self/statm), i.e. the memory the loaded
 * rules hold, PCRE2 JIT code included; and, for the detect row, how many events matched at
 * least one rule. The "warmup" line times one untimed-for-the-rows detect pass made before
 * the timed runs (an engine that compiles parts of its rule set on first use pays it there).
 *
 * Output: lines of "key=value" pairs, one per measurement, for bench/run.sh.
 */
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "klaxon/alert.h"
#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "klaxon/pipeline.h"
#include "klaxon/store.h"
#include "klaxon/tz.h"
#include "klaxon/yaml.h"

/* ---- allocation counting (interposition) ---- */

static unsigned long long g_allocs;  /* malloc + calloc + realloc, whole process */
static unsigned long long g_jansson; /* of which through jansson */

/* Under ASan the sanitizer owns malloc: interposing it would hand ASan's free pointers it
 * never allocated. The sanitizer build only compiles this program; counts are from Release. */
#if defined(__SANITIZE_ADDRESS__)
#define KX_BENCH_COUNT_ALLOCS 0
#else
#define KX_BENCH_COUNT_ALLOCS 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t sz);
extern void *__libc_realloc(void *p, size_t n);

void *malloc(size_t n)
{
    __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t sz)
{
    __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, sz);
}

void *realloc(void *p, size_t n)
{
    __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
#endif

static void *jansson_malloc(size_t n)
{
    g_jansson++;
    return malloc(n);
}

static void jansson_free(void *p)
{
    free(p);
}

/* ---- events in memory ---- */

#define MAX_TOPICS 16

typedef struct bev {
    const char *line;
    size_t len;
    int topic; /* index into the config's inputs */
} bev;

typedef struct bench {
    kx_config *cfg;
    kx_ruleset *rules;
    kx_decoder *decs[MAX_TOPICS];
    size_t ninputs;
    char *data;
    bev *evs;
    size_t nevs;
    size_t per_topic[MAX_TOPICS];
    size_t batch;
    int runs;
    int64_t arrival_ms; /* the Kafka timestamp stand-in: now, after every event time */
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int load_events(bench *b, const char *path)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        fprintf(stderr, "bench-detect: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    b->data = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (b->data && got < (size_t)st.st_size) {
        ssize_t n = read(fd, b->data + got, (size_t)st.st_size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!b->data || got != (size_t)st.st_size)
        return -EIO;
    b->data[got] = '\0';
    size_t lines = 0;
    for (size_t i = 0; i < got; i++)
        lines += b->data[i] == '\n';
    b->evs = calloc(lines + 1, sizeof(*b->evs));
    if (!b->evs)
        return -ENOMEM;
    char *p = b->data, *end = b->data + got;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        *nl = '\0';
        char *tab = strchr(p, '\t');
        if (tab) {
            *tab = '\0';
            int t = -1;
            for (size_t i = 0; i < b->ninputs && t < 0; i++)
                if (b->cfg->input_topics[i] && !strcmp(b->cfg->input_topics[i], p))
                    t = (int)i;
            if (t < 0) {
                fprintf(stderr, "bench-detect: no input for topic \"%s\"\n", p);
                return -EINVAL;
            }
            b->evs[b->nevs++] = (bev){tab + 1, (size_t)(nl - tab - 1), t};
            b->per_topic[t]++;
        }
        p = nl + 1;
    }
    return 0;
}

/* ---- naive baseline: the rules' values as regexes over the raw line ---- */

typedef struct naive_rule {
    const char *title;
    pcre2_code **re;
    bool *or_prev; /* re[j] is OR-ed with re[j - 1] (one value list split in chunks) */
    size_t nre;
    kx_buf desc; /* the regexes, for the report */
} naive_rule;

typedef struct naive {
    naive_rule *rules;
    size_t nrules;
    size_t npatterns;
    pcre2_match_data *md;
} naive;

/* Sigma value -> regex source: literal escaped, * and ? wildcards (\ escapes them). */
static void value_to_regex(const char *v, bool is_re, kx_buf *out)
{
    if (is_re) {
        kx_buf_puts(out, v);
        return;
    }
    for (const char *p = v; *p; p++) {
        if (*p == '\\' && (p[1] == '*' || p[1] == '?' || p[1] == '\\')) {
            kx_buf_putc(out, '\\');
            kx_buf_putc(out, *++p);
        } else if (*p == '*') {
            kx_buf_puts(out, ".*");
        } else if (*p == '?') {
            kx_buf_putc(out, '.');
        } else {
            if (strchr("\\^$.|?*+()[]{}", *p))
                kx_buf_putc(out, '\\');
            kx_buf_putc(out, *p);
        }
    }
}

/* Values per alternation: a list of a thousand values in one regex exceeds PCRE2's compiled
 * size limit (64 KiB with the default link size), so long lists become several regexes of
 * this many values, OR-ed. */
#define NAIVE_CHUNK 100

static int naive_add(naive_rule *r, const char *src, bool cased, bool or_prev)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                                   cased ? 0 : PCRE2_CASELESS, &errcode, &erroff, NULL);
    if (!re) {
        fprintf(stderr, "bench-detect: naive regex \"%s\" does not compile\n", src);
        return -EINVAL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    kx_buf_printf(&r->desc, "%s/%s/%s", r->nre ? (or_prev ? " || " : " && ") : "", src,
                  cased ? "" : "i");
    pcre2_code **nr = realloc(r->re, (r->nre + 1) * sizeof(*nr));
    if (nr)
        r->re = nr;
    bool *no = nr ? realloc(r->or_prev, (r->nre + 1) * sizeof(*no)) : NULL;
    if (!no) {
        pcre2_code_free(re);
        return -ENOMEM;
    }
    r->or_prev = no;
    r->or_prev[r->nre] = or_prev && r->nre > 0;
    r->re[r->nre++] = re;
    return 0;
}

/* One "field|mods: value(s)" entry -> one regex (a list becomes an alternation, split in
 * chunks of NAIVE_CHUNK values, or one regex per value with |all). |exists has no value to
 * look for and is skipped, and so are null values (absent fields). */
static int naive_entry(naive_rule *r, const char *key, const kx_yaml_node *val)
{
    const char *mods = strchr(key, '|');
    bool is_re = mods && strstr(mods, "|re");
    bool cased = mods && strstr(mods, "|cased");
    bool all = mods && strstr(mods, "|all");
    if (mods && strstr(mods, "|exists"))
        return 0;
    kx_buf src;
    kx_buf_init(&src, 0);
    int rc = 0;
    if (val->type == KX_YAML_SCALAR) {
        if (!val->str || kx_yaml_is_null(val))
            goto done;
        value_to_regex(val->str, is_re, &src);
        rc = naive_add(r, src.data, cased, false);
    } else if (val->type == KX_YAML_SEQ && all) {
        for (size_t i = 0; i < val->n && !rc; i++) {
            if (!val->vals[i]->str)
                continue;
            kx_buf_reset(&src);
            value_to_regex(val->vals[i]->str, is_re, &src);
            rc = naive_add(r, src.data, cased, false);
        }
    } else if (val->type == KX_YAML_SEQ) {
        size_t in_chunk = 0, chunks = 0;
        for (size_t i = 0; i < val->n && !rc; i++) {
            if (!val->vals[i]->str || kx_yaml_is_null(val->vals[i]))
                continue;
            kx_buf_puts(&src, in_chunk ? "|" : "(?:");
            value_to_regex(val->vals[i]->str, is_re, &src);
            if (++in_chunk == NAIVE_CHUNK) {
                kx_buf_putc(&src, ')');
                rc = naive_add(r, src.data, cased, chunks++ > 0);
                kx_buf_reset(&src);
                in_chunk = 0;
            }
        }
        if (in_chunk && !rc) {
            kx_buf_putc(&src, ')');
            rc = naive_add(r, src.data, cased, chunks > 0);
        }
    }
done:
    kx_buf_fini(&src);
    return rc;
}

static int naive_rule_from(naive *nv, const kx_yaml_node *root)
{
    const kx_yaml_node *det = kx_yaml_get(root, "detection");
    if (!det || det->type != KX_YAML_MAP)
        return 0; /* correlation: nothing to match on a line */
    naive_rule r = {0};
    kx_buf_init(&r.desc, 0);
    const kx_yaml_node *title = kx_yaml_get(root, "title");
    r.title = title && title->str ? strdup(title->str) : strdup("?");
    int rc = 0;
    for (size_t i = 0; i < det->n && !rc; i++) {
        const kx_yaml_node *sel = det->vals[i];
        if (kx_yaml_is(det->keys[i], "condition") || kx_yaml_is(det->keys[i], "timeframe"))
            continue;
        if (sel->type == KX_YAML_MAP) {
            for (size_t j = 0; j < sel->n && !rc; j++) {
                if (kx_yaml_is(sel->keys[j], "timeofday"))
                    continue; /* klaxon extension on event time: not in the text */
                rc = naive_entry(&r, sel->keys[j]->str, sel->vals[j]);
            }
        } else if (sel->type == KX_YAML_SEQ && sel->n && sel->vals[0]->type == KX_YAML_MAP) {
            /* A list of maps (OR of ANDs): the naive loop still runs every entry's regex. */
            for (size_t k = 0; k < sel->n && !rc; k++) {
                const kx_yaml_node *m = sel->vals[k];
                for (size_t j = 0; m->type == KX_YAML_MAP && j < m->n && !rc; j++)
                    rc = naive_entry(&r, m->keys[j]->str, m->vals[j]);
            }
        } else if (sel->type == KX_YAML_SEQ) {
            rc = naive_entry(&r, "keywords", sel); /* keywords: any of them */
        }
    }
    if (rc || !r.nre) {
        for (size_t i = 0; i < r.nre; i++)
            pcre2_code_free(r.re[i]);
        free(r.re);
        free(r.or_prev);
        free((char *)r.title);
        kx_buf_fini(&r.desc);
        return rc;
    }
    naive_rule *nr = realloc(nv->rules, (nv->nrules + 1) * sizeof(*nr));
    if (!nr)
        return -ENOMEM;
    nv->rules = nr;
    nv->rules[nv->nrules++] = r;
    nv->npatterns += r.nre;
    return 0;
}

static int naive_load_path(naive *nv, const char *path)
{
    struct stat st;
    if (stat(path, &st))
        return -errno;
    if (S_ISDIR(st.st_mode)) {
        struct dirent **names;
        int n = scandir(path, &names, NULL, alphasort);
        if (n < 0)
            return -errno;
        int rc = 0;
        for (int i = 0; i < n; i++) {
            char sub[4096];
            if (!rc && names[i]->d_name[0] != '.' &&
                snprintf(sub, sizeof(sub), "%s/%s", path, names[i]->d_name) < (int)sizeof(sub))
                rc = naive_load_path(nv, sub);
            free(names[i]);
        }
        free(names);
        return rc;
    }
    size_t l = strlen(path);
    if (!(l > 4 && !strcmp(path + l - 4, ".yml")) && !(l > 5 && !strcmp(path + l - 5, ".yaml")))
        return 0;
    kx_yaml_doc *doc;
    kx_err err = {0};
    if (kx_yaml_load_file(path, &doc, &err))
        return -EINVAL;
    int rc = 0;
    for (kx_yaml_doc *d = doc; d && !rc; d = d->next)
        if (d->root)
            rc = naive_rule_from(nv, d->root);
    kx_yaml_free(doc);
    return rc;
}

static void naive_fini(naive *nv)
{
    for (size_t i = 0; i < nv->nrules; i++) {
        for (size_t j = 0; j < nv->rules[i].nre; j++)
            pcre2_code_free(nv->rules[i].re[j]);
        free(nv->rules[i].re);
        free(nv->rules[i].or_prev);
        free((char *)nv->rules[i].title);
        kx_buf_fini(&nv->rules[i].desc);
    }
    free(nv->rules);
    if (nv->md)
        pcre2_match_data_free(nv->md);
}

/* Returns the number of (event, rule) matches over the first nevs events. */
static size_t naive_pass(bench *b, naive *nv, size_t nevs, uint32_t opts)
{
    size_t matches = 0;
    for (size_t i = 0; i < nevs && i < b->nevs; i++) {
        const bev *e = &b->evs[i];
        for (size_t r = 0; r < nv->nrules; r++) {
            const naive_rule *nr = &nv->rules[r];
            /* AND of terms, a term being one regex or a run of OR-ed chunks; stops at the
             * first term that misses. */
            bool ok = true;
            for (size_t j = 0; j < nr->nre && ok;) {
                bool hit = false;
                do {
                    hit = hit || pcre2_match(nr->re[j], (PCRE2_SPTR)e->line, e->len, 0, opts,
                                             nv->md, NULL) >= 0;
                    j++;
                } while (j < nr->nre && nr->or_prev[j]);
                ok = hit;
            }
            matches += ok;
        }
    }
    return matches;
}

/* ---- klaxon decode / detect ---- */

static void count_match(kx_rule *r, void *ud)
{
    (void)r;
    (*(size_t *)ud)++;
}

typedef struct pass_stats {
    size_t matches;
    size_t matched_events; /* events that matched at least one rule */
    size_t malformed;
    unsigned long long allocs[MAX_TOPICS];  /* per input */
    unsigned long long jansson[MAX_TOPICS]; /* per input */
} pass_stats;

/* only: an input index to decode only that input's events, or -1 for all. */
static void detect_pass(bench *b, kx_event *ev, bool match, bool count, int only, pass_stats *ps)
{
    for (size_t i = 0; i < b->nevs; i++) {
        const bev *e = &b->evs[i];
        if (only >= 0 && e->topic != only)
            continue;
        unsigned long long a0 = count ? g_allocs : 0, j0 = count ? g_jansson : 0;
        const char *why;
        kx_event_reset(ev);
        ev->topic = b->cfg->input_topics[e->topic];
        ev->partition = 0;
        ev->offset = (int64_t)i;
        if (kx_decode(b->decs[e->topic], e->line, e->len, b->arrival_ms, ev, &why)) {
            ps->malformed++;
        } else if (match) {
            ps->matched_events += kx_ruleset_match(b->rules, ev, count_match, &ps->matches) > 0;
        }
        if (count) {
            ps->allocs[e->topic] += g_allocs - a0;
            ps->jansson[e->topic] += g_jansson - j0;
        }
    }
}

/* ---- the pipeline without Kafka ---- */

typedef struct pipe_run {
    struct ev_loop *loop;
    kx_store *store;
    kx_router *router;
    kx_pipeline *pipe;
    kx_msg *msgs;
    bool done;
    bool drained;
} pipe_run;

static void pipe_done(void *ud)
{
    ((pipe_run *)ud)->done = true;
}

static void pipe_drained(void *ud)
{
    ((pipe_run *)ud)->drained = true;
}

static int pipe_setup(bench *b, pipe_run *pr)
{
    kx_err err = {0};
    memset(pr, 0, sizeof(*pr));
    pr->loop = ev_loop_new(EVFLAG_AUTO);
    if (kx_store_memory_create(pr->loop, b->cfg->state_max_keys, &pr->store) ||
        kx_router_create(pr->loop, b->cfg->alerting, b->cfg->file, NULL, &pr->router, &err))
        return -EINVAL;
    kx_pipeline_opts opts = {.max_event_bytes = b->cfg->max_event_bytes,
                             .evidence_bytes = b->cfg->evidence_bytes,
                             .lateness_ms = b->cfg->lateness_ms};
    if (kx_pipeline_create(pr->loop, b->rules, pr->store, pr->router, &opts, &pr->pipe))
        return -ENOMEM;
    for (size_t i = 0; i < b->ninputs; i++) {
        kx_decoder *d;
        if (kx_decoder_create(b->cfg->inputs[i], b->cfg->decode, -1, b->cfg->file, &d, &err) ||
            kx_pipeline_add_decoder(pr->pipe, b->cfg->input_topics[i], d))
            return -EINVAL;
    }
    pr->msgs = calloc(b->batch, sizeof(*pr->msgs));
    return pr->msgs ? 0 : -ENOMEM;
}

static void pipe_run_all(bench *b, pipe_run *pr)
{
    for (size_t i = 0; i < b->nevs;) {
        size_t n = 0;
        for (; n < b->batch && i < b->nevs; n++, i++) {
            const bev *e = &b->evs[i];
            pr->msgs[n] = (kx_msg){.payload = e->line,
                                   .len = e->len,
                                   .topic = b->cfg->input_topics[e->topic],
                                   .partition = 0,
                                   .offset = (int64_t)i,
                                   .timestamp_ms = b->arrival_ms};
        }
        pr->done = false;
        if (kx_pipeline_process(pr->pipe, pr->msgs, n, pipe_done, pr))
            abort(); /* only one batch is ever out: a refusal is a bench bug */
        while (!pr->done)
            ev_run(pr->loop, EVRUN_ONCE);
    }
    kx_router_drain(pr->router, pipe_drained, pr);
    while (!pr->drained)
        ev_run(pr->loop, EVRUN_ONCE);
}

static void pipe_teardown(pipe_run *pr)
{
    /* Router and store first: their cancelled callbacks land in the pipeline. */
    if (pr->router)
        kx_router_destroy(pr->router);
    if (pr->store)
        kx_store_destroy(pr->store);
    if (pr->pipe)
        kx_pipeline_destroy(pr->pipe);
    if (pr->loop)
        ev_loop_destroy(pr->loop);
    free(pr->msgs);
}

/* ---- reporting ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *row, size_t nevs, const double *secs, const double *cpu, int runs,
                   const char *extra)
{
    double rates[64], cpus[64];
    for (int i = 0; i < runs; i++) {
        rates[i] = (double)nevs / secs[i];
        cpus[i] = cpu[i] * 1e6 / (double)nevs;
    }
    qsort(rates, (size_t)runs, sizeof(double), cmp_double);
    qsort(cpus, (size_t)runs, sizeof(double), cmp_double);
    printf("row=%s runs=%d events=%zu median=%.0f min=%.0f max=%.0f us_per_event=%.3f "
           "cpu_us_per_event=%.3f%s%s\n",
           row, runs, nevs, rates[runs / 2], rates[0], rates[runs - 1], 1e6 / rates[runs / 2],
           cpus[runs / 2], extra ? " " : "", extra ? extra : "");
    fflush(stdout);
}

/* mode: NULL (every row) or a comma-separated list of row names. */
static bool want(const char *mode, const char *m)
{
    if (!mode)
        return true;
    size_t l = strlen(m);
    for (const char *p = mode; (p = strstr(p, m)); p += l)
        if ((p == mode || p[-1] == ',') && (p[l] == ',' || p[l] == '\0'))
            return true;
    return false;
}

/* Resident set size of this process in KiB (0 if /proc is not there). */
static long rss_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL, *events_path = NULL, *mode = NULL;
    bench b = {.runs = 5, .arrival_ms = kx_now_ms()};
    size_t naive_events = SIZE_MAX;
    int opt;
    while ((opt = getopt(argc, argv, "c:e:r:m:n:")) != -1) {
        switch (opt) {
        case 'c':
            cfg_path = optarg;
            break;
        case 'e':
            events_path = optarg;
            break;
        case 'r':
            b.runs = atoi(optarg);
            break;
        case 'm':
            mode = optarg;
            break;
        case 'n':
            naive_events = (size_t)strtoull(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: bench-detect -c CONFIG -e EVENTS_TSV [-r RUNS] [-m MODE]\n");
            return 2;
        }
    }
    if (!cfg_path || !events_path || b.runs < 1 || b.runs > 64) {
        fprintf(stderr, "usage: bench-detect -c CONFIG -e EVENTS_TSV [-r RUNS] [-m MODE]\n");
        return 2;
    }
    json_set_alloc_funcs(jansson_malloc, jansson_free);
    kx_log_set_level(KX_LOG_WARN);
    kx_err err = {0};
    int code = 1;
    naive nv = {0};
    double load_s = 0, load_cpu_s = 0;
    long rss0 = 0, rss1 = 0;
    int rc = kx_config_load(cfg_path, &b.cfg, &err);
    if (!rc) {
        rss0 = rss_kib();
        load_s = now_s();
        load_cpu_s = cpu_s();
        rc = kx_ruleset_load((const char *const *)b.cfg->rule_paths, b.cfg->nrule_paths, &b.rules,
                             &err);
    }
    if (rc) {
        char buf[1024];
        kx_err_format(&err, buf, sizeof(buf));
        fprintf(stderr, "bench-detect: %s\n", buf);
        goto out;
    }
    load_s = now_s() - load_s;
    load_cpu_s = cpu_s() - load_cpu_s;
    rss1 = rss_kib();
    b.batch = 500;
    long long v;
    const kx_yaml_node *nb = kx_yaml_get(b.cfg->kafka, "batch");
    if (nb && kx_yaml_int(nb, b.cfg->file, 1, 100000, &v, &err) == 0)
        b.batch = (size_t)v;
    b.ninputs = b.cfg->ninputs < MAX_TOPICS ? b.cfg->ninputs : MAX_TOPICS;
    for (size_t i = 0; i < b.ninputs; i++) {
        if (kx_decoder_create(b.cfg->inputs[i], b.cfg->decode, -1, b.cfg->file, &b.decs[i], &err)) {
            char buf[1024];
            kx_err_format(&err, buf, sizeof(buf));
            fprintf(stderr, "bench-detect: %s\n", buf);
            goto out;
        }
    }
    if (load_events(&b, events_path))
        goto out;
    for (size_t i = 0; i < b.cfg->nrule_paths && (want(mode, "naive") || want(mode, "naive-nojit"));
         i++)
        if (naive_load_path(&nv, b.cfg->rule_paths[i])) {
            fprintf(stderr, "bench-detect: cannot build the naive regexes\n");
            goto out;
        }
    nv.md = pcre2_match_data_create(8, NULL);
    printf("info events=%zu", b.nevs);
    for (size_t i = 0; i < b.ninputs; i++)
        printf(" %s=%zu", b.cfg->input_topics[i], b.per_topic[i]);
    if (naive_events > b.nevs)
        naive_events = b.nevs;
    printf(" rules=%zu naive_rules=%zu naive_regexes=%zu naive_events=%zu load_ms=%.1f "
           "load_cpu_ms=%.1f rss_before_kib=%ld rss_after_kib=%ld rules_rss_kib=%ld\n",
           kx_ruleset_size(b.rules), nv.nrules, nv.npatterns, naive_events, load_s * 1e3,
           load_cpu_s * 1e3, rss0, rss1, rss1 - rss0);
    /* The regexes are listed for small rule sets only (the shipped rules: a handful). */
    for (size_t i = 0; i < nv.nrules && nv.nrules <= 20; i++)
        printf("naive-rule \"%s\": %s\n", nv.rules[i].title, nv.rules[i].desc.data);

    kx_event ev;
    kx_event_init(&ev);
    /* Rows, timed round-robin (run 1 of every row, then run 2, ...) so that a slow spell of
     * the machine hits every row alike instead of all the runs of one. */
    enum { R_DECODE, R_DETECT, R_NAIVE, R_NAIVE_NOJIT, R_PIPELINE, R_TOPIC0 };
    static const char *const names[] = {"decode", "detect", "naive", "naive-nojit", "pipeline"};
    size_t nrows = R_TOPIC0 + b.ninputs;
    static double secs[R_TOPIC0 + MAX_TOPICS][64], cpu[R_TOPIC0 + MAX_TOPICS][64];
    size_t row_events[R_TOPIC0 + MAX_TOPICS];
    bool on[R_TOPIC0 + MAX_TOPICS];
    for (size_t k = 0; k < nrows; k++) {
        row_events[k] = k < R_TOPIC0 ? b.nevs : b.per_topic[k - R_TOPIC0];
        if (k == R_NAIVE || k == R_NAIVE_NOJIT)
            row_events[k] = naive_events;
        on[k] = want(mode, k < R_TOPIC0 ? names[k] : "decode-topics");
    }
    pass_stats ps, ps_decode = {0}, ps_detect = {0};
    /* An engine may finish building its rule set on first use (per-route databases compiled
     * when a logsource is first seen): one untimed detect pass first, timed on its own, so
     * that cost shows apart from both the load and the steady-state rows. */
    if (on[R_DETECT]) {
        memset(&ps, 0, sizeof(ps));
        double t0 = now_s(), c0 = cpu_s();
        detect_pass(&b, &ev, true, false, -1, &ps);
        printf("warmup first_detect_pass_ms=%.1f first_detect_pass_cpu_ms=%.1f "
               "rules_rss_after_first_pass_kib=%ld\n",
               (now_s() - t0) * 1e3, (cpu_s() - c0) * 1e3, rss_kib() - rss0);
    }
    size_t naive_matches = 0;
    unsigned long long raised = 0;
    for (int r = 0; r < b.runs; r++) {
        for (size_t k = 0; k < nrows; k++) {
            if (!on[k])
                continue;
            pipe_run pr;
            if (k == R_PIPELINE && pipe_setup(&b, &pr)) {
                fprintf(stderr, "bench-detect: pipeline setup failed\n");
                pipe_teardown(&pr);
                goto out_ev;
            }
            unsigned long long raised0 = kx_metric_get(KX_M_ALERTS_RAISED);
            memset(&ps, 0, sizeof(ps));
            double t0 = now_s(), c0 = cpu_s();
            switch (k) {
            case R_DECODE:
                detect_pass(&b, &ev, false, false, -1, &ps_decode);
                break;
            case R_DETECT:
                memset(&ps_detect, 0, sizeof(ps_detect));
                detect_pass(&b, &ev, true, false, -1, &ps_detect);
                break;
            case R_NAIVE:
            case R_NAIVE_NOJIT:
                naive_matches = naive_pass(&b, &nv, naive_events, k == R_NAIVE ? 0 : PCRE2_NO_JIT);
                break;
            case R_PIPELINE:
                pipe_run_all(&b, &pr);
                break;
            default:
                detect_pass(&b, &ev, false, false, (int)(k - R_TOPIC0), &ps);
                break;
            }
            secs[k][r] = now_s() - t0;
            cpu[k][r] = cpu_s() - c0;
            if (k == R_PIPELINE) {
                raised = kx_metric_get(KX_M_ALERTS_RAISED) - raised0;
                pipe_teardown(&pr);
            }
        }
    }
    if (on[R_DETECT]) {
        /* What the compiled set did, over the warm-up and every run: where the time goes. */
        kx_ruleset_stats st;
        kx_ruleset_stats_get(b.rules, &st);
        double ne = st.events ? (double)st.events : 1.0;
        printf("detect_stats atoms=%u always=%u routes=%u applicable_per_event=%.1f "
               "evaluated_per_event=%.2f memo_hits_per_event=%.2f memos_off=%llu\n",
               st.atoms, st.always, st.routes, (double)st.applicable / ne,
               (double)st.evaluated / ne, (double)st.memo_hits / ne,
               (unsigned long long)st.memos_off);
    }
    char extra[512];
    for (size_t k = 0; k < nrows; k++) {
        if (!on[k])
            continue;
        char row[128];
        extra[0] = '\0';
        if (k < R_TOPIC0)
            snprintf(row, sizeof(row), "%s", names[k]);
        else
            snprintf(row, sizeof(row), "decode-%s", b.cfg->input_topics[k - R_TOPIC0]);
        if (k == R_DECODE)
            snprintf(extra, sizeof(extra), "malformed=%zu", ps_decode.malformed);
        else if (k == R_DETECT)
            snprintf(extra, sizeof(extra), "matches=%zu matched_events=%zu malformed=%zu",
                     ps_detect.matches, ps_detect.matched_events, ps_detect.malformed);
        else if (k == R_NAIVE || k == R_NAIVE_NOJIT)
            snprintf(extra, sizeof(extra), "matches=%zu", naive_matches);
        else if (k == R_PIPELINE)
            snprintf(extra, sizeof(extra), "alerts=%llu", raised);
        report(row, row_events[k], secs[k], cpu[k], b.runs, extra[0] ? extra : NULL);
    }

    /* Allocations, in steady state: every buffer has its working size by now. */
    if (!KX_BENCH_COUNT_ALLOCS)
        printf("allocs not counted: sanitizer build\n");
    if (KX_BENCH_COUNT_ALLOCS && on[R_DETECT]) {
        memset(&ps, 0, sizeof(ps));
        detect_pass(&b, &ev, true, true, -1, &ps);
        printf("allocs path=detect");
        unsigned long long tot = 0;
        for (size_t i = 0; i < b.ninputs; i++) {
            printf(" %s_per_event=%.3f %s_jansson_per_event=%.3f", b.cfg->input_topics[i],
                   b.per_topic[i] ? (double)ps.allocs[i] / (double)b.per_topic[i] : 0.0,
                   b.cfg->input_topics[i],
                   b.per_topic[i] ? (double)ps.jansson[i] / (double)b.per_topic[i] : 0.0);
            tot += ps.allocs[i];
        }
        printf(" all_per_event=%.3f\n", (double)tot / (double)b.nevs);
    }
    if (KX_BENCH_COUNT_ALLOCS && on[R_PIPELINE]) {
        /* A fresh pipeline (as each timed run): its op free list and buffers grow during the
         * first batches, so this is an upper bound on the steady state. */
        pipe_run pr;
        if (pipe_setup(&b, &pr)) {
            pipe_teardown(&pr);
            goto out_ev;
        }
        unsigned long long a0 = g_allocs, j0 = g_jansson;
        unsigned long long raised0 = kx_metric_get(KX_M_ALERTS_RAISED);
        pipe_run_all(&b, &pr);
        a0 = g_allocs - a0;
        j0 = g_jansson - j0;
        raised = kx_metric_get(KX_M_ALERTS_RAISED) - raised0;
        pipe_teardown(&pr);
        printf("allocs path=pipeline all_per_event=%.3f jansson_per_event=%.3f "
               "other_per_event=%.4f total=%llu alerts=%llu\n",
               (double)a0 / (double)b.nevs, (double)j0 / (double)b.nevs,
               (double)(a0 - j0) / (double)b.nevs, a0, raised);
    }
    code = 0;
out_ev:
    kx_event_fini(&ev);
out:
    naive_fini(&nv);
    for (size_t i = 0; i < b.ninputs; i++)
        if (b.decs[i])
            kx_decoder_destroy(b.decs[i]);
    if (b.rules)
        kx_ruleset_destroy(b.rules);
    kx_config_destroy(b.cfg);
    kx_tz_cache_clear();
    free(b.evs);
    free(b.data);
    return code;
}
