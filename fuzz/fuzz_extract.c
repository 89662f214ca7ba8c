/*
 * fuzz_extract: field extractors (PCRE2 named groups) with a fixed config, on a fuzzed line.
 * The extractors are the sample config's sshd and sudo ones plus a few that reach the other
 * paths: no program scope, a field made by an earlier extractor, a (*UTF) pattern (invalid
 * UTF-8 must skip, not fail), and extracted fields feeding time_field and tenant_field.
 *
 * A line whose first non-blank byte is '{' goes through the JSON decoder, anything else
 * through syslog: JSON lets the fuzzer set `program` and repeat the extracted field (array
 * elements), syslog is how these lines really arrive.
 */
#include <stdlib.h>

#include "harness.h"

/* Single-quoted YAML: backslashes reach PCRE2 as written, '' is one quote. */
#define EXTRACTORS                                                                                 \
    "decode:\n"                                                                                    \
    "  programs:\n"                                                                                \
    "    sshd: {product: linux, service: sshd}\n"                                                  \
    "    sudo: {product: linux, service: sudo}\n"                                                  \
    "  extractors:\n"                                                                              \
    "    - program: sshd\n"                                                                        \
    "      pattern: '^(?<outcome>Failed|Accepted) (?<auth_method>password|publickey|"              \
    "keyboard-interactive/pam) for (?:invalid user )?(?<user>\\S+) from "                          \
    "(?<src_ip>[0-9A-Fa-f:.]+) port (?<src_port>\\d+)'\n"                                          \
    "    - program: sudo\n"                                                                        \
    "      field: message\n"                                                                       \
    "      pattern: '^\\s*(?<user>\\S+) : (?:TTY=(?<tty>\\S+) ; )?PWD=(?<pwd>.*?) ; "              \
    "USER=(?<target_user>\\S+) ; (?:ENV=.*? ; )?COMMAND=(?<command>.*)$'\n"                        \
    "    - pattern: '(?<when>\\d{4}-\\d\\d-\\d\\d[T ]\\d\\d:\\d\\d:\\d\\d(?:\\.\\d+)?"             \
    "(?:Z|[+-]\\d\\d:?\\d\\d)?)'\n"                                                                \
    "    - field: user\n"                                                                          \
    "      pattern: '^(?<account>[^@\\\\]+)[@\\\\](?<domain>.+)$'\n"                               \
    "    - program: kernel\n"                                                                      \
    "      pattern: '(*UTF)(?<iface>\\w+): link (?<link>up|down)(?: (?<speed>\\d+ ?[GM]bps))?'\n"  \
    "    - field: domain\n"                                                                        \
    "      pattern: '(?J)^(?<tenant>[a-z]+)\\.|^(?<tenant>[A-Z]+)$'\n"

static kx_decoder *sys, *json;

static void cleanup(void)
{
    kx_decoder_destroy(sys);
    kx_decoder_destroy(json);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kx_log_set_level(KX_LOG_ERROR);
    sys = kx_fuzz_decoder("input:\n"
                          "  syslog: {timezone: UTC, year: 2026}\n"
                          "  time_field: when\n"
                          "  tenant_field: tenant\n" EXTRACTORS,
                          KX_FMT_SYSLOG);
    json = kx_fuzz_decoder("input: {time_field: when, tenant_field: tenant}\n" EXTRACTORS,
                           KX_FMT_JSON);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t i = 0;
    const char *why;
    kx_event ev;

    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    kx_decoder *d = i < size && data[i] == '{' ? json : sys;
    kx_event_init(&ev);
    if (kx_decode(d, (const char *)data, size, 1774748000000LL, &ev, &why) == 0)
        kx_fuzz_check_event(&ev);
    else if (!why || !why[0])
        abort(); /* a malformed event must say why (the caller logs it) */
    kx_event_fini(&ev);
    return 0;
}
