/*
 * `klaxon alerts`: what the alert spool holds and what sinks gave up on, for the operator.
 *
 *   list   alerts some sink has not acknowledged yet (read-only, beside a running klaxon)
 *   dead   dead letters
 *   retry  sends dead letters again: they move to the spool's requeue/ directory, which a
 *          running klaxon takes within seconds (a stopped one at its next start)
 *
 * The spool is the config's alerting.spool.dir (-c CONFIG) or --spool DIR; the dead letters
 * are alerting.dead_letter or DIR/dead.jsonl. Output: a table, or --json (one object per
 * line). Exit codes: 0 done, 1 runtime failure, 2 bad usage or config.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "klaxon/config.h"
#include "klaxon/deadletter.h"
#include "klaxon/spool.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: klaxon alerts list  (-c CONFIG | --spool DIR) [--json]\n"
               "       klaxon alerts dead  (-c CONFIG | --spool DIR) [--json]\n"
               "       klaxon alerts retry (-c CONFIG | --spool DIR) (--all | --sink NAME | --key "
               "KEY)...\n"
               "\n"
               "list   alerts in the spool that some sink has not acknowledged yet, oldest first\n"
               "       (safe beside a running klaxon: nothing is written)\n"
               "dead   dead letters: alerts a sink gave up on, with the sink, the reason, the\n"
               "       attempts and the last error\n"
               "retry  sends dead letters again, each to the sink that gave up on it: they move\n"
               "       to DIR/requeue/, which a running klaxon takes within 5 s and a stopped\n"
               "       one at its next start. --sink and --key select (all given must match);\n"
               "       --all takes every one.\n"
               "\n"
               "The spool is alerting.spool.dir of CONFIG, or DIR; dead letters are\n"
               "alerting.dead_letter or DIR/dead.jsonl. Exit 0 on success, 1 on a runtime\n"
               "failure, 2 on bad usage or config.\n");
}

typedef struct where {
    char *spool;
    char *dead;
} where;

/* Resolves the spool directory and the dead-letter file from -c or --spool. */
static int locate(const char *cfg_path, const char *spool, where *w)
{
    memset(w, 0, sizeof(*w));
    if (spool) {
        w->spool = strdup(spool);
    } else {
        kx_config *cfg = NULL;
        kx_err err = {0};
        if (kx_config_load(cfg_path, &cfg, &err)) {
            kx__cli_print_err(&err);
            return 2;
        }
        const kx_yaml_node *sp = kx_yaml_get(cfg->alerting, "spool");
        const kx_yaml_node *dir = kx_yaml_get(sp, "dir");
        const kx_yaml_node *dl = kx_yaml_get(cfg->alerting, "dead_letter");
        if (dir && dir->type == KX_YAML_SCALAR)
            w->spool = strdup(dir->str);
        if (dl && dl->type == KX_YAML_SCALAR)
            w->dead = strdup(dl->str);
        kx_config_destroy(cfg);
        if (!w->spool && !w->dead) {
            fprintf(stderr, "klaxon: %s has no alerting.spool (nor alerting.dead_letter)\n",
                    cfg_path);
            return 2;
        }
    }
    if (!w->dead && w->spool) {
        size_t n = strlen(w->spool) + sizeof("/dead.jsonl");
        if ((w->dead = malloc(n)))
            snprintf(w->dead, n, "%s/dead.jsonl", w->spool);
    }
    return 0;
}

static void where_fini(where *w)
{
    free(w->spool);
    free(w->dead);
}

/* ---- list ---- */

typedef struct lister {
    bool json;
    size_t n;
} lister;

static void put_json_str(const char *s)
{
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(q ? q : "\"\"", stdout);
    free(q);
    json_decref(j);
}

static void on_spooled(void *ud, const kx_spool_alert *a)
{
    lister *l = ud;
    json_error_t je;
    json_t *o = json_loadb(a->payload, a->len, 0, &je);
    const char *rule = json_string_value(json_object_get(json_object_get(o, "rule"), "id"));
    const char *team = json_string_value(json_object_get(o, "team"));
    char when[40];
    kx_time_format(a->created_ms, when, sizeof(when));
    if (l->json) {
        printf("{\"seq\":%llu,\"created\":\"%s\",\"key\":\"%s\",\"rule\":",
               (unsigned long long)a->seq, when, a->key);
        put_json_str(rule ? rule : "");
        fputs(",\"team\":", stdout);
        put_json_str(team ? team : "");
        fputs(",\"pending\":[", stdout);
        for (size_t i = 0, k = 0; i < a->nsinks; i++)
            if (a->pending & (1u << i)) {
                fputs(k++ ? "," : "", stdout);
                put_json_str(a->sinks[i]);
            }
        fputs("]}\n", stdout);
    } else {
        if (l->n == 0)
            printf("%-8s %-24s %-32s %-14s %-36s %s\n", "SEQ", "CREATED", "KEY", "TEAM", "RULE",
                   "PENDING SINKS");
        printf("%-8llu %-24s %-32s %-14s %-36s ", (unsigned long long)a->seq, when, a->key,
               team ? team : "", rule ? rule : "");
        for (size_t i = 0, k = 0; i < a->nsinks; i++)
            if (a->pending & (1u << i))
                printf("%s%s", k++ ? "," : "", a->sinks[i]);
        putchar('\n');
    }
    l->n++;
    json_decref(o);
}

