/*
 * bench-regex: CPU cost of one `re` value against one command line, per engine.
 *
 *   bench-regex [-t SECONDS_PER_ROW]
 *
 * For a few SigmaHQ-style patterns and 1-2 KB Windows command lines (one that matches, one
 * that does not), times each engine by repeating the same match for about SECONDS_PER_ROW
 * (default 0.3) of CPU time (CLOCK_PROCESS_CPUTIME_ID) and prints the answer and the CPU
 * microseconds per match:
 *
 *   pcre2-old   PCRE2 JIT as klaxon ran it before Hyperscan: match limit 100,000, the default
 *               32 KiB JIT stack. "gave up" is the issue-7 miss.
 *   pcre2-jit   PCRE2 JIT without limits (a 8 MiB JIT stack): what PCRE2 costs when it is
 *               allowed to answer.
 *   hyperscan   Hyperscan alone (kx__regex_exec), subject already known valid UTF-8.
 *   klaxon      kx__regex_match: UTF-8 check + Hyperscan, or PCRE2 under limits and budget
 *               for the patterns Hyperscan refuses.
 *
 * Then the worst case the event budget allows: one event whose values all make a
 * PCRE2-only pattern backtrack to its limit, until the budget is spent (budget_event_ms).
 *
 * Output: one line per pattern, line and engine, "key=value" pairs.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "detect/detect_int.h"
#include "klaxon/log.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct pattern {
    const char *name;
    const char *re;
    uint32_t flags;
} pattern;

static const pattern patterns[] = {
    /* SigmaHQ proc_creation_win_..._file_and_directory_discovery (issue 7) */
    {"long-cmdline", "(.){200,}", 0},
    /* encoded PowerShell command, as several SigmaHQ rules write it */
    {"ps-encoded", "\\s-e(nc(odedcommand)?)?\\s+[A-Za-z0-9+/=]{40,}", PCRE2_CASELESS},
    /* an executable run from a temp folder */
    {"temp-exe", "\\\\AppData\\\\Local\\\\Temp\\\\[^\\\\]+\\.exe", PCRE2_CASELESS},
    /* an IPv4 address with a port in the command line */
    {"ip-port", "(?:\\d{1,3}\\.){3}\\d{1,3}:\\d{2,5}", 0},
    /* a lookahead: Hyperscan refuses it, so it stays on PCRE2 */
    {"lookahead", "(?i)\\biex(?=\\s*\\()", 0},
};

/* Builds a command line of about `size` bytes: a PowerShell launch whose encoded command
 * fills the line (matches ps-encoded and long-cmdline), or a program with many ordinary
 * arguments and no base64 blob, temp path or address (matches only long-cmdline). */
static char *cmdline(size_t size, bool hostile)
{
    char *s = malloc(size + 1);
    if (!s)
        exit(1);
    size_t n = 0;
    const char *head = hostile ? "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe "
                                 "-NoProfile -WindowStyle Hidden -EncodedCommand "
                               : "\"C:\\Program Files\\Vendor\\Agent\\agent.exe\" --service ";
    n = strlen(head);
    memcpy(s, head, n);
    static const char b64[] = "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBi";
    static const char arg[] = "--option-name=value_with_some_text ";
    size_t k = 0;
    while (n < size) {
        s[n++] = hostile ? b64[k % (sizeof(b64) - 1)] : arg[k % (sizeof(arg) - 1)];
        k++;
    }
    s[n] = '\0';
    return s;
}

typedef int (*runner)(void *ctx, const char *s, size_t n);

typedef struct pcre_ctx {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
} pcre_ctx;

