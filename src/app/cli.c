/*
 * The klaxon command line: run (the daemon), replay (the same engine over files or stdin,
 * also behind `rules test`), version; `rules` is cli_rules.c's. Each command builds the stages from
 * the config, wires them on one libev loop and tears them down in reverse order.
 *
 * Exit codes: 0 success; 1 runtime failure; 2 bad usage, config or rules (nothing started).
 */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/alert.h"
#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/http.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "klaxon/pipeline.h"
#include "klaxon/source.h"
#include "klaxon/store.h"
#include "klaxon/tz.h"
#include "cli_int.h"

#ifndef KLAXON_VERSION
#define KLAXON_VERSION "0.1.0"
#endif

int kx_cli_main(int argc, char **argv);

void kx__cli_print_err(const kx_err *e)
{
    char buf[1024];
    kx_err_format(e, buf, sizeof(buf));
    fprintf(stderr, "klaxon: %s\n", buf);
}

/* Rules klaxon cannot evaluate yet are refused at load, not silently never fired. */
static int load_rules(char **paths, size_t n, kx_ruleset **out)
{
    kx_err err = {0};
    if (n == 0) {
        fprintf(stderr, "klaxon: no rules given\n");
        return -EINVAL;
    }
    if (kx_ruleset_load((const char *const *)paths, n, out, &err)) {
        kx__cli_print_err(&err);
        return -EINVAL;
    }
    return 0;
}

/* ---- shared runtime ---- */

typedef struct app {
    struct ev_loop *loop;
    kx_config *cfg;
    kx_ruleset *rules;
    kx_store *store;
    kx_router *router;
    kx_pipeline *pipe;
    kx_source *src;
    kx_http *http;
    ev_signal sigterm, sigint, sighup;
    bool reload_requested;
    bool stopping;
    bool source_ended;
    bool replay;
    bool borrowed; /* cfg and rules belong to the caller (kx__replay_run) */
    /* replay: decode as this input (a config `inputs` entry's keys) with this `decode`
     * section, instead of picking one of the config's inputs */
    const kx_yaml_node *input, *decode;
    kx__reload rl;     /* run: the rules in force and the last reload, for metrics/healthz */
    kx__livelists *ll; /* reads the rules' Redis-backed lists; NULL when they have none */
    const kx_decoder_set *dset; /* the decoder content (docs/sources.md), or NULL */
    kx_decoder_set *own_dset;   /* run: dset, loaded here */
    bool pipe_paused;           /* the pipeline holds the source (store down, spool full) */
    bool lists_hold;            /* a reload's new live lists are being read: events wait */
    ev_timer lists_w;           /* how long they may wait */
    ev_timer watch;             /* run with rules_watch: looks at the rule files */
    uint64_t watch_fp;          /* their fingerprint when last looked at */
    int exit_code;
} app;

static void finish_shutdown(app *a);
static void hold_for_new_lists(app *a);

/* How long start-up and a reload hold the events back for a live list's first read. */
#define KX_LISTS_WAIT_S 10.0

/* `run` reads live lists from the state store's Redis: a set that needs them and a memory
 * store would fail closed on every event for ever, so it is refused (file:line of a list). */
static int live_lists_need_redis(const app *a, kx_ruleset *rs, kx_err *err)
{
    if (a->replay || !kx_ruleset_live_lists(rs) || !strcmp(kx_store_kind(a->store), "redis"))
        return 0;
    kx_live_list l;
    kx_ruleset_live_list(rs, 0, &l);
    return kx_err_set(err, a->cfg ? a->cfg->file : NULL, 0, 0,
                      "list %s is read from Redis (set \"%s\"), but state is in memory: set "
                      "state.store to redis://...",
                      l.name, l.key);
}

/* SIGHUP: load the rule files again; a set with any error is refused and the running set
 * stays in force. The swap happens between batches (in-flight updates point at rules). */
