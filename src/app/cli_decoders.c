/*
 * The decoder content every command uses (docs/sources.md), and `klaxon decoders test`.
 *
 * Which decoders: the paths given on the command line (--decoders), else the config's
 * `decoders` (`decoders: []` for none), else the shipped decoders/ tree -- the directory
 * this klaxon was built with (KX_DEFAULT_DECODERS), when it exists. A deployment names its
 * own (deploy/klaxon.yaml).
 *
 * `klaxon decoders test [PATH...]` decodes every sample line of every decoder as an RFC 3164
 * or RFC 5424 syslog line with the decoders loaded, and compares the fields it gave with the
 * sample's (each one named must be there with that value) and with the decoder's `fields`
 * (every field an extractor gave must be listed): what `klaxon rules test` is to rules.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_int.h"
#include "klaxon/decode.h"
#include "klaxon/event.h"
#include "klaxon/log.h"
#include "klaxon/tz.h"

#ifndef KX_DEFAULT_DECODERS
#define KX_DEFAULT_DECODERS "decoders"
#endif

const char *kx__default_decoders(void)
{
    struct stat st;
    return stat(KX_DEFAULT_DECODERS, &st) == 0 && S_ISDIR(st.st_mode) ? KX_DEFAULT_DECODERS : NULL;
}

int kx__decoders_load(const kx_config *cfg, const char *const *paths, size_t npaths, bool none,
                      kx_decoder_set **out)
{
    *out = NULL;
    if (none)
        return 0;
    const char *dflt = kx__default_decoders();
    if (!npaths && cfg && cfg->decoders_given) {
        paths = (const char *const *)cfg->decoder_paths;
        npaths = cfg->ndecoder_paths;
    } else if (!npaths && dflt) {
        paths = &dflt;
        npaths = 1;
    }
    if (!npaths)
        return 0;
    kx_err err = {0};
    if (kx_decoder_set_load(paths, npaths, out, &err)) {
        kx__cli_print_err(&err);
        return -EINVAL;
    }
    return 0;
}

/* ---- klaxon decoders test ---- */

static int usage_test(FILE *f)
{
    fprintf(f, "usage: klaxon decoders test [--quiet] [PATH...]\n"
               "\n"
               "Decodes every sample line of every decoder (the files under PATH, default the\n"
               "shipped decoders/) as syslog with all of them loaded, and checks the fields it\n"
               "gives: each field a sample names must be there with that value, and each field\n"
               "an extractor gives must be in the decoder's `fields`. Prints PASS or FAIL per\n"
               "sample (--quiet: failures only) and a summary.\n"
               "\n"
               "Exit 0 when every sample passes, 1 when one fails, 2 when the decoders do not\n"
               "load or on bad usage.\n");
    return f == stdout ? 0 : 2;
}

static bool listed(const kx_yaml_node *fields, const char *name)
{
    for (size_t i = 0; fields && i < fields->n; i++)
        if (fields->vals[i]->type == KX_YAML_SCALAR && !strcmp(fields->vals[i]->str, name))
            return true;
    return false;
}

/* Is name among the `fields` of a decoder of program prog (its own, or one that adds
 * extractors to it)? */
static bool listed_for(const kx_decoder_set *set, const kx_field *prog, const char *name)
{
    for (size_t i = 0; prog && i < kx_decoder_set_size(set); i++) {
        const kx_yaml_node *def = kx_decoder_set_at(set, i, NULL), *const * names;
        size_t n = kx_decoder_def_programs(def, &names);
        for (size_t k = 0; k < n; k++)
            if (!strcmp(names[k]->str, prog->value) && listed(kx_yaml_get(def, "fields"), name))
                return true;
    }
    return false;
}

/* The syslog header's own fields: every syslog event has them, no decoder lists them. */
static bool header_field(const char *name)
{
    static const char *const h[] = {"host",     "program",  "pid",     "msgid",
                                    "facility", "severity", "message", NULL};
    for (size_t i = 0; h[i]; i++)
        if (!strcmp(h[i], name) || !strncmp(name, "sd.", 3))
            return true;
    return false;
}

