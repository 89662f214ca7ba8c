/*
 * fuzz_syslog: the syslog decoder (RFC 5424 and RFC 3164) through kx_decode. The input is
 * one line. Two decoders see it, chosen for the time paths: UTC with a pinned year, and
 * Europe/Madrid with the year inferred from a reference a few seconds into a new year (the
 * RFC 3164 year rule then has to choose between two years, and local times fall on DST
 * transitions), with program -> logsource mapping on.
 */
#include <stdlib.h>

#include "harness.h"
#include "klaxon/tz.h"

static kx_decoder *utc, *madrid;

static void cleanup(void)
{
    kx_decoder_destroy(utc);
    kx_decoder_destroy(madrid);
    kx_tz_cache_clear();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kx_log_set_level(KX_LOG_ERROR);
    utc = kx_fuzz_decoder("input: {format: syslog, syslog: {timezone: UTC, year: 2026}}\n", -1);
    madrid = kx_fuzz_decoder("input:\n"
                             "  format: syslog\n"
                             "  syslog: {timezone: Europe/Madrid, year: auto}\n"
                             "decode:\n"
                             "  programs:\n"
                             "    sshd: {product: linux, service: sshd}\n"
                             "    sudo: {product: linux, service: sudo, category: process}\n",
                             -1);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 2026-03-29T01:30:00Z (the night Madrid springs forward) and 2027-01-01T00:00:30Z. */
    static const int64_t ref[] = {1774747800000LL, 1798761630000LL};
    kx_decoder *ds[] = {utc, madrid};
    const char *why;
    kx_event ev;

    kx_event_init(&ev);
    for (size_t i = 0; i < 2; i++) {
        kx_event_reset(&ev);
        if (kx_decode(ds[i], (const char *)data, size, ref[i], &ev, &why) == 0)
            kx_fuzz_check_event(&ev);
        else if (!why || !why[0])
            abort(); /* a malformed event must say why (the caller logs it) */
    }
    kx_event_fini(&ev);
    return 0;
}