static void reload_rules(app *a)
{
    a->reload_requested = false;
    kx_ruleset *rs = NULL;
    kx_err err = {0};
    char msg[1024];
    int lrc =
        kx_ruleset_load((const char *const *)a->cfg->rule_paths, a->cfg->nrule_paths, &rs, &err);
    if (!lrc && live_lists_need_redis(a, rs, &err) != 0)
        lrc = -EINVAL;
    if (lrc) {
        kx_ruleset_destroy(rs); /* NULL when the load failed */
        kx__reload_refused(&a->rl, ev_time(), &err);
        kx_err_format(&err, msg, sizeof(msg));
        kx_log(KX_LOG_ERROR, "app", "rule reload refused, the running rules stay in force: %s",
               msg);
        return;
    }
    /* Compile the new set's per-logsource databases now, not on each input's next event:
     * the configured inputs' and every other logsource the running set has seen. */
    kx_pipeline_prepare_rules(a->pipe, rs);
    kx_ruleset_prepare_like(rs, a->rules);
    kx_ruleset_carry_live_lists(rs, a->rules);
    if (kx_pipeline_set_rules(a->pipe, rs)) {
        kx_ruleset_destroy(rs);
        a->reload_requested = true; /* busy after all: retry after the next batch */
        return;
    }
    size_t kept = kx__reload_taken(&a->rl, ev_time(), rs, a->rules);
    kx_ruleset_destroy(a->rules);
    a->rules = rs;
    if (a->ll)
        kx__livelists_use(a->ll, rs);
    else if (kx_ruleset_live_lists(rs) && kx__livelists_create(a->loop, a->store, rs, &a->ll))
        kx_log(KX_LOG_ERROR, "app", "out of memory: live lists not read, their rules fail closed");
    hold_for_new_lists(a);
    kx_log(KX_LOG_INFO, "app", "rules reloaded: %zu rules (%zu unchanged, their counters kept)",
           kx_ruleset_size(rs), kept);
}

static void batch_done(void *ud)
{
    app *a = ud;
    if (a->reload_requested && !a->stopping)
        reload_rules(a);
    kx_source_batch_done(a->src);
    if (a->stopping && !a->replay)
        finish_shutdown(a);
}

/* The pipeline finished a check of its own (no batch): what batch_done would do next. */
static void tick_done(void *ud)
{
    app *a = ud;
    if (a->reload_requested && !a->stopping)
        reload_rules(a);
    if (a->stopping && !a->replay)
        finish_shutdown(a);
}

static void on_batch(void *ud, const kx_msg *msgs, size_t n)
{
    app *a = ud;
    if (kx_pipeline_process(a->pipe, msgs, n, batch_done, a)) {
        /* The source gives one batch at a time: a second one is a bug of ours. Storing its
         * offsets would lose it, so stop here. */
        kx_log(KX_LOG_ERROR, "app", "pipeline refused a batch while busy");
        abort();
    }
}

/* The source runs when neither the pipeline nor a live list's first read holds it. */
static void apply_pause(app *a)
{
    if (a->pipe_paused || a->lists_hold)
        kx_source_pause(a->src);
    else
        kx_source_resume(a->src);
}

static void on_pause(void *ud, bool pause)
{
    app *a = ud;
    a->pipe_paused = pause;
    apply_pause(a);
}

static void lists_release(app *a)
{
    if (!a->lists_hold)
        return;
    a->lists_hold = false;
    ev_timer_stop(a->loop, &a->lists_w);
    apply_pause(a);
}

static void lists_ready(void *ud)
{
    lists_release(ud);
}

static void lists_wait_over(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    app *a = w->data;
    kx_log(KX_LOG_WARN, "lists",
           "a reload's new live lists are not read after %.0fs: going on; their rules fail "
           "closed until read",
           KX_LISTS_WAIT_S);
    lists_release(a);
}

/* After a reload: a live list the old rules did not have (or with another key) is read
 * before the next event, as at start-up, for at most KX_LISTS_WAIT_S. */
static void hold_for_new_lists(app *a)
{
    if (!kx__livelists_waiting(a->ll))
        return;
    a->lists_hold = true;
    apply_pause(a);
    kx__livelists_on_ready(a->ll, lists_ready, a);
    ev_timer_stop(a->loop, &a->lists_w);
    ev_timer_set(&a->lists_w, KX_LISTS_WAIT_S, 0);
    ev_timer_start(a->loop, &a->lists_w);
}

static void drained(void *ud)
{
    app *a = ud;
    ev_break(a->loop, EVBREAK_ALL);
}

static void finished(void *ud)
{
    app *a = ud;
    kx_router_drain(a->router, drained, a);
}

/* Source finished (replay: input read; run: consumer closed after commit). */
static void on_source_end(void *ud)
{
    app *a = ud;
    a->source_ended = true;
    /* replay: absence rules judge the silences the input ends with (by its last event time)
     * before the router drains. */
    if (a->replay && !a->stopping && kx_pipeline_finish(a->pipe, finished, a) == 0)
        return; /* (an interrupted replay did not read its input to the end: no judging) */
    kx_router_drain(a->router, drained, a);
}

static ev_timer g_grace_w;

/* How long a shutdown waits for in-flight work (a batch held by a store outage, a webhook
 * being retried). Past it, klaxon exits without storing the unfinished batch's offsets:
 * those messages are read again on restart (state updates are idempotent), none is lost. */