static int cmd_list(const where *w, bool json)
{
    if (!w->spool) {
        fprintf(stderr, "klaxon: no alerting.spool: alerts are not kept on disk\n");
        return 2;
    }
    kx_spool_opts o = {.dir = w->spool, .read_only = true};
    kx_spool *sp = NULL;
    kx_err err = {0};
    lister l = {.json = json};
    if (kx_spool_open(&o, on_spooled, &l, &sp, &err)) {
        kx__cli_print_err(&err);
        return 1;
    }
    kx_spool_stats st;
    kx_spool_stats_get(sp, &st);
    kx_spool_close(sp);
    if (!json)
        printf("%zu alert(s) waiting; spool %s: %llu bytes in %llu segment(s)\n", l.n, w->spool,
               (unsigned long long)st.bytes, (unsigned long long)st.segments);
    return 0;
}

/* ---- dead ---- */

static void on_dead(void *ud, const kx_dead_letter *d)
{
    lister *l = ud;
    if (l->json) {
        printf("{\"time\":\"%s\",\"sink\":", d->time);
        put_json_str(d->sink);
        fputs(",\"reason\":", stdout);
        put_json_str(d->reason);
        printf(",\"attempts\":%lld,\"status\":%lld,\"error\":", d->attempts, d->status);
        put_json_str(d->error);
        printf(",\"key\":\"%s\",\"rule\":", d->key);
        put_json_str(d->rule_id);
        fputs("}\n", stdout);
    } else {
        if (l->n == 0)
            printf("%-24s %-12s %-8s %-6s %-32s %-36s %s\n", "TIME", "SINK", "ATTEMPTS", "STATUS",
                   "KEY", "RULE", "REASON (LAST ERROR)");
        printf("%-24s %-12s %-8lld %-6lld %-32s %-36s %s (%s)\n", d->time, d->sink, d->attempts,
               d->status, d->key, d->rule_id, d->reason, d->error[0] ? d->error : "-");
    }
    l->n++;
}

static int cmd_dead(const where *w, bool json)
{
    lister l = {.json = json};
    size_t bad = 0;
    kx_err err = {0};
    if (kx_dead_letters_read(w->dead, on_dead, &l, &bad, &err)) {
        kx__cli_print_err(&err);
        return 1;
    }
    if (!json)
        printf("%zu dead letter(s) in %s\n", l.n, w->dead);
    if (bad)
        fprintf(stderr, "klaxon: %zu line(s) of %s are not dead letters (skipped)\n", bad, w->dead);
    return 0;
}

/* ---- retry ---- */

typedef struct picker {
    bool all;
    const char *sink;
    char **keys;
    size_t nkeys;
} picker;

static bool pick(void *ud, const kx_dead_letter *d)
{
    const picker *p = ud;
    if (p->all)
        return true;
    if (p->sink && strcmp(p->sink, d->sink))
        return false;
    if (p->nkeys) {
        bool hit = false;
        for (size_t i = 0; i < p->nkeys && !hit; i++)
            hit = !strcmp(p->keys[i], d->key);
        if (!hit)
            return false;
    }
    return p->sink || p->nkeys;
}

static int cmd_retry(const where *w, picker *p)
{
    if (!w->spool) {
        fprintf(stderr, "klaxon: retry needs alerting.spool (the running klaxon takes requeued "
                        "alerts from it)\n");
        return 2;
    }
    size_t n = strlen(w->spool) + sizeof("/requeue");
    char *dir = malloc(n);
    if (!dir)
        return 1;
    snprintf(dir, n, "%s/requeue", w->spool);
    size_t moved = 0;
    kx_err err = {0};
    int rc = kx_dead_letters_requeue(w->dead, dir, pick, p, &moved, &err);
    if (rc) {
        kx__cli_print_err(&err);
        free(dir);
        return 1;
    }
    printf("%zu dead letter(s) requeued to %s: a running klaxon sends them within 5 s, "
           "otherwise the next start does\n",
           moved, dir);
    free(dir);
    return 0;
}

int kx__cli_alerts(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "list") && strcmp(sub, "dead") && strcmp(sub, "retry")) {
        fprintf(stderr, "klaxon: unknown alerts command \"%s\"\n", sub);
        usage(stderr);
        return 2;
    }
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"spool", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},         {"all", no_argument, NULL, 'a'},
        {"sink", required_argument, NULL, 'n'},   {"key", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *cfg = NULL, *spool = NULL;
    bool json = false;
    picker p = {0};
    char *keys[64];
    p.keys = keys;
    int c;
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cfg = optarg;
            break;
        case 's':
            spool = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'a':
            p.all = true;
            break;
        case 'n':
            p.sink = optarg;
            break;
        case 'k':
            if (p.nkeys == 64) {
                fprintf(stderr, "klaxon: at most 64 --key\n");
                return 2;
            }
            keys[p.nkeys++] = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if ((!cfg) == (!spool) || optind < argc - 1) {
        fprintf(stderr, "klaxon: give exactly one of -c CONFIG and --spool DIR\n");
        usage(stderr);
        return 2;
    }
    bool is_retry = !strcmp(sub, "retry");
    if (is_retry ? !(p.all || p.sink || p.nkeys) || (p.all && (p.sink || p.nkeys))
                 : (p.all || p.sink || p.nkeys)) {
        fprintf(stderr, is_retry ? "klaxon: retry needs --all, or --sink and/or --key\n"
                                 : "klaxon: --all, --sink and --key are for retry\n");
        return 2;
    }
    if (is_retry && json) {
        fprintf(stderr, "klaxon: --json is for list and dead\n");
        return 2;
    }
    where w;
    int rc = locate(cfg, spool, &w);
    if (rc)
        return rc;
    if (!strcmp(sub, "list"))
        rc = cmd_list(&w, json);
    else if (!strcmp(sub, "dead"))
        rc = cmd_dead(&w, json);
    else
        rc = cmd_retry(&w, &p);
    where_fini(&w);
    return rc;
}