/* One sample: why it fails into why (empty: it passes). */
static void check_sample(kx_decoder *d, const kx_decoder_set *set, const kx_yaml_node *sample,
                         kx_event *ev, kx_buf *why)
{
    const kx_yaml_node *line = kx_yaml_get(sample, "line");
    const kx_yaml_node *want = kx_yaml_get(sample, "fields");
    const char *err = NULL;
    kx_event_reset(ev);
    if (kx_decode(d, line->str, line->len, kx_now_ms(), ev, &err)) {
        kx_buf_printf(why, "malformed: %s", err ? err : "?");
        return;
    }
    for (size_t i = 0; want && i < want->n; i++) {
        const char *name = want->keys[i]->str;
        const kx_field *f = kx_event_next(ev, name, NULL);
        const kx_yaml_node *v = want->vals[i];
        if (!f)
            kx_buf_printf(why, "%sfield %s missing (want \"%.*s\")", why->len ? "; " : "", name,
                          (int)v->len, v->str);
        else if (v->type != KX_YAML_SCALAR || f->value_len != v->len ||
                 memcmp(f->value, v->str, v->len))
            kx_buf_printf(why, "%sfield %s is \"%.*s\", want \"%.*s\"", why->len ? "; " : "", name,
                          (int)f->value_len, f->value, (int)v->len, v->str);
    }
    const kx_field *prog = kx_event_next(ev, "program", NULL);
    for (size_t i = 0; i < ev->nfields; i++) {
        const char *name = ev->fields[i].name;
        if (!header_field(name) && !listed_for(set, prog, name))
            kx_buf_printf(why, "%sfield %s is in no `fields` of the program's decoders",
                          why->len ? "; " : "", name);
    }
}

static int cmd_test(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    bool quiet = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        if (ch == 'q')
            quiet = true;
        else
            return usage_test(ch == 'h' ? stdout : stderr);
    }
    kx_decoder_set *set = NULL;
    if (optind == argc && !kx__default_decoders()) {
        fprintf(stderr, "klaxon: no decoders given and none shipped here\n");
        return 2;
    }
    if (kx__decoders_load(NULL, (const char *const *)argv + optind, (size_t)(argc - optind), false,
                          &set))
        return 2;
    static const char input_yaml[] = "format: syslog\n";
    kx_yaml_doc *input = NULL;
    kx_decoder *d = NULL;
    kx_err err = {0};
    int code = 2;
    if (kx_yaml_load_mem("decoders-test", input_yaml, strlen(input_yaml), &input, &err) ||
        kx_decoder_create_with(input->root, NULL, set, -1, NULL, &d, &err)) {
        kx__cli_print_err(&err);
        goto out;
    }
    kx_event ev;
    kx_event_init(&ev);
    kx_buf why;
    kx_buf_init(&why, 0);
    size_t passed = 0, failed = 0, without = 0;
    for (size_t i = 0; i < kx_decoder_set_size(set); i++) {
        const char *file;
        const kx_yaml_node *def = kx_decoder_set_at(set, i, &file);
        const kx_yaml_node *samples = kx_yaml_get(def, "samples");
        const kx_yaml_node *title = kx_yaml_get(def, "title");
        const kx_yaml_node *const *progs;
        kx_decoder_def_programs(def, &progs);
        without += !samples || !samples->n;
        for (size_t k = 0; samples && k < samples->n; k++) {
            kx_buf_reset(&why);
            check_sample(d, set, samples->vals[k], &ev, &why);
            bool ok = why.len == 0;
            ok ? passed++ : failed++;
            if (!ok || !quiet)
                printf("%s  %s:%d  %s sample %zu%s%.*s\n", ok ? "PASS" : "FAIL", file,
                       samples->vals[k]->line,
                       title && title->type == KX_YAML_SCALAR ? title->str : progs[0]->str, k + 1,
                       ok ? "" : "\n      ", ok ? 0 : (int)why.len, ok ? "" : why.data);
        }
    }
    printf("%zu passed, %zu failed; %zu decoders, %zu without samples\n", passed, failed,
           kx_decoder_set_size(set), without);
    code = failed ? 1 : 0;
    kx_buf_fini(&why);
    kx_event_fini(&ev);
out:
    kx_decoder_destroy(d);
    kx_yaml_free(input);
    kx_decoder_set_destroy(set);
    kx_tz_cache_clear();
    return code;
}

int kx__cli_decoders(int argc, char **argv)
{
    kx_log_set_level(KX_LOG_WARN);
    if (argc >= 2 && !strcmp(argv[1], "test"))
        return cmd_test(argc - 1, argv + 1);
    fprintf(argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? stdout : stderr,
            "usage: klaxon decoders test [PATH...]\n"
            "\n"
            "  test  decode every decoder's sample lines and check their fields\n");
    return argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? 0 : 2;
}