#define KX_SHUTDOWN_GRACE_S 15.0

/* Commits the stored offsets and closes the consumer (blocking, once, at shutdown), then
 * drains the router (pending deliveries), which ends the loop. */
static void finish_shutdown(app *a)
{
    if (a->source_ended)
        return;
    kx_source_stop(a->src);
    if (!a->replay)
        on_source_end(a);
}

static void grace_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    app *a = w->data;
    kx_log(KX_LOG_WARN, "app",
           "shutdown grace of %.0fs expired: exiting with in-flight work unfinished; its "
           "offsets are not committed and it will be read again on restart",
           KX_SHUTDOWN_GRACE_S);
    if (!a->source_ended) {
        kx_source_stop(a->src);
        a->source_ended = true;
    }
    a->exit_code = 1;
    ev_break(loop, EVBREAK_ALL);
}

static void begin_shutdown(app *a)
{
    if (a->stopping)
        return;
    a->stopping = true;
    kx_log(KX_LOG_INFO, "app", "shutting down: finishing in-flight work");
    kx_pipeline_stop_ticks(a->pipe);
    kx_source_pause(a->src);
    g_grace_w.data = a;
    ev_timer_start(a->loop, &g_grace_w);
    /* With a batch in flight, batch_done finishes the shutdown once the batch is handed on. */
    if (!kx_pipeline_busy(a->pipe))
        finish_shutdown(a);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    begin_shutdown(w->data);
}

/* A reload now, or after the batch in flight (a swap happens between batches). */
static void request_reload(app *a)
{
    a->reload_requested = true;
    if (!kx_pipeline_busy(a->pipe))
        reload_rules(a);
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    app *a = w->data;
    kx_router_reopen(a->router); /* log rotation */
    request_reload(a);
}

/* rules_watch: a rule file added, removed or written since the last look reloads the rules
 * (a refused set is not tried again until the files change again). The walk and its stat()
 * calls run on the loop: a few ms for thousands of files, every rules_watch. */
static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    app *a = w->data;
    uint64_t fp =
        kx_rule_files_fingerprint((const char *const *)a->cfg->rule_paths, a->cfg->nrule_paths);
    if (!fp || fp == a->watch_fp || a->stopping)
        return;
    a->watch_fp = fp;
    kx_log(KX_LOG_INFO, "app", "rule files changed: reloading the rules");
    request_reload(a);
}

/* One line per rule, 3,000 of them with SigmaHQ: formatted by hand (no printf per line), as
 * the page is rendered on every scrape on the loop thread that matches events. */
static int render_rule_metrics(void *ud, kx_buf *out)
{
    app *a = ud;
    int rc = kx_buf_printf(out,
                           "# HELP klaxon_build_info klaxon's version.\n"
                           "# TYPE klaxon_build_info gauge\nklaxon_build_info{version=\"%s\"} 1\n",
                           KLAXON_VERSION);
    rc = rc ? rc : kx_router_render_metrics(a->router, out);
    rc = rc ? rc : kx_source_render_metrics(a->src, out);
    rc = rc ? rc : kx__reload_render_metrics(&a->rl, kx_ruleset_size(a->rules), out);
    rc = rc ? rc : kx__livelists_render_metrics(a->ll, out);
    rc = rc ? rc
            : kx_buf_puts(out, "# HELP klaxon_rule_matches_total Matches (detection rules) or "
                               "alerts (correlations) per rule; kept by reloads that leave the "
                               "rule unchanged.\n"
                               "# TYPE klaxon_rule_matches_total counter\n");
    size_t n = kx_ruleset_size(a->rules);
    for (size_t i = 0; i < n && !rc; i++) {
        kx_rule *r = kx_ruleset_at(a->rules, i);
        char num[24], *p = num + sizeof(num);
        unsigned long long v = (unsigned long long)r->matches;
        *--p = '\n';
        do
            *--p = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        if ((rc = kx_buf_puts(out, "klaxon_rule_matches_total{rule=\"")) ||
            (rc = kx_metrics_put_label(out, r->id)) || (rc = kx_buf_puts(out, "\"} ")))
            break;
        rc = kx_buf_append(out, p, (size_t)(num + sizeof(num) - p));
    }
    return rc;
}

/* One more reason why /healthz or /readyz says no. */
static void add_reason(kx_buf *reason, bool *ok, const char *why, size_t n)
{
    if (!*ok)
        kx_buf_puts(reason, "; ");
    kx_buf_append(reason, why, n);
    *ok = false;
}

/* /readyz: the store answers and the alert spool takes alerts. /healthz: ready, and the
 * source can read (a broker is reachable, partitions are assigned) and no sink's circuit is
 * open. Every failing reason is listed. */
