# decode stage: JSON flattening, syslog RFC 3164/5424, PCRE2 extractors, and the decoder's
# config, event time, tenant and logsource.
# test_json also runs decoded events through the rules (kx_detect): a hostile field must not
# keep the others from matching.
kx_unit_test(test_json kx_decode kx_detect)
kx_unit_test(test_syslog kx_decode)
kx_unit_test(test_extract kx_decode)
kx_unit_test(test_decoder kx_decode)
kx_unit_test(test_decoder_content kx_decode)
# test_decoder counts the malloc/calloc/realloc calls made from klaxon's own code (the static
# stage libraries) to prove that decoding allocates nothing in steady state.
target_link_options(test_decoder PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
                    -Wl,--wrap=realloc)
