/*
 * fuzz_json: the JSON decoder through kx_decode, as a Kafka message reaches it. The input is
 * one message. Two decoders see it: the defaults (event time from @timestamp, timestamp,
 * eventTime or time) and one naming a nested time field and a tenant field, so extracted
 * time and tenant lookups run on whatever the fuzzer nests.
 */
#include <stdlib.h>

#include "harness.h"

static kx_decoder *plain, *named;

static void cleanup(void)
{
    kx_decoder_destroy(plain);
    kx_decoder_destroy(named);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kx_log_set_level(KX_LOG_ERROR);
    plain = kx_fuzz_decoder("input: {format: json}\n", -1);
    named = kx_fuzz_decoder("input:\n"
                            "  format: json\n"
                            "  time_field: detail.when\n"
                            "  tenant_field: account\n"
                            "  logsource: {product: aws, service: cloudtrail}\n",
                            -1);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kx_decoder *ds[] = {plain, named};
    const char *why;
    kx_event ev;

    kx_event_init(&ev);
    for (size_t i = 0; i < 2; i++) {
        kx_event_reset(&ev);
        /* A fixed fallback time: the result must depend on the input only. */
        if (kx_decode(ds[i], (const char *)data, size, 1774748000000LL, &ev, &why) == 0)
            kx_fuzz_check_event(&ev);
        else if (!why || !why[0])
            abort(); /* a malformed event must say why (the caller logs it) */
    }
    kx_event_fini(&ev);
    return 0;
}