static bool health(void *ud, bool ready_only, kx_buf *reason)
{
    app *a = ud;
    bool ok = true;
    if (a->stopping) {
        kx_buf_puts(reason, "shutting down");
        return false;
    }
    if (!kx_store_is_up(a->store))
        add_reason(reason, &ok, "state store unreachable", 23);
    kx_buf t;
    kx_buf_init(&t, 0);
    if (!kx_router_ready(a->router, &t))
        add_reason(reason, &ok, t.data ? t.data : "", t.len);
    kx_buf_reset(&t);
    if (!ready_only && !kx_source_healthy(a->src, &t))
        add_reason(reason, &ok, t.data ? t.data : "", t.len);
    kx_buf_reset(&t);
    if (!ready_only && !kx_router_healthy(a->router, &t))
        add_reason(reason, &ok, t.data ? t.data : "", t.len);
    kx_buf_fini(&t);
    /* /healthz also says which rules are in force and how the last reload went: a refused
     * reload does not make klaxon unhealthy (the rules in force still run), but it must be
     * seen. */
    if (!ready_only) {
        if (!ok)
            kx_buf_putc(reason, '\n');
        kx__reload_health_detail(&a->rl, kx_ruleset_size(a->rules), reason);
        kx__livelists_health_detail(a->ll, reason);
    }
    return ok;
}

static void app_fini(app *a)
{
    /* Order matters: cancelled sends and store updates call back into the pipeline, so it
     * goes last; the pipeline's pause callback points at the source, so it is cleared first. */
    if (a->http)
        kx_http_destroy(a->http);
    if (a->pipe)
        kx_pipeline_set_pause_cb(a->pipe, NULL, NULL);
    if (a->src)
        kx_source_destroy(a->src);
    if (a->router)
        kx_router_destroy(a->router);
    if (a->store)
        kx_store_destroy(a->store);
    kx__livelists_destroy(a->ll); /* after the store: its reads' callbacks ran */
    if (a->pipe)
        kx_pipeline_destroy(a->pipe);
    if (a->rules && !a->borrowed)
        kx_ruleset_destroy(a->rules);
    kx_decoder_set_destroy(a->own_dset); /* after the pipeline: its decoders borrow it */
    if (a->cfg && !a->borrowed)
        kx_config_destroy(a->cfg);
    /* The zones cached for the rules' time-of-day conditions go with the last user of them:
     * a caller that lends its rules clears the cache itself once they are gone. */
    if (!a->borrowed)
        kx_tz_cache_clear();
    if (a->loop)
        ev_loop_destroy(a->loop);
}

static int add_decoders(app *a, int format_override, const char *topic_for_replay, kx_err *err)
{
    kx_config *c = a->cfg;
    if (a->replay && a->input) {
        kx_decoder *d;
        if (kx_decoder_create_with(a->input, a->decode, a->dset, format_override, NULL, &d, err))
            return -EINVAL;
        return kx_pipeline_add_decoder(a->pipe, NULL, d);
    }
    if (a->replay) {
        /* Replay decodes every line with one decoder: the input named by --topic, else the
         * first input of the requested format, else defaults. */
        const kx_yaml_node *input = NULL;
        for (size_t i = 0; c && i < c->ninputs && !input; i++) {
            if (topic_for_replay) {
                if (c->input_topics[i] && !strcmp(c->input_topics[i], topic_for_replay))
                    input = c->inputs[i];
                continue;
            }
            const kx_yaml_node *f = kx_yaml_get(c->inputs[i], "format");
            bool is_syslog = kx_yaml_is(f, "syslog");
            if (format_override < 0 || (format_override == KX_FMT_SYSLOG) == is_syslog)
                input = c->inputs[i];
        }
        if (topic_for_replay && !input)
            return kx_err_set(err, c ? c->file : NULL, 0, 0, "no input for topic \"%s\"",
                              topic_for_replay);
        kx_decoder *d;
        if (kx_decoder_create_with(input, c ? c->decode : NULL, a->dset, format_override,
                                   c ? c->file : NULL, &d, err))
            return -EINVAL;
        return kx_pipeline_add_decoder(a->pipe, NULL, d);
    }
    for (size_t i = 0; i < c->ninputs; i++) {
        kx_decoder *d;
        if (kx_decoder_create_with(c->inputs[i], c->decode, a->dset, -1, c->file, &d, err))
            return -EINVAL;
        int rc = kx_pipeline_add_decoder(a->pipe, c->input_topics[i], d);
        if (rc)
            return rc;
    }
    return 0;
}

static void on_wait_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents; /* wakes the start-up wait below */
}

