# decode stage: JSON flattening, syslog RFC 3164/5424, PCRE2 extractors, and the decoder's
# config, event time, tenant and logsource.
kx_unit_test(test_json kx_decode)
kx_unit_test(test_syslog kx_decode)
kx_unit_test(test_extract kx_decode)
kx_unit_test(test_decoder kx_decode)
# test_decoder counts the malloc/calloc/realloc calls made from klaxon's own code (the static
# stage libraries) to prove that decoding allocates nothing in steady state.
target_link_options(test_decoder PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                    -Wl,--wrap=realloc)
