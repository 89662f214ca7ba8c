/*
 * `klaxon config check FILE`: everything `klaxon run` would refuse at start, refused here
 * with the same file:line:col messages, without starting anything: the config's sections,
 * the rules, each input's decoder, the kafka settings (librdkafka validates each), the
 * store URL and the whole `alerting:` section (sinks, their secrets, queues and the routing
 * table). Nothing is created or connected: sinks are built in the router's dry run.
 *
 * `klaxon route -c CONFIG [ALERT.json | -]`: for each alert (one JSON object per line), the
 * routes that take it and the sinks it reaches now.
 */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"
#include "klaxon/alert.h"
#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/source.h"
#include "klaxon/store.h"
#include "klaxon/tz.h"

static void usage_check(FILE *f)
{
    fprintf(f, "usage: klaxon config check FILE\n"
               "\n"
               "Checks a configuration as `klaxon run` would at start, without starting: its\n"
               "sections, the rules it names, each input's decoder, the kafka settings, the\n"
               "store URL and the alerting section (spool, sinks and their secrets, queues,\n"
               "routes). Prints the first error as FILE:LINE:COL: message. Connects to\n"
               "nothing and creates no file. Exit 0 when klaxon run would start, 2 otherwise.\n");
}

int kx__cli_config(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage_check(stdout);
        return 0;
    }
    if (argc >= 3 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help"))) {
        usage_check(stdout);
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "check")) {
        usage_check(stderr);
        return 2;
    }
    const char *path = argv[2];
    kx_config *cfg = NULL;
    kx_ruleset *rs = NULL;
    kx_router *router = NULL;
    kx_decoder_set *dset = NULL;
    struct ev_loop *loop = NULL;
    kx_err err = {0};
    int code = 2;
    if (kx_config_load(path, &cfg, &err))
        goto fail;
    if (cfg->nrule_paths == 0) {
        kx_err_set(&err, path, 0, 0, "no rules: the config names no rule paths");
        goto fail;
    }
    if (kx_ruleset_load((const char *const *)cfg->rule_paths, cfg->nrule_paths, &rs, &err))
        goto fail;
    if (kx__decoders_load(cfg, NULL, 0, false, &dset)) {
        code = 2;
        goto out; /* printed */
    }
    for (size_t i = 0; i < cfg->ninputs; i++) {
        kx_decoder *d = NULL;
        if (kx_decoder_create_with(cfg->inputs[i], cfg->decode, dset, -1, cfg->file, &d, &err))
            goto fail;
        kx_decoder_destroy(d);
    }
    if (cfg->kafka && kx_kafka_config_check(cfg->kafka, cfg->file, &err))
        goto fail;
    loop = ev_loop_new(EVFLAG_AUTO);
    kx_store *store = NULL;
    kx_store_opts so = {.max_keys = cfg->state_max_keys,
                        .log_windows = cfg->state_windows_log,
                        .username = cfg->store_username,
                        .password = cfg->store_password};
    if (kx_store_create_from_url(loop, cfg->store_url, &so, &store, &err))
        goto fail;
    kx_store_destroy(store);
    kx_router_opts ro = {.dry_run = true, .check_files = true};
    if (kx_router_create(loop, cfg->alerting, cfg->file, &ro, &router, &err))
        goto fail;
    printf("ok: %s: %zu rules, %zu inputs, %zu sinks, %zu routes\n", path, kx_ruleset_size(rs),
           cfg->ninputs, kx_router_sinks(router), kx_router_routes(router));
    code = 0;
    goto out;
fail:
    kx__cli_print_err(&err);
out:
    kx_router_destroy(router);
    if (loop)
        ev_loop_destroy(loop);
    kx_ruleset_destroy(rs);
    kx_decoder_set_destroy(dset);
    kx_config_destroy(cfg);
    kx_tz_cache_clear();
    return code;
}

static void usage_route(FILE *f)
{
    fprintf(f, "usage: klaxon route -c CONFIG [ALERT.json | -]\n"
               "\n"
               "For each alert (a JSON object per line, as klaxon writes them), prints the\n"
               "routes of CONFIG that take it and the sinks it reaches now (time-of-day\n"
               "windows are judged on the current time). Reads stdin without a file. Sends\n"
               "nothing. Exit 0, 1 when a line is not an alert, 2 on bad usage or config.\n");
}

int kx__cli_route(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (c == 'c') {
            cfg_path = optarg;
        } else if (c == 'h') {
            usage_route(stdout);
            return 0;
        } else {
            usage_route(stderr);
            return 2;
        }
    }
    if (!cfg_path || argc - optind > 1) {
        usage_route(stderr);
        return 2;
    }
    const char *in = optind < argc ? argv[optind] : "-";
    FILE *f = strcmp(in, "-") ? fopen(in, "r") : stdin;
    if (!f) {
        fprintf(stderr, "klaxon: %s: %s\n", in, strerror(errno));
        return 2;
    }
    kx_config *cfg = NULL;
    kx_router *router = NULL;
    struct ev_loop *loop = NULL;
    kx_err err = {0};
    int code = 2;
    if (kx_config_load(cfg_path, &cfg, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    kx_router_opts ro = {.dry_run = true};
    if (kx_router_create(loop, cfg->alerting, cfg->file, &ro, &router, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    code = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t lineno = 0;
    kx_buf out;
    kx_buf_init(&out, 0);
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (!n)
            continue;
        kx_buf_reset(&out);
        if (kx_router_explain(router, line, (size_t)n, kx_now_ms(), &out)) {
            fprintf(stderr, "klaxon: %s:%zu: not an alert (a JSON object with \"rule\")\n", in,
                    lineno);
            code = 1;
            continue;
        }
        fwrite(out.data, 1, out.len, stdout);
    }
    free(line);
    kx_buf_fini(&out);
out:
    if (f != stdin)
        fclose(f);
    kx_router_destroy(router);
    if (loop)
        ev_loop_destroy(loop);
    kx_config_destroy(cfg);
    kx_tz_cache_clear();
    return code;
}