/* The rules' Redis-backed lists: read before the first event, so no event meets a list not
 * read yet (its rules would fail closed). replay without Redis takes each list's file values
 * (a test case may have given values already: kept). */
static int start_live_lists(app *a)
{
    size_t n = kx_ruleset_live_lists(a->rules);
    kx_err err = {0};
    if (!n)
        return 0;
    if (live_lists_need_redis(a, a->rules, &err)) {
        kx__cli_print_err(&err);
        return 2;
    }
    if (a->replay && strcmp(kx_store_kind(a->store), "redis") != 0)
        return kx__livelists_file_values(a->rules, "state is in memory") ? 1 : 0;
    /* the store connects on the loop: wait for it (bounded), then for the reads */
    ev_timer deadline;
    ev_timer_init(&deadline, on_wait_deadline, KX_LISTS_WAIT_S, 0);
    ev_timer_start(a->loop, &deadline);
    double until = ev_time() + KX_LISTS_WAIT_S;
    while (!kx_store_is_up(a->store) && ev_time() < until)
        ev_run(a->loop, EVRUN_ONCE);
    int rc = kx__livelists_create(a->loop, a->store, a->rules, &a->ll);
    /* a failed read is tried again within a second: wait for a good one, to the deadline */
    while (!rc && kx__livelists_waiting(a->ll) && ev_time() < until)
        ev_run(a->loop, EVRUN_ONCE);
    ev_timer_stop(a->loop, &deadline);
    if (rc)
        return 1;
    if (kx__livelists_waiting(a->ll) || !kx_store_is_up(a->store))
        kx_log(KX_LOG_WARN, "lists",
               "live lists not read after %.0fs: going on; their rules fail closed until read",
               KX_LISTS_WAIT_S);
    return 0;
}

/* alerting: the router's `alerting` map (NULL: one stdout sink for every alert). */
static int build_stages(app *a, const char *store_url, int format_override, const char *topic,
                        const kx_yaml_node *alerting)
{
    kx_err err = {0};
    kx_store_opts so = {
        .max_keys = a->cfg ? a->cfg->state_max_keys : 0,
        .log_windows = a->cfg && a->cfg->state_windows_log,
        .username = a->cfg ? a->cfg->store_username : NULL,
        .password = a->cfg ? a->cfg->store_password : NULL,
    };
    int rc = kx_store_create_from_url(a->loop, store_url, &so, &a->store, &err);
    if (rc) {
        kx__cli_print_err(&err);
        return 2;
    }
    /* replay must not touch the spool of a klaxon running with the same config. */
    kx_router_opts ropts = {.no_spool = a->replay, .store = a->store};
    if (kx_router_create(a->loop, alerting, a->cfg ? a->cfg->file : NULL, &ropts, &a->router,
                         &err)) {
        kx__cli_print_err(&err);
        return 2;
    }
    kx_pipeline_opts opts = {
        .max_event_bytes = a->cfg ? a->cfg->max_event_bytes : (1 << 20),
        .evidence_bytes = a->cfg ? a->cfg->evidence_bytes : (16 << 10),
        .lateness_ms = a->cfg ? a->cfg->lateness_ms : 60000,
        .max_groups = a->cfg ? a->cfg->max_groups : 100000,
        .wall_clock = !a->replay,
        /* Round trips are what pre-aggregation saves: with the in-process store it would only
         * move correlation alerts after the batch's single-event alerts. */
        .preaggregate = strcmp(kx_store_kind(a->store), "redis") == 0,
    };
    if (kx_pipeline_create(a->loop, a->rules, a->store, a->router, &opts, &a->pipe))
        return 1;
    if (add_decoders(a, format_override, topic, &err)) {
        kx__cli_print_err(&err);
        return 2;
    }
    kx_pipeline_prepare_rules(a->pipe, a->rules);
    kx_pipeline_set_pause_cb(a->pipe, on_pause, a);
    kx_pipeline_set_tick_cb(a->pipe, tick_done, a);
    ev_timer_init(&a->lists_w, lists_wait_over, KX_LISTS_WAIT_S, 0);
    a->lists_w.data = a;
    return start_live_lists(a);
}

/* ---- klaxon run ---- */

