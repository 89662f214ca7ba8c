/*
 * decode: bytes -> kx_event. One kx_decoder per input (a Kafka topic, or a replay input),
 * configured from that input's YAML map plus the config's shared `decode:` section.
 *
 * Formats: JSON objects (a one-pass scanner; nested objects flattened with dots, arrays
 * repeated per element) and syslog (RFC 5424, and RFC 3164 whose missing year and zone are
 * inferred as docs/internals/decode.md describes). Field extractors (PCRE2 named groups on a
 * field, scoped by syslog program) then add fields. Each event gets event time (from the
 * log, the fallback otherwise), tenant and logsource.
 *
 * Ownership: kx_decoder_create returns a new decoder (caller destroys); it copies what it
 * needs from the YAML nodes. kx_decode fills the caller's event, whose strings point into
 * the event's arena or into raw (borrowed). kx_decode allocates nothing per event in steady
 * state (docs/internals/decode.md).
 */
#ifndef KLAXON_DECODE_H
#define KLAXON_DECODE_H

#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/event.h"
#include "klaxon/yaml.h"

typedef enum { KX_FMT_JSON = 0, KX_FMT_SYSLOG } kx_format;

typedef struct kx_decoder kx_decoder;

/*
 * input: the input's map (keys: format, tenant, tenant_field, time_field, logsource,
 *        syslog {timezone, year}), or NULL for defaults.
 * shared: the config's `decode:` map (keys: extractors, programs), or NULL.
 * format_override: -1 to take the format from input (default json), else a kx_format.
 * file: the config file's name, for errors.
 */
int kx_decoder_create(const kx_yaml_node *input, const kx_yaml_node *shared, int format_override,
                      const char *file, kx_decoder **out, kx_err *err);
void kx_decoder_destroy(kx_decoder *d);
/* Calls cb with each logsource d can give an event: the input's, and each syslog program's
 * (its fields over the input's). Strings borrowed for the call; NULL = not set. */
typedef void (*kx_logsource_cb)(const char *product, const char *service, const char *category,
                                void *ud);
void kx_decoder_logsources(const kx_decoder *d, kx_logsource_cb cb, void *ud);
kx_format kx_decoder_format(const kx_decoder *d);

/*
 * Decodes raw into ev (which the caller has reset). fallback_ms is the event time used when
 * the log carries none (Kafka timestamp; receive time for files); it is also the reference
 * for RFC 3164's missing year. ev->topic/partition/offset are left as the caller set them.
 * Returns 0, or -EINVAL for a malformed event with a short reason in *why (static string).
 * A decoded event may have had parts cut by a limit (ev->limits, event.h): kx_decode counts
 * and logs those (rate-limited, with the origin the caller set), the caller need not.
 */
int kx_decode(kx_decoder *d, const char *raw, size_t len, int64_t fallback_ms, kx_event *ev,
              const char **why);

/* Parses RFC 3339 / ISO 8601 timestamps ("2026-03-29T01:30:00Z", "...+02:00", fractions).
 * Returns 0 and ms since the epoch, or -EINVAL. */
int kx_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);
/* A time as an epoch number in text ("1741598405", "1741598405123", "1.7e9"): seconds when
 * |x| < 1e11, else milliseconds (time_field: epoch, and the rules' time-part modifiers).
 * 0, or -EINVAL. */
int kx_parse_epoch(const char *s, size_t len, int64_t *out_ms);

#endif
