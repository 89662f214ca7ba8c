/*
 * The rules in force and their reloads, as an operator sees them (docs/config.md, "Rule reloads"):
 * when the set was loaded, whether the last reload (SIGHUP, or the rules watch) was taken or
 * refused and why, as metrics and as /healthz detail. cli.c does the reload itself (load to
 * the side, swap at a batch boundary) and reports each outcome here.
 */
#include <stdio.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "cli_int.h"

void kx__reload_init(kx__reload *st, double now)
{
    memset(st, 0, sizeof(*st));
    st->loaded_at = now;
    st->last_ok = true;
}

void kx__reload_refused(kx__reload *st, double now, const kx_err *err)
{
    st->tried_at = now;
    st->last_ok = false;
    st->refused++;
    kx_err_format(err, st->error, sizeof(st->error));
}

size_t kx__reload_taken(kx__reload *st, double now, kx_ruleset *rs, const kx_ruleset *old)
{
    st->tried_at = now;
    st->loaded_at = now;
    st->last_ok = true;
    st->ok++;
    st->error[0] = '\0';
    return kx_ruleset_carry_counters(rs, old);
}

int kx__reload_render_metrics(const kx__reload *st, size_t nrules, kx_buf *out)
{
    return kx_buf_printf(
        out,
        "# HELP klaxon_rules_loaded Rules in force.\n"
        "# TYPE klaxon_rules_loaded gauge\nklaxon_rules_loaded %zu\n"
        "# HELP klaxon_rules_loaded_timestamp_seconds When the rules in force were loaded.\n"
        "# TYPE klaxon_rules_loaded_timestamp_seconds gauge\n"
        "klaxon_rules_loaded_timestamp_seconds %.3f\n"
        "# HELP klaxon_rules_reloads_total Rule reloads (SIGHUP or the rules watch) by result: "
        "ok (swapped in) or refused (an error; the rules in force stay).\n"
        "# TYPE klaxon_rules_reloads_total counter\n"
        "klaxon_rules_reloads_total{result=\"ok\"} %llu\n"
        "klaxon_rules_reloads_total{result=\"refused\"} %llu\n"
        "# HELP klaxon_rules_last_reload_success 1 when the last reload was taken (or none was "
        "tried), 0 when it was refused.\n"
        "# TYPE klaxon_rules_last_reload_success gauge\nklaxon_rules_last_reload_success %d\n"
        "# HELP klaxon_rules_last_reload_timestamp_seconds When the last reload was tried (0: "
        "none yet).\n"
        "# TYPE klaxon_rules_last_reload_timestamp_seconds gauge\n"
        "klaxon_rules_last_reload_timestamp_seconds %.3f\n",
        nrules, st->loaded_at, (unsigned long long)st->ok, (unsigned long long)st->refused,
        st->last_ok ? 1 : 0, st->tried_at);
}

void kx__reload_health_detail(const kx__reload *st, size_t nrules, kx_buf *out)
{
    char at[40];
    kx_time_format((int64_t)(st->loaded_at * 1000), at, sizeof(at));
    kx_buf_printf(out, "rules: %zu in force, loaded %s", nrules, at);
    if (st->tried_at > 0) {
        kx_time_format((int64_t)(st->tried_at * 1000), at, sizeof(at));
        if (st->last_ok)
            kx_buf_printf(out, "; last reload taken %s", at);
        else
            kx_buf_printf(out, "; last reload REFUSED %s: %s", at, st->error);
    }
    kx_buf_putc(out, '\n');
}