static void usage_run(FILE *f)
{
    fprintf(f, "usage: klaxon run -c CONFIG [--log-level debug|info|warn|error]\n"
               "\n"
               "Runs the always-on daemon: consumes the configured Kafka topics in a consumer\n"
               "group, decodes, matches the rules, keeps windows in the state store and sends\n"
               "alerts to the configured sinks. Offsets are committed only after the alerts a\n"
               "message caused are in the alert spool (alerting.spool: on disk; without it,\n"
               "in memory); each sink then gets them with its own retries, so a slow sink\n"
               "holds up nothing else. SIGTERM/SIGINT stop it cleanly; SIGHUP reloads the\n"
               "rules (a set with an error is refused, the running one stays in force) and\n"
               "reopens file sinks (log rotation).\n"
               "\n"
               "  -c, --config FILE   configuration file (see docs/config.md)\n"
               "      --log-level L   override the config's log_level\n"
               "  -h, --help          this help\n");
}

static int parse_level(const char *s, kx_log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, names[i])) {
            *out = (kx_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

static int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cfg_path = NULL, *level = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            cfg_path = optarg;
            break;
        case 'l':
            level = optarg;
            break;
        case 'h':
            usage_run(stdout);
            return 0;
        default:
            usage_run(stderr);
            return 2;
        }
    }
    if (!cfg_path || optind != argc) {
        usage_run(stderr);
        return 2;
    }
    app a = {0};
    kx_err err = {0};
    int code = 2;
    if (kx_config_load(cfg_path, &a.cfg, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    kx_log_set_level(a.cfg->log_level);
    kx_log_level lvl;
    if (level && parse_level(level, &lvl) == 0)
        kx_log_set_level(lvl);
    if (!a.cfg->kafka || a.cfg->ninputs == 0) {
        kx_err_set(&err, cfg_path, 0, 0, "klaxon run needs a kafka section and inputs");
        kx__cli_print_err(&err);
        goto out;
    }
    /* The watch compares with the files as they were before this load: a change made while
     * they load is seen at its first look. */
    if (a.cfg->rules_watch_ms > 0)
        a.watch_fp =
            kx_rule_files_fingerprint((const char *const *)a.cfg->rule_paths, a.cfg->nrule_paths);
    if (load_rules(a.cfg->rule_paths, a.cfg->nrule_paths, &a.rules))
        goto out;
    if (kx__decoders_load(a.cfg, NULL, 0, false, &a.own_dset))
        goto out;
    a.dset = a.own_dset;
    kx__reload_init(&a.rl, ev_time());
    a.loop = ev_loop_new(EVFLAG_AUTO);
    if ((code = build_stages(&a, a.cfg->store_url, -1, NULL, a.cfg->alerting)))
        goto out;
    const char **topics = calloc(a.cfg->ninputs, sizeof(*topics));
    size_t nt = 0;
    for (size_t i = 0; topics && i < a.cfg->ninputs; i++) {
        if (a.cfg->input_topics[i])
            topics[nt++] = a.cfg->input_topics[i];
    }
    code = 2;
    int rc = topics ? kx_kafka_source_create(a.loop, a.cfg->kafka, a.cfg->file, topics, nt,
                                             on_batch, &a, &a.src, &err)
                    : -ENOMEM;
    free(topics);
    if (rc) {
        kx__cli_print_err(&err);
        goto out;
    }
    if (a.cfg->metrics_addr && kx_http_create(a.loop, a.cfg->metrics_addr, a.cfg->metrics_port,
                                              render_rule_metrics, health, &a, &a.http, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    ev_signal_init(&a.sigterm, on_signal, SIGTERM);
    ev_signal_init(&a.sigint, on_signal, SIGINT);
    a.sigterm.data = a.sigint.data = &a;
    ev_signal_start(a.loop, &a.sigterm);
    ev_signal_start(a.loop, &a.sigint);
    ev_signal_init(&a.sighup, on_sighup, SIGHUP);
    a.sighup.data = &a;
    ev_signal_start(a.loop, &a.sighup);
    ev_timer_init(&g_grace_w, grace_expired, KX_SHUTDOWN_GRACE_S, 0);
    if (a.cfg->rules_watch_ms > 0) {
        double every = (double)a.cfg->rules_watch_ms / 1000.0;
        ev_timer_init(&a.watch, on_watch, every, every);
        a.watch.data = &a;
        ev_timer_start(a.loop, &a.watch);
    }
    signal(SIGPIPE, SIG_IGN);

    kx_log(KX_LOG_INFO, "app", "klaxon %s running: %zu rules, %zu inputs, state %s", KLAXON_VERSION,
           kx_ruleset_size(a.rules), a.cfg->ninputs, kx_store_kind(a.store));
    kx_source_start(a.src);
    ev_run(a.loop, 0);
    ev_signal_stop(a.loop, &a.sigterm);
    ev_signal_stop(a.loop, &a.sigint);
    ev_signal_stop(a.loop, &a.sighup);
    ev_timer_stop(a.loop, &g_grace_w);
    ev_timer_stop(a.loop, &a.watch);
    kx_log(KX_LOG_INFO, "app", "stopped: %llu events, %llu malformed, %llu alerts raised",
           (unsigned long long)kx_metric_get(KX_M_EVENTS_CONSUMED),
           (unsigned long long)kx_metric_get(KX_M_EVENTS_MALFORMED),
           (unsigned long long)kx_metric_get(KX_M_ALERTS_RAISED));
    code = a.exit_code;
out:
    app_fini(&a);
    return code;
}

/* ---- klaxon replay ---- */

static void usage_replay(FILE *f)
{
    fprintf(f, "usage: klaxon replay --rules PATH [--rules PATH]... [--config FILE]\n"
               "                     [--format json|syslog] [--topic NAME]\n"
               "                     [--state memory|redis://HOST:PORT] [FILE...|-]\n"
               "\n"
               "Runs events from files (or stdin, '-' or no FILE) through the same decode, rules\n"
               "and state code as `klaxon run`, and writes alerts as JSON Lines to stdout (the\n"
               "config's alerting sinks are not used; alerts carry up to 5 evidence events).\n"
               "Time is the events' own: absence and at-most-N rules are judged as the input's\n"
               "event time passes, and at its end by its last event time.\n"
               "Diagnostics go to stderr. Exit 0 on success, 2 on bad rules, config or usage.\n"
               "\n"
               "  -r, --rules PATH    rule file or directory (repeatable; adds to the config's)\n"
               "  -c, --config FILE   take inputs, decode and state settings from a config\n"
               "  -f, --format F      json or syslog (default: the input's, else json)\n"
               "  -t, --topic NAME    decode as the config's input for this topic\n"
               "  -s, --state URL     memory (default) or redis://HOST:PORT[/PREFIX]\n"
               "  -d, --decoders PATH decoder files or directories (repeatable; instead of the\n"
               "                      config's `decoders`, else the shipped decoders/)\n"
               "      --no-decoders   no decoder content: only the config's decode section\n"
               "      --log-level L   debug, info, warn or error (default warn)\n"
               "  -h, --help          this help\n");
}

int kx__replay_run(const kx__replay_spec *sp)
{
    app a = {.replay = true,
             .borrowed = true,
             .cfg = sp->cfg,
             .rules = sp->rules,
             .input = sp->input,
             .decode = sp->decode,
             .dset = sp->decoders};
    kx_err err = {0};
    int code;
    a.loop = ev_loop_new(EVFLAG_AUTO);
    if (!a.loop) {
        fprintf(stderr, "klaxon: cannot create the event loop\n");
        return 1;
    }
    const char *store_url = sp->store_url ? sp->store_url : a.cfg ? a.cfg->store_url : "memory";
    if ((code = build_stages(&a, store_url, sp->format, sp->topic, sp->alerting)))
        goto out;
    code = 1;
    const char *stdin_only[] = {"-"};
    const char *const *files = sp->nfiles ? sp->files : stdin_only;
    size_t nfiles = sp->nfiles ? sp->nfiles : 1;
    size_t max_line = a.cfg ? a.cfg->max_event_bytes : (1 << 20);
    if (kx_file_source_create(a.loop, files, nfiles, max_line, 256, on_batch, &a, on_source_end, &a,
                              &a.src, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    kx_pipeline_set_pause_cb(a.pipe, on_pause, &a);
    kx_source_start(a.src);
    ev_run(a.loop, 0);
    fflush(stdout);
    code = a.source_ended ? 0 : 1;
out:
    app_fini(&a);
    return code;
}

static int cmd_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rules", required_argument, NULL, 'r'},    {"config", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, 'f'},   {"topic", required_argument, NULL, 't'},
        {"state", required_argument, NULL, 's'},    {"log-level", required_argument, NULL, 'l'},
        {"decoders", required_argument, NULL, 'd'}, {"no-decoders", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    char **rule_paths = calloc((size_t)argc + 64, sizeof(char *));
    const char **dec_paths = calloc((size_t)argc + 1, sizeof(char *));
    size_t nrules = 0, ndec = 0;
    bool no_decoders = false;
    kx_decoder_set *dset = NULL;
    const char *cfg_path = NULL, *store_url = NULL, *topic = NULL;
    int format = -1;
    kx_log_set_level(KX_LOG_WARN);
    int ch, code = 2;
    kx_config *cfg = NULL;
    kx_ruleset *rules = NULL;
    kx_err err = {0};
    optind = 1;
    while ((ch = getopt_long(argc, argv, "r:c:f:t:s:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'r':
            rule_paths[nrules++] = optarg;
            break;
        case 'c':
            cfg_path = optarg;
            break;
        case 'f':
            if (!strcmp(optarg, "json"))
                format = KX_FMT_JSON;
            else if (!strcmp(optarg, "syslog"))
                format = KX_FMT_SYSLOG;
            else {
                fprintf(stderr, "klaxon: --format must be json or syslog\n");
                goto out;
            }
            break;
        case 't':
            topic = optarg;
            break;
        case 's':
            store_url = optarg;
            break;
        case 'd':
            dec_paths[ndec++] = optarg;
            break;
        case 'D':
            no_decoders = true;
            break;
        case 'l': {
            kx_log_level lvl;
            if (parse_level(optarg, &lvl)) {
                fprintf(stderr, "klaxon: bad --log-level\n");
                goto out;
            }
            kx_log_set_level(lvl);
            break;
        }
        case 'h':
            usage_replay(stdout);
            code = 0;
            goto out;
        default:
            usage_replay(stderr);
            goto out;
        }
    }
    if (cfg_path) {
        if (kx_config_load(cfg_path, &cfg, &err)) {
            kx__cli_print_err(&err);
            goto out;
        }
        for (size_t i = 0; i < cfg->nrule_paths && nrules < (size_t)argc + 64; i++)
            rule_paths[nrules++] = cfg->rule_paths[i];
    }
    if (!nrules) {
        usage_replay(stderr);
        goto out;
    }
    if (load_rules(rule_paths, nrules, &rules))
        goto out;
    if (kx__decoders_load(cfg, dec_paths, ndec, no_decoders, &dset))
        goto out;
    signal(SIGPIPE, SIG_IGN);
    kx__replay_spec sp = {.cfg = cfg,
                          .rules = rules,
                          .store_url = store_url,
                          .format = format,
                          .topic = topic,
                          .decoders = dset,
                          .files = (const char *const *)argv + optind,
                          .nfiles = optind < argc ? (size_t)(argc - optind) : 0};
    if ((code = kx__replay_run(&sp)) == 2)
        goto out; /* the config was refused: nothing ran */
    kx_log(KX_LOG_INFO, "replay", "%llu events, %llu malformed, %llu alerts",
           (unsigned long long)kx_metric_get(KX_M_EVENTS_CONSUMED),
           (unsigned long long)kx_metric_get(KX_M_EVENTS_MALFORMED),
           (unsigned long long)kx_metric_get(KX_M_ALERTS_RAISED));
    if (kx_metric_get(KX_M_EVENTS_MALFORMED))
        fprintf(stderr, "klaxon: %llu malformed events skipped\n",
                (unsigned long long)kx_metric_get(KX_M_EVENTS_MALFORMED));
out:
    kx_ruleset_destroy(rules);
    kx_decoder_set_destroy(dset);
    kx_config_destroy(cfg);
    kx_tz_cache_clear();
    free(rule_paths);
    free(dec_paths);
    return code;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: klaxon COMMAND [OPTIONS]\n"
               "\n"
               "klaxon watches security logs streaming through Kafka, matches them against\n"
               "Sigma rules and sends alerts to the team that must act.\n"
               "\n"
               "commands:\n"
               "  run -c CONFIG        the always-on daemon\n"
               "  replay --rules PATH  the same engine over files or stdin; alerts to stdout\n"
               "  rules lint PATH...   every problem of rule files, as FILE:LINE:COL\n"
               "  rules list PATH...   the rules as a table, Markdown or JSON\n"
               "  rules test PATH...   run the rules' tests (RULE.tests.yml)\n"
               "  rules explain RULE   why a rule does or does not match events\n"
               "  decoders test [PATH] check the decoders' sample lines\n"
               "  config check FILE    check a configuration without starting\n"
               "  route -c CONFIG [F]  which routes and sinks alerts reach\n"
               "  alerts list|dead|retry  the alert spool and dead letters\n"
               "  version              print the version\n"
               "\n"
               "`klaxon COMMAND --help` describes each command.\n");
}

int kx_cli_main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("klaxon %s\n", KLAXON_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "replay"))
        return cmd_replay(argc - 1, argv + 1);
    if (!strcmp(cmd, "rules"))
        return kx__cli_rules(argc - 1, argv + 1);
    if (!strcmp(cmd, "alerts"))
        return kx__cli_alerts(argc - 1, argv + 1);
    if (!strcmp(cmd, "decoders"))
        return kx__cli_decoders(argc - 1, argv + 1);
    if (!strcmp(cmd, "config"))
        return kx__cli_config(argc - 1, argv + 1);
    if (!strcmp(cmd, "route"))
        return kx__cli_route(argc - 1, argv + 1);
    fprintf(stderr, "klaxon: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
