/*
 * fuzz_config: the config loader. The input is one klaxon.yaml. When it loads, a decoder is
 * built for each input from the input's map and the shared `decode:` section (as the daemon
 * does at start), so the decoder's strict key checks, time zones, programs and extractor
 * patterns (compiled by PCRE2) are fuzzed too, and each decoder decodes a fixed line.
 *
 * Nothing that touches the outside is built: rule paths are not loaded (a fuzzed path could
 * walk the whole file system), and no Kafka client, store or alert sink is created.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "klaxon/config.h"
#include "klaxon/tz.h"

static kx_fuzz_file file;

static void cleanup(void)
{
    kx_fuzz_file_fini(&file);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kx_log_set_level(KX_LOG_ERROR);
    kx_fuzz_file_init(&file);
    atexit(cleanup);
    return 0;
}

static void decode_one(const kx_yaml_node *input, const kx_yaml_node *shared, const char *name)
{
    static const char syslog_line[] = "<38>Mar 29 03:30:00 web-1 sshd[4242]: Failed password for "
                                      "invalid user admin from 203.0.113.7 port 52113 ssh2";
    static const char json_line[] =
        "{\"eventTime\":\"2026-03-29T01:30:00Z\",\"program\":\"sshd\","
        "\"message\":\"Accepted publickey for alice from ::1 port 22\"}";
    kx_decoder *d = NULL;
    kx_err err = {0};
    const char *why;
    kx_event ev;

    if (kx_decoder_create(input, shared, -1, name, &d, &err) != 0)
        return;
    kx_event_init(&ev);
    if (kx_decoder_format(d) == KX_FMT_SYSLOG)
        kx_decode(d, syslog_line, strlen(syslog_line), 1774748000000LL, &ev, &why);
    else
        kx_decode(d, json_line, strlen(json_line), 1774748000000LL, &ev, &why);
    kx_fuzz_check_event(&ev);
    kx_event_fini(&ev);
    kx_decoder_destroy(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kx_config *c = NULL;
    kx_err err = {0};
    char msg[1024];

    kx_fuzz_file_set(&file, data, size);
    if (kx_config_load(file.path, &c, &err) != 0) {
        kx_err_format(&err, msg, sizeof(msg));
        if (!msg[0])
            abort(); /* a refused file must say why */
        return 0;
    }
    for (size_t i = 0; i < c->ninputs; i++)
        decode_one(c->inputs[i], c->decode, c->file);
    if (c->ninputs == 0 && c->decode)
        decode_one(NULL, c->decode, c->file);
    kx_config_destroy(c);
    kx_tz_cache_clear();
    return 0;
}