static int run_pcre(void *ctx, const char *s, size_t n)
{
    pcre_ctx *p = ctx;
    int rc = pcre2_match(p->code, (PCRE2_SPTR)s, n, 0, 0, p->md, p->mctx);
    return rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

typedef struct kx_ctx {
    kx__regex *re;
    kx__rx *rx;
    bool match; /* kx__regex_match, else Hyperscan alone */
} kx_ctx;

static int run_kx(void *ctx, const char *s, size_t n)
{
    kx_ctx *k = ctx;
    if (k->match) {
        kx__rx_event_begin(k->rx);
        bool m = kx__regex_match(k->re, s, n, k->rx);
        return k->rx->reason ? -1 : m;
    }
    return kx__regex_exec(k->re, s, n, k->rx, KX__RX_HS);
}

static void timed(const char *pat, const char *lname, const char *line, size_t len,
                  const char *engine, runner fn, void *ctx, double secs)
{
    int answer = fn(ctx, line, len);
    if (answer == -ENOTSUP) {
        printf("pattern=%s line=%s bytes=%zu engine=%s answer=n/a\n", pat, lname, len, engine);
        return;
    }
    size_t iters = 0;
    double t0 = cpu_s(), t;
    do {
        for (int i = 0; i < 64; i++)
            (void)fn(ctx, line, len);
        iters += 64;
        t = cpu_s() - t0;
    } while (t < secs);
    printf("pattern=%s line=%s bytes=%zu engine=%s answer=%s cpu_us_per_match=%.3f\n", pat, lname,
           len, engine,
           answer < 0    ? "gave-up"
           : answer == 1 ? "match"
                         : "no-match",
           t / (double)iters * 1e6);
}

int main(int argc, char **argv)
{
    double secs = 0.3;
    int opt;
    while ((opt = getopt(argc, argv, "t:")) != -1) {
        if (opt == 't')
            secs = atof(optarg);
        else {
            fprintf(stderr, "usage: bench-regex [-t SECONDS_PER_ROW]\n");
            return 2;
        }
    }
    kx_log_set_level(KX_LOG_ERROR); /* given-up warnings are the point of pcre2-old */
    kx__rx rx;
    if (kx__rx_init(&rx))
        return 1;
    pcre2_match_context *old = pcre2_match_context_create(NULL);
    pcre2_match_context *unl = pcre2_match_context_create(NULL);
    pcre2_jit_stack *stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!old || !unl || !stack)
        return 1;
    pcre2_set_match_limit(old, KX__RE_MATCH_LIMIT);
    pcre2_set_depth_limit(old, KX__RE_DEPTH_LIMIT);
    pcre2_jit_stack_assign(unl, NULL, stack);
    static const struct {
        const char *name;
        size_t size;
        bool hostile;
    } lines[] = {{"ps-1k", 1024, true},
                 {"ps-2k", 2048, true},
                 {"agent-1k", 1024, false},
                 {"agent-2k", 2048, false}};
    for (size_t p = 0; p < KX_ARRAY_LEN(patterns); p++) {
        const pattern *pt = &patterns[p];
        kx__regex *re = NULL;
        char msg[200];
        size_t off;
        kx__regex_opts o = {.flags = pt->flags, .where = pt->name};
        if (kx__regex_create(&rx, pt->re, strlen(pt->re), &o, &re, msg, sizeof(msg), &off)) {
            fprintf(stderr, "%s: %s\n", pt->re, msg);
            return 1;
        }
        int ec;
        PCRE2_SIZE eo;
        pcre_ctx pc = {
            .code = pcre2_compile((PCRE2_SPTR)pt->re, PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | pt->flags, &ec, &eo, NULL),
            .md = pcre2_match_data_create(1, NULL),
        };
        if (!pc.code || !pc.md || pcre2_jit_compile(pc.code, PCRE2_JIT_COMPLETE) != 0)
            return 1;
        for (size_t l = 0; l < KX_ARRAY_LEN(lines); l++) {
            char *s = cmdline(lines[l].size, lines[l].hostile);
            size_t n = strlen(s);
            pc.mctx = old;
            timed(pt->name, lines[l].name, s, n, "pcre2-old", run_pcre, &pc, secs);
            pc.mctx = unl;
            timed(pt->name, lines[l].name, s, n, "pcre2-jit", run_pcre, &pc, secs);
            kx_ctx hs = {re, &rx, false}, km = {re, &rx, true};
            timed(pt->name, lines[l].name, s, n, "hyperscan", run_kx, &hs, secs);
            timed(pt->name, lines[l].name, s, n, "klaxon", run_kx, &km, secs);
            free(s);
        }
        pcre2_match_data_free(pc.md);
        pcre2_code_free(pc.code);
        kx__regex_destroy(re);
    }
    /* The budget's worst case: hostile values until the event's budget is spent. */
    kx__regex *re = NULL;
    char msg[200];
    size_t off;
    kx__regex_opts o = {.where = "hostile"};
    const char *hostile = "^(a+)+(?<!x)$";
    if (kx__regex_create(&rx, hostile, strlen(hostile), &o, &re, msg, sizeof(msg), &off))
        return 1;
    char v[32];
    memset(v, 'a', 30);
    v[30] = 'b';
    v[31] = '\0';
    double best = 1e9;
    size_t runs = 0;
    for (int rep = 0; rep < 20; rep++) {
        kx__rx_event_begin(&rx);
        double t0 = cpu_s();
        runs = 0;
        while (rx.budget > 0) {
            (void)kx__regex_match(re, v, 31, &rx);
            runs++;
        }
        double t = cpu_s() - t0;
        best = t < best ? t : best;
    }
    printf("budget_steps=%u hostile_runs=%zu budget_event_ms=%.3f\n", KX__RE_EVENT_BUDGET, runs,
           best * 1e3);
    kx__regex_destroy(re);
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(old);
    pcre2_match_context_free(unl);
    kx__rx_fini(&rx);
    return 0;
}
